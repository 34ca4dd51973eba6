//! Proving the audit trail: chain verification (and, with checkpoints, Merkle proofs and
//! retention) over the store's append-only sequence.

pub mod verify;
