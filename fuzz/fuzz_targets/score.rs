#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| seq2seq_fuzz::score(data));
