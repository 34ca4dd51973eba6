#![no_main]
//! Fuzz target validator: see docs/fuzzing.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| logout_ledger_fuzz::validator::check(data));
