//! Fuzz-target bodies for logout-ledger, one module per target, plus the fixed keys and the
//! seed corpus they share. The `fuzz_targets/` binaries only call `MODULE::check`, so the same
//! checks also run under `cargo test` (every committed corpus file) without libFuzzer.

pub mod checkpoint;
pub mod fixtures;
pub mod form;
pub mod jwks;
pub mod proof;
pub mod seeds;
pub mod validator;
