//! Checkpoint settings: what the ledger needs to sign checkpoints, owned by the configuration
//! so that `Settings` can carry them without pointing up to the ledger.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::tlog::NoteSigner;

/// How and where checkpoints are written.
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// The Ed25519 signer; its name is the checkpoint origin.
    pub signer: Arc<NoteSigner>,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Directory receiving one file per checkpoint.
    pub dir: Option<PathBuf>,
}
