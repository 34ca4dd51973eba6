#![no_main]
//! Fuzz target jwks: see docs/fuzzing.md.

libfuzzer_sys::fuzz_target!(|data: &[u8]| logout_ledger_fuzz::jwks::check(data));
