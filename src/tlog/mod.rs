//! Transparency-log primitives: RFC 6962 Merkle trees and C2SP signed checkpoints, and the
//! log's own public format (the canonical entry encoding and hash chain).
//!
//! - [`entry`]: one audit row in its canonical byte encoding and its entry hash
//!   (docs/audit-format.md); the store writes it, the verifier recomputes it.
//! - [`merkle`]: leaf and node hashing, tree heads, a streaming accumulator,
//!   and inclusion and consistency proofs (RFC 6962 / RFC 9162).
//! - [`note`]: C2SP signed notes and tlog checkpoints with Ed25519 keys, plus
//!   key generation and PEM helpers.

pub mod entry;
pub mod merkle;
pub mod note;

pub use merkle::{Accumulator, Hash, ProofError};
pub use note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
