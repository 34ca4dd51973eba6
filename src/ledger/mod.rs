//! Proving the audit trail: signed checkpoints, chain and Merkle verification, inclusion
//! proofs and retention over the store's append-only sequence.

pub mod checkpoint;
pub mod prove;
pub mod verify;
