#![no_main]
//! Fuzz target form: see docs/fuzzing.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| logout_ledger_fuzz::form::check(data));
