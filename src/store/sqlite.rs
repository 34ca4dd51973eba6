//! SQLite access: opening with durable settings, migrations, the writer's batch insert and
//! the chain reads; the filtered read queries are in `query`. Every value goes through a
//! bound parameter.

mod query;
mod scan;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};

use super::backend::{
    AcceptedToken, ArchivedKeySet, ChainOps, WriteDb, embedded_migrator, parse_kids,
};
use super::cells::{self, hash32};
use super::chain::{COLUMNS, EventRow, GENESIS};
use super::{ChainDigest, ChainRow, PurgePlan, StoreError, StoredCheckpoint};
use crate::keys::FetchedKeySet;

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

/// The writer's one connection: `BEGIN IMMEDIATE` takes SQLite's write lock, which is the
/// chain lock (every other writer, in this process or another, waits for it).
#[derive(Debug)]
pub(super) struct Writer(SqliteConnection);

impl WriteDb for Writer {
    type Conn = SqliteConnection;
    type Db = Sqlite;

    async fn begin(&mut self) -> Result<sqlx::Transaction<'_, Sqlite>, StoreError> {
        Ok(self.0.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// The writer's page cache, in KiB (negative: a size, not a page count): the random-key index
/// pages a batch touches (sub, sid, jti, metadata pairs) stay in memory instead of being read
/// back through the kernel on every insert.
const WRITER_CACHE_KIB: &str = "-32768";
/// WAL pages after which the writer's own commit checkpoints: only a backstop, since the
/// checkpointer keeps the WAL far shorter off the writer's path.
const WAL_AUTOCHECKPOINT_PAGES: &str = "16384";
/// How often the checkpointer copies committed WAL frames into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Opens the writer's connection (creating and migrating the file) and a reader pool, and
/// starts the checkpointer.
pub(super) async fn open(
    path: &Path,
    write_timeout: Duration,
) -> Result<(Writer, Reader), StoreError> {
    let mut conn = SqliteConnection::connect_with(
        &options(path)
            .create_if_missing(true)
            .busy_timeout(write_timeout)
            .pragma("cache_size", WRITER_CACHE_KIB)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES),
    )
    .await?;
    migrator().run(&mut conn).await?;
    let reader = Reader::open_existing(path).await?;
    tokio::spawn(checkpointer(reader.pool.clone()));
    Ok((Writer(conn), reader))
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
        let mut conn = self.pool.acquire().await?;
        conn.leaf_hashes(after + 1, i64::MAX, limit).await
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
        match row {
            Some(row) => {
                let id: i64 = row.try_get(0)?;
                Ok(Some((id, hash32(id, row.try_get::<&[u8], _>(1)?)?)))
            }
            None => Ok(None),
        }
    }

    /// Every stored checkpoint, by tree size.
    pub(super) async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT tree_size, root_hash, note, created_at FROM checkpoints ORDER BY tree_size",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let tree_size: i64 = row.try_get(0)?;
                Ok(StoredCheckpoint {
                    tree_size,
                    root: hash32(tree_size, row.try_get::<&[u8], _>(1)?)?,
                    note: row.try_get(2)?,
                    created_at: row.try_get(3)?,
                })
            })
            .collect()
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

/// Splits `n` items into power-of-two chunks no larger than `max`, so a handful of statement
/// texts cover every batch size and stay in the prepared-statement cache.
pub(super) fn chunks(mut n: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut size = max.next_power_of_two();
    while n > 0 {
        while size > n {
            size /= 2;
        }
        out.push(size);
        n -= size;
    }
    out
}

/// Opens a single write connection on an existing store (CLI writers: retention, access).
/// The store must have been created (and migrated) by the service.
pub(super) async fn open_writer(path: &Path) -> Result<SqliteConnection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Database(sqlx::Error::Configuration(
            format!("no store at {}", path.display()).into(),
        )));
    }
    let conn = SqliteConnection::connect_with(&options(path).busy_timeout(Duration::from_secs(10)))
        .await?;
    Ok(conn)
}

impl ChainOps for SqliteConnection {
    /// The last chained entry: its id and hash; on an empty store, the retention anchor's
    /// predecessor, or `(0, GENESIS)`.
    async fn last_entry(&mut self) -> Result<(i64, [u8; 32]), StoreError> {
        let last = sqlx::query("SELECT id, entry_hash FROM audit_events ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *self)
            .await?;
        if let Some(row) = last {
            let id: i64 = row.try_get(0)?;
            return Ok((id, hash32(id, row.try_get::<&[u8], _>(1)?)?));
        }
        let anchor =
            sqlx::query("SELECT first_id, prev_entry_hash FROM chain_anchor WHERE singleton = 1")
                .fetch_optional(&mut *self)
                .await?;
        match anchor {
            Some(row) => {
                let first: i64 = row.try_get(0)?;
                Ok((first - 1, hash32(first, row.try_get::<&[u8], _>(1)?)?))
            }
            None => Ok((0, GENESIS)),
        }
    }

    /// Entry hashes with ids in `from..=to`, purged ones included, in id order (at most `limit`).
    async fn leaf_hashes(
        &mut self,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_hash FROM purged_hashes WHERE id BETWEEN ?1 AND ?2 \
         UNION ALL SELECT id, entry_hash FROM audit_events WHERE id BETWEEN ?1 AND ?2 \
         ORDER BY id LIMIT ?3",
        )
        .bind(from)
        .bind(to)
        .bind(i64::from(limit))
        .fetch_all(&mut *self)
        .await?;
        rows.iter().map(cells::id_and_hash).collect()
    }

    /// The accepted records holding any of these `(iss, jti)`, with their token hashes.
    async fn accepted_tokens(
        &mut self,
        keys: &[(String, String)],
    ) -> Result<Vec<AcceptedToken>, StoreError> {
        let mut out = Vec::new();
        let mut rest = keys;
        for n in chunks(keys.len(), 64) {
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT iss, jti, event_id, token_sha256 FROM accepted_tokens WHERE (iss, jti) IN (VALUES ",
            );
            let mut sep = q.separated(", ");
            for (iss, jti) in chunk {
                sep.push("(")
                    .push_bind_unseparated(iss.clone())
                    .push_unseparated(", ")
                    .push_bind_unseparated(jti.clone())
                    .push_unseparated(")");
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *self).await? {
                let id: i64 = row.try_get(2)?;
                out.push((
                    (row.try_get(0)?, row.try_get(1)?),
                    (id, hash32(id, row.try_get::<&[u8], _>(3)?)?),
                ));
            }
        }
        Ok(out)
    }

    /// Inserts chained rows with few statements (multi-row `INSERT`, power-of-two chunks).
    async fn insert_rows(&mut self, rows: &[(EventRow, [u8; 32])]) -> Result<(), StoreError> {
        let mut rest = rows;
        for n in chunks(rows.len(), 32) {
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO audit_events ({}, entry_hash) ",
                COLUMNS.join(", ")
            ));
            q.push_values(chunk, |mut b, (r, hash)| {
                b.push_bind(r.id)
                    .push_bind(r.kind.clone())
                    .push_bind(r.received_at)
                    .push_bind(r.outcome.clone())
                    .push_bind(r.http_status)
                    .push_bind(r.reason.clone())
                    .push_bind(r.reason_detail.clone())
                    .push_bind(r.iss.clone())
                    .push_bind(r.sub.clone())
                    .push_bind(r.sid.clone())
                    .push_bind(r.jti.clone())
                    .push_bind(r.aud.clone())
                    .push_bind(r.iat)
                    .push_bind(r.exp)
                    .push_bind(r.alg.clone())
                    .push_bind(r.kid.clone())
                    .push_bind(r.typ.clone())
                    .push_bind(r.events.clone())
                    .push_bind(r.session_metadata.clone())
                    .push_bind(r.metadata_status.clone())
                    .push_bind(r.metadata_error.clone())
                    .push_bind(r.source_ip.clone())
                    .push_bind(r.user_agent.clone())
                    .push_bind(r.token_sha256.clone())
                    .push_bind(r.token.clone())
                    .push_bind(r.key_set_digest.clone())
                    .push_bind(r.duplicate_of)
                    .push_bind(r.claims_verified)
                    .push_bind(r.action.clone())
                    .push_bind(r.details.clone())
                    .push_bind(hash.to_vec());
            });
            q.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    /// Remembers accepted `(iss, jti)` pairs for replay detection.
    async fn insert_accepted(
        &mut self,
        accepted: &[(String, String, [u8; 32], i64)],
    ) -> Result<(), StoreError> {
        let mut rest = accepted;
        for n in chunks(accepted.len(), 64) {
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO accepted_tokens (iss, jti, token_sha256, event_id) ",
            );
            q.push_values(chunk, |mut b, (iss, jti, sha, id)| {
                b.push_bind(iss.clone())
                    .push_bind(jti.clone())
                    .push_bind(sha.to_vec())
                    .push_bind(*id);
            });
            q.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    /// Indexes valid metadata pairs: `(key, value, event id)`.
    async fn insert_pairs(&mut self, pairs: &[(String, String, i64)]) -> Result<(), StoreError> {
        let mut rest = pairs;
        for n in chunks(pairs.len(), 128) {
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO metadata_pairs (key, value, event_id) ",
            );
            q.push_values(chunk, |mut b, (k, v, id)| {
                b.push_bind(k.clone()).push_bind(v.clone()).push_bind(*id);
            });
            q.build().execute(&mut *self).await?;
        }
        Ok(())
    }

    /// Stores a signed checkpoint.
    async fn insert_checkpoint(
        &mut self,
        size: i64,
        root: &[u8; 32],
        note: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (tree_size, root_hash, note, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(size)
        .bind(&root[..])
        .bind(note)
        .bind(at)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    /// Updates `last_seen` of an archived key set; false when the digest is new.
    async fn touch_key_set(&mut self, digest: &[u8; 32], seen_at: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE key_sets SET last_seen = MAX(last_seen, ?) WHERE digest = ?")
                .bind(seen_at)
                .bind(&digest[..])
                .execute(&mut *self)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The most recently first-seen key set of an issuer: digest and kids.
    async fn latest_key_set(&mut self, issuer: &str) -> Result<Option<ArchivedKeySet>, StoreError> {
        let row = sqlx::query("SELECT digest, kids FROM key_sets WHERE issuer = ? ORDER BY first_seen DESC, rowid DESC LIMIT 1")
        .bind(issuer)
        .fetch_optional(&mut *self)
        .await?;
        match row {
            Some(row) => {
                let digest = hash32(0, row.try_get::<&[u8], _>(0)?)?;
                let kids: String = row.try_get(1)?;
                let kids = parse_kids(&kids)?;
                Ok(Some((digest, kids)))
            }
            None => Ok(None),
        }
    }

    /// Archives a new key set.
    async fn insert_key_set(
        &mut self,
        set: &FetchedKeySet,
        seen_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO key_sets (digest, issuer, jwks, kids, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(&set.digest[..])
        .bind(&set.issuer)
        .bind(&set.document)
        .bind(serde_json::Value::from(set.kids.clone()).to_string())
        .bind(seen_at)
        .bind(seen_at)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    /// What a retention run would remove: the largest checkpointed prefix older than `before`.
    async fn purge_plan(&mut self, before: i64) -> Result<PurgePlan, StoreError> {
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM audit_events")
            .fetch_one(&mut *self)
            .await?;
        let newer: Option<i64> =
            sqlx::query_scalar("SELECT MIN(id) FROM audit_events WHERE received_at >= ?")
                .bind(before)
                .fetch_one(&mut *self)
                .await?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit_events")
            .fetch_one(&mut *self)
            .await?;
        let older_through = match (newer, last) {
            (Some(n), _) => n - 1,
            (None, Some(l)) => l,
            (None, None) => 0,
        };
        let through: Option<i64> =
            sqlx::query_scalar("SELECT MAX(tree_size) FROM checkpoints WHERE tree_size <= ?")
                .bind(older_through)
                .fetch_one(&mut *self)
                .await?;
        let first = first.unwrap_or(1);
        let through = through.filter(|t| *t >= first);
        let count = through.map_or(0, |t| t - first + 1);
        Ok(PurgePlan {
            first_id: first,
            through,
            records: count,
        })
    }

    async fn remove_through(&mut self, through: i64) -> Result<([u8; 32], u64), StoreError> {
        let anchor_row = sqlx::query("SELECT entry_hash FROM audit_events WHERE id = ?")
            .bind(through)
            .fetch_one(&mut *self)
            .await?;
        let anchor = hash32(through, anchor_row.try_get::<&[u8], _>(0)?)?;
        sqlx::query("INSERT INTO purge_window (singleton, up_to_id) VALUES (1, ?)")
            .bind(through)
            .execute(&mut *self)
            .await?;
        sqlx::query("INSERT OR IGNORE INTO purged_hashes (id, entry_hash) SELECT id, entry_hash FROM audit_events WHERE id <= ?")
        .bind(through)
        .execute(&mut *self)
        .await?;
        sqlx::query("DELETE FROM metadata_pairs WHERE event_id <= ?")
            .bind(through)
            .execute(&mut *self)
            .await?;
        sqlx::query("DELETE FROM accepted_tokens WHERE event_id <= ?")
            .bind(through)
            .execute(&mut *self)
            .await?;
        let removed = sqlx::query("DELETE FROM audit_events WHERE id <= ?")
            .bind(through)
            .execute(&mut *self)
            .await?
            .rows_affected();
        sqlx::query("INSERT OR REPLACE INTO chain_anchor (singleton, first_id, prev_entry_hash) VALUES (1, ?, ?)")
        .bind(through + 1)
        .bind(&anchor[..])
        .execute(&mut *self)
        .await?;
        sqlx::query("DELETE FROM purge_window")
            .execute(&mut *self)
            .await?;
        Ok((anchor, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_covering_everything() {
        assert_eq!(chunks(0, 32), Vec::<usize>::new());
        assert_eq!(chunks(1, 32), vec![1]);
        assert_eq!(chunks(100, 32), vec![32, 32, 32, 4]);
        assert_eq!(chunks(45, 32), vec![32, 8, 4, 1]);
        assert!((1..600).all(|n| chunks(n, 64).iter().sum::<usize>() == n));
    }

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
