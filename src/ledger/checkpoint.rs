//! Signed checkpoints: at a fixed interval (and at shutdown) the writer signs the Merkle root
//! of every entry hash so far; each checkpoint is stored and also written to a directory so
//! copies can leave the machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::SharedClock;
/// How and where checkpoints are written (owned by the configuration, which carries it).
pub use crate::config::CheckpointSettings;
use crate::config::ConfigError;
use crate::store::{AuditStore, CheckpointRequest, StoreError, StoredCheckpoint};
use crate::tlog::NoteSigner;
use crate::tlog::note::pem_decode;

/// Default key name (checkpoint origin).
pub const DEFAULT_ORIGIN: &str = "logout-ledger";

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The copy could not be written.
    #[error("cannot write {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Loads the signing key (PKCS#8 PEM). The origin is `origin`, else the name in `FILE.pub`
/// beside the key (as `keygen` writes it), else [`DEFAULT_ORIGIN`].
pub fn load_signer(key_file: &Path, origin: Option<&str>) -> Result<NoteSigner, ConfigError> {
    let setting = "--signing-key-file";
    let pem = std::fs::read_to_string(key_file).map_err(|e| {
        ConfigError::new(setting, format!("cannot read {}: {e}", key_file.display()))
    })?;
    let der = pem_decode(&pem, "PRIVATE KEY")
        .map_err(|e| ConfigError::new(setting, format!("{}: {e}", key_file.display())))?;
    let name = match origin {
        Some(o) => o.to_owned(),
        None => {
            let public = PathBuf::from(format!("{}.pub", key_file.display()));
            std::fs::read_to_string(&public)
                .ok()
                .and_then(|t| t.trim().split('+').next().map(str::to_owned))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_ORIGIN.to_owned())
        }
    };
    NoteSigner::new(&name, &der)
        .map_err(|e| ConfigError::new(setting, format!("{}: {e}", key_file.display())))
}

/// The file name of a checkpoint copy.
pub fn file_name(tree_size: i64) -> String {
    format!("checkpoint-{tree_size:012}.txt")
}

fn write_copy(dir: &Path, c: &StoredCheckpoint) -> Result<(), CheckpointError> {
    let path = dir.join(file_name(c.tree_size));
    let tmp = dir.join(format!(".{}.tmp", file_name(c.tree_size)));
    let io = |source| CheckpointError::File {
        path: path.clone(),
        source,
    };
    private_dir(dir).map_err(io)?;
    private_file(&tmp, c.note.as_bytes()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Creates the copies' directory (and missing parents) owner-only (0700, whatever the umask).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Writes a copy readable by its owner only (0600, whatever the umask; a leftover temporary
/// file is narrowed too).
fn private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)
}

/// Writes one checkpoint now (stored, then copied to the directory).
pub async fn write_one(
    store: &AuditStore,
    settings: &CheckpointSettings,
    clock: &SharedClock,
) -> Result<StoredCheckpoint, CheckpointError> {
    let request = CheckpointRequest {
        signer: Arc::clone(&settings.signer),
        at: clock.now_millis(),
    };
    let stored = store.checkpoint(request).await?;
    if let Some(dir) = &settings.dir {
        write_copy(dir, &stored)?;
    }
    tracing::info!(tree_size = stored.tree_size, "checkpoint signed");
    Ok(stored)
}

/// Writes a checkpoint every interval, forever (aborted at shutdown).
pub async fn run_periodically(store: AuditStore, settings: CheckpointSettings, clock: SharedClock) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate: the first checkpoint comes one interval in
    loop {
        ticker.tick().await;
        if let Err(e) = write_one(&store, &settings, &clock).await {
            tracing::error!("checkpoint not written: {e}");
        }
    }
}

pub use crate::config::parse_interval;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("3600"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_interval("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("1w").is_err());
        assert!(parse_interval("soon").is_err());
    }
}
