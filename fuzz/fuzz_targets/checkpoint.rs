#![no_main]
//! Fuzz target checkpoint: see docs/fuzzing.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| logout_ledger_fuzz::checkpoint::check(data));
