#![no_main]
//! Fuzz target proof: see docs/fuzzing.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| logout_ledger_fuzz::proof::check(data));
