//! Transparency-log primitives: RFC 6962 Merkle trees and C2SP signed checkpoints.
//!
//! - [`merkle`]: leaf and node hashing, tree heads, a streaming accumulator,
//!   and inclusion and consistency proofs (RFC 6962 / RFC 9162).
//! - [`note`]: C2SP signed notes and tlog checkpoints with Ed25519 keys, plus
//!   key generation and PEM helpers.

pub mod merkle;
pub mod note;

pub use merkle::{Accumulator, Hash, ProofError};
pub use note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
