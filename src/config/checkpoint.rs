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

/// Parses an interval such as `3600`, `90s`, `30m`, `1h` or `1d`.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 3600, 90s, 30m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h, d)")),
    };
    if secs == 0 {
        return Err("the interval must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}
