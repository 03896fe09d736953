//! cargo-fuzz target `manifest`: feeds libFuzzer's input to [`knetlab_fuzz::manifest`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knetlab_fuzz::manifest(data));
