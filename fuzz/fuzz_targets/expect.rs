//! cargo-fuzz target `expect`: feeds libFuzzer's input to [`knetlab_fuzz::expect`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knetlab_fuzz::expect(data));
