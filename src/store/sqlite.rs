//! SQLite access: opening with durable settings, migrations, the writer's batch insert and
//! the chain reads; the filtered read queries are in `query`. Every value goes through a
//! bound parameter.

mod query;
mod scan;
mod write;

pub(super) use write::{SqliteChain, Writer, on_own_thread};

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};

use super::backend::embedded_migrator;
use super::cells;
use super::chain::COLUMNS;
use super::{ChainDigest, ChainRow, StoreError, StoredCheckpoint};

/// The migrations, embedded in the binary so a fresh machine needs nothing else.
fn migrator() -> Migrator {
    let sql = [
        (
            1,
            "audit events",
            include_str!("../../migrations/sqlite/0001_audit_events.sql"),
        ),
        (
            2,
            "query indexes",
            include_str!("../../migrations/sqlite/0002_query_indexes.sql"),
        ),
        (
            3,
            "unverified records",
            include_str!("../../migrations/sqlite/0003_unverified_records.sql"),
        ),
    ];
    embedded_migrator(sql)
}

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

/// Creates (if missing) and migrates the store, opens the writer's handle and a reader pool,
/// and starts the checkpointer.
pub(super) async fn open(
    path: &Path,
    write_timeout: Duration,
) -> Result<(Writer, Reader), StoreError> {
    create_private(path)?;
    let mut conn = SqliteConnection::connect_with(
        &options(path)
            .create_if_missing(true)
            .busy_timeout(write_timeout),
    )
    .await?;
    migrator().run(&mut conn).await?;
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
#[derive(Debug, Clone)]
pub(super) struct Reader {
    pool: SqlitePool,
}

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

    /// Up to `limit` chained rows with id greater than `after`, in id order.
    pub(super) async fn chain_rows(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ChainRow>, StoreError> {
        let sql = format!(
            "SELECT {}, entry_hash FROM audit_events WHERE id > ? ORDER BY id LIMIT ?",
            COLUMNS.join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cells::chain_row).collect()
    }

    /// Up to `limit` purged entry hashes with id greater than `after`, in id order.
    pub(super) async fn purged_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_hash FROM purged_hashes WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cells::id_and_hash).collect()
    }

    /// Up to `limit` entry hashes (purged or stored) with id greater than `after`, in id order.
    pub(super) async fn entry_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_hash FROM purged_hashes WHERE id > ?1 \
             UNION ALL SELECT id, entry_hash FROM audit_events WHERE id > ?1 \
             ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cells::id_and_hash).collect()
    }

    /// Up to `limit` rows after `after`, each reduced to its id, stored entry hash and content
    /// digest (the entry hash still open for the previous hash): the verifier's fast path, read
    /// on a blocking thread through its own handle and hashed on every core (`scan`). A value of
    /// the wrong type is an `Err`.
    pub(super) async fn chain_digests(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Result<ChainDigest, (i64, String)>>, StoreError> {
        let path = self.pool.connect_options().get_filename().to_owned();
        scan::chain_digests_blocking(path, after, limit).await
    }

    /// The retention anchor: the first stored id and the hash before it.
    pub(super) async fn anchor(&self) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        let row =
            sqlx::query("SELECT first_id, prev_entry_hash FROM chain_anchor WHERE singleton = 1")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| cells::id_and_hash(&r)).transpose()
    }

    /// Every stored checkpoint, by tree size.
    pub(super) async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT tree_size, root_hash, note, created_at FROM checkpoints ORDER BY tree_size",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cells::checkpoint_row).collect()
    }

    /// Names of the append-only triggers present.
    pub(super) async fn guards(&self) -> Result<Vec<String>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(names)
    }

    /// An archived key set document by digest.
    pub(super) async fn key_set(
        &self,
        digest: &[u8],
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT issuer, jwks FROM key_sets WHERE digest = ?")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
            None => Ok(None),
        }
    }

    /// Whether a trivial query succeeds.
    pub(super) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1 FROM audit_events LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .is_ok()
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
