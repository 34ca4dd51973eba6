//! SQLite access: opening with durable settings, migrations and the reader's pool; the write
//! path is in `write`, the reads SQLite does its own way in `query` (NDJSON) and `scan` (the
//! verifier). Every value goes through a bound parameter.

mod query;
mod scan;
mod write;

pub(super) use query::ndjson_page;
pub(super) use scan::chain_digests_blocking;
pub(super) use write::{SqliteChain, Writer, on_own_thread};

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, SqliteConnection};

use super::StoreError;
use super::backend::sqlite_migrator;
use super::read::SqlReader;

/// Extracts the file path from `sqlite://PATH` or `sqlite:PATH`.
pub(super) fn path_from_url(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
    let rest = rest.split('?').next().unwrap_or_default();
    if rest.is_empty() || rest == ":memory:" {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    Ok(PathBuf::from(rest))
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is fsync'd to the WAL before it returns, so an acknowledged record
        // survives a power loss, not only a process crash.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
}

/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// Creates the database file, if missing, readable by its owner only (0600, whatever the
/// umask): SQLite gives the `-wal` and `-shm` files it creates the main file's mode, so the
/// audit data never lands in a file others can read.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
    }
}

/// Warns when an existing store can be read by group or others (a store created by a version
/// before issue 10, or copied in): it holds raw tokens, subjects, metadata and client addresses.
/// A warning, not a refusal, so an upgrade never stops a running receiver; the operator's fix is
/// one `chmod`, named in the message.
fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "the store {} is open to group or others (mode {:03o}); it holds raw tokens, \
                 subjects, session metadata and client addresses: run `chmod 600 {0}*` \
                 (the -wal and -shm files take the database's mode)",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
}

/// Creates (if missing) and migrates the store, opens the writer's handle and a reader pool,
/// and starts the checkpointer.
pub(super) async fn open(
    path: &Path,
    write_timeout: Duration,
) -> Result<(Writer, Reader), StoreError> {
    create_private(path)?;
    warn_if_readable(path);
    let mut conn = SqliteConnection::connect_with(
        &options(path)
            .create_if_missing(true)
            .busy_timeout(write_timeout),
    )
    .await?;
    sqlite_migrator().run(&mut conn).await?;
    conn.close().await?;
    // The busy timeout is only part of the store timeout: a write lock held elsewhere fails the
    // batch (and marks the store down) while its requests still wait for their answer.
    let writer = Writer(SqliteChain::open(
        path,
        super::health::wait_budget(write_timeout),
    )?);
    let reader = Reader::open_existing(path).await?;
    tokio::spawn(checkpointer(reader.pool.clone()));
    Ok((writer, reader))
}

/// Copies committed WAL frames into the database file from a reader connection, so the
/// writer's commits (which acknowledge requests) never pay for a checkpoint. PASSIVE: it never
/// waits for, or blocks, the writer or readers. Runs as long as the runtime.
async fn checkpointer(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!("WAL checkpoint: {e}");
        }
    }
}

/// A small pool of connections for reads; WAL lets them run beside the writer.
pub(super) type Reader = SqlReader<Sqlite>;

impl Reader {
    /// Opens a reader on an existing, migrated store.
    pub(super) async fn open_existing(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!("no store at {}", path.display()).into(),
            )));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options(path).busy_timeout(Duration::from_secs(5)))
            .await?;
        Ok(Self { pool })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            path_from_url("sqlite://a/b.db").ok(),
            Some(PathBuf::from("a/b.db"))
        );
        assert_eq!(
            path_from_url("sqlite:///tmp/x.db?mode=rwc").ok(),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert!(path_from_url("postgres://x").is_err());
        assert!(path_from_url("sqlite::memory:").is_err());
    }
}
