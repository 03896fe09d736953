//! cargo-fuzz target `ingress`: feeds libFuzzer's input to [`knetlab_fuzz::ingress`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knetlab_fuzz::ingress(data));
