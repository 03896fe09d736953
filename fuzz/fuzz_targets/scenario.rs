//! cargo-fuzz target `scenario`: feeds libFuzzer's input to [`knetlab_fuzz::scenario`].

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knetlab_fuzz::scenario(data));
