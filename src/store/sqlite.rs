//! SQLite access: opening with durable settings, migrations, the writer's batch insert and
//! the chain reads; the filtered read queries are in `query`. Every value goes through a
//! bound parameter.

mod query;
mod scan;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, SqlStr, Sqlite, SqliteConnection};

use super::StoreError;
use super::chain::{COLUMNS, EventRow, GENESIS};
use super::entry::{Note, NoteKind, note_row};
use super::{ChainDigest, ChainRow, PurgePlan, StoredCheckpoint};
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
    let migrations = sql
        .into_iter()
        .map(|(v, d, s)| {
            Migration::new(
                v,
                Cow::Borrowed(d),
                MigrationType::Simple,
                SqlStr::from_static(s),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
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

/// Opens the writer's connection (creating and migrating the file) and a reader pool.
pub(super) async fn open(
    path: &Path,
    write_timeout: Duration,
) -> Result<(SqliteConnection, Reader), StoreError> {
    let mut conn = SqliteConnection::connect_with(
        &options(path)
            .create_if_missing(true)
            .busy_timeout(write_timeout),
    )
    .await?;
    migrator().run(&mut conn).await?;
    let reader = Reader::open_existing(path).await?;
    Ok((conn, reader))
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
        rows.iter().map(chain_row).collect()
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
        rows.iter().map(id_and_hash).collect()
    }

    /// Up to `limit` entry hashes (purged or stored) with id greater than `after`, in id order.
    pub(super) async fn entry_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        leaf_hashes(&mut conn, after + 1, i64::MAX, limit).await
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
                Ok(Some((id, hash32(id, row.try_get(1)?)?)))
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
                    root: hash32(tree_size, row.try_get(1)?)?,
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

fn chain_row(row: &SqliteRow) -> Result<ChainRow, StoreError> {
    let id: i64 = row.try_get("id")?;
    let event = EventRow {
        id,
        kind: row.try_get("kind")?,
        received_at: row.try_get("received_at")?,
        outcome: row.try_get("outcome")?,
        http_status: row.try_get("http_status")?,
        reason: row.try_get("reason")?,
        reason_detail: row.try_get("reason_detail")?,
        iss: row.try_get("iss")?,
        sub: row.try_get("sub")?,
        sid: row.try_get("sid")?,
        jti: row.try_get("jti")?,
        aud: row.try_get("aud")?,
        iat: row.try_get("iat")?,
        exp: row.try_get("exp")?,
        alg: row.try_get("alg")?,
        kid: row.try_get("kid")?,
        typ: row.try_get("typ")?,
        events: row.try_get("events")?,
        session_metadata: row.try_get("session_metadata")?,
        metadata_status: row.try_get("metadata_status")?,
        metadata_error: row.try_get("metadata_error")?,
        source_ip: row.try_get("source_ip")?,
        user_agent: row.try_get("user_agent")?,
        token_sha256: row.try_get("token_sha256")?,
        token: row.try_get("token")?,
        key_set_digest: row.try_get("key_set_digest")?,
        duplicate_of: row.try_get("duplicate_of")?,
        claims_verified: row.try_get("claims_verified")?,
        action: row.try_get("action")?,
        details: row.try_get("details")?,
    };
    // A hash of the wrong length is reported by the verifier, not refused here.
    let stored: Vec<u8> = row.try_get("entry_hash")?;
    Ok(ChainRow {
        row: event,
        entry_hash: stored,
    })
}

/// The last chained entry: its id and hash; on an empty store, the retention anchor's
/// predecessor, or `(0, GENESIS)`.
pub(super) async fn last_entry(conn: &mut SqliteConnection) -> Result<(i64, [u8; 32]), StoreError> {
    let last = sqlx::query("SELECT id, entry_hash FROM audit_events ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(row) = last {
        let id: i64 = row.try_get(0)?;
        return Ok((id, hash32(id, row.try_get(1)?)?));
    }
    let anchor =
        sqlx::query("SELECT first_id, prev_entry_hash FROM chain_anchor WHERE singleton = 1")
            .fetch_optional(&mut *conn)
            .await?;
    match anchor {
        Some(row) => {
            let first: i64 = row.try_get(0)?;
            Ok((first - 1, hash32(first, row.try_get(1)?)?))
        }
        None => Ok((0, GENESIS)),
    }
}

/// Entry hashes with ids in `from..=to`, purged ones included, in id order (at most `limit`).
pub(super) async fn leaf_hashes(
    conn: &mut SqliteConnection,
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
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(id_and_hash).collect()
}

/// Stores a signed checkpoint.
pub(super) async fn insert_checkpoint(
    tx: &mut SqliteConnection,
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
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Reads `(id, 32-byte hash)` from the first two columns.
fn id_and_hash(row: &SqliteRow) -> Result<(i64, [u8; 32]), StoreError> {
    let id: i64 = row.try_get(0)?;
    Ok((id, hash32(id, row.try_get(1)?)?))
}

fn hash32(id: i64, bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        id,
        message: "hash is not 32 bytes".into(),
    })
}

/// Inserts one chained row.
pub(super) async fn insert_row(
    tx: &mut SqliteConnection,
    r: &EventRow,
    entry_hash: &[u8; 32],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (id, kind, received_at, outcome, http_status, reason, reason_detail, \
         iss, sub, sid, jti, aud, iat, exp, alg, kid, typ, events, session_metadata, metadata_status, \
         metadata_error, source_ip, user_agent, token_sha256, token, key_set_digest, duplicate_of, \
         claims_verified, action, details, entry_hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(r.id)
    .bind(&r.kind)
    .bind(r.received_at)
    .bind(&r.outcome)
    .bind(r.http_status)
    .bind(&r.reason)
    .bind(&r.reason_detail)
    .bind(&r.iss)
    .bind(&r.sub)
    .bind(&r.sid)
    .bind(&r.jti)
    .bind(&r.aud)
    .bind(r.iat)
    .bind(r.exp)
    .bind(&r.alg)
    .bind(&r.kid)
    .bind(&r.typ)
    .bind(&r.events)
    .bind(&r.session_metadata)
    .bind(&r.metadata_status)
    .bind(&r.metadata_error)
    .bind(&r.source_ip)
    .bind(&r.user_agent)
    .bind(&r.token_sha256)
    .bind(&r.token)
    .bind(&r.key_set_digest)
    .bind(r.duplicate_of)
    .bind(r.claims_verified)
    .bind(&r.action)
    .bind(&r.details)
    .bind(&entry_hash[..])
    .execute(&mut *tx)
    .await?;
    Ok(())
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

/// Inserts chained rows with few statements (multi-row `INSERT`, power-of-two chunks).
pub(super) async fn insert_rows(
    tx: &mut SqliteConnection,
    rows: &[(EventRow, [u8; 32])],
) -> Result<(), StoreError> {
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
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// The accepted records holding any of these `(iss, jti)`, with their token hashes.
pub(super) async fn accepted_tokens(
    tx: &mut SqliteConnection,
    keys: &[(String, String)],
) -> Result<Vec<((String, String), (i64, [u8; 32]))>, StoreError> {
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
        for row in q.build().fetch_all(&mut *tx).await? {
            let id: i64 = row.try_get(2)?;
            out.push((
                (row.try_get(0)?, row.try_get(1)?),
                (id, hash32(id, row.try_get(3)?)?),
            ));
        }
    }
    Ok(out)
}

/// Remembers accepted `(iss, jti)` pairs for replay detection.
pub(super) async fn insert_accepted_many(
    tx: &mut SqliteConnection,
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
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Indexes valid metadata pairs: `(key, value, event id)`.
pub(super) async fn insert_pairs_many(
    tx: &mut SqliteConnection,
    pairs: &[(String, String, i64)],
) -> Result<(), StoreError> {
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
        q.build().execute(&mut *tx).await?;
    }
    Ok(())
}

/// Updates `last_seen` of an archived key set; false when the digest is new.
pub(super) async fn touch_key_set(
    tx: &mut SqliteConnection,
    digest: &[u8; 32],
    seen_at: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE key_sets SET last_seen = MAX(last_seen, ?) WHERE digest = ?")
        .bind(seen_at)
        .bind(&digest[..])
        .execute(&mut *tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The most recently first-seen key set of an issuer: digest and kids.
pub(super) async fn latest_key_set(
    tx: &mut SqliteConnection,
    issuer: &str,
) -> Result<Option<([u8; 32], Vec<String>)>, StoreError> {
    let row = sqlx::query("SELECT digest, kids FROM key_sets WHERE issuer = ? ORDER BY first_seen DESC, rowid DESC LIMIT 1")
        .bind(issuer)
        .fetch_optional(&mut *tx)
        .await?;
    match row {
        Some(row) => {
            let digest = hash32(0, row.try_get(0)?)?;
            let kids: String = row.try_get(1)?;
            let kids = serde_json::from_str(&kids).map_err(|e| StoreError::Corrupt {
                id: 0,
                message: format!("key set kids: {e}"),
            })?;
            Ok(Some((digest, kids)))
        }
        None => Ok(None),
    }
}

/// Archives a new key set.
pub(super) async fn insert_key_set(
    tx: &mut SqliteConnection,
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
        .execute(&mut *tx)
        .await?;
    Ok(())
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

/// Appends one row after whatever the chain ends with now, inside `tx` (which holds the write
/// lock: `BEGIN IMMEDIATE`). Returns its id.
pub(super) async fn append_after_last(
    tx: &mut SqliteConnection,
    note: &Note,
) -> Result<i64, StoreError> {
    let (last_id, last_hash) = last_entry(tx).await?;
    let row = note_row(last_id + 1, note);
    let hash = row.entry_hash(&last_hash, &mut Vec::new());
    insert_row(tx, &row, &hash).await?;
    Ok(row.id)
}

/// What a retention run would remove: the largest checkpointed prefix older than `before`.
pub(super) async fn purge_plan(
    conn: &mut SqliteConnection,
    before: i64,
) -> Result<PurgePlan, StoreError> {
    let first: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM audit_events")
        .fetch_one(&mut *conn)
        .await?;
    let newer: Option<i64> =
        sqlx::query_scalar("SELECT MIN(id) FROM audit_events WHERE received_at >= ?")
            .bind(before)
            .fetch_one(&mut *conn)
            .await?;
    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit_events")
        .fetch_one(&mut *conn)
        .await?;
    let older_through = match (newer, last) {
        (Some(n), _) => n - 1,
        (None, Some(l)) => l,
        (None, None) => 0,
    };
    let through: Option<i64> =
        sqlx::query_scalar("SELECT MAX(tree_size) FROM checkpoints WHERE tree_size <= ?")
            .bind(older_through)
            .fetch_one(&mut *conn)
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

/// Removes records `..=through` (a checkpoint boundary) in one transaction, keeping their entry
/// hashes and the anchor, and chains a retention record carrying the last removed hash.
pub(super) async fn purge_through(
    tx: &mut SqliteConnection,
    plan: PurgePlan,
    through: i64,
    before: i64,
    at: i64,
) -> Result<(i64, [u8; 32]), StoreError> {
    let anchor_row = sqlx::query("SELECT entry_hash FROM audit_events WHERE id = ?")
        .bind(through)
        .fetch_one(&mut *tx)
        .await?;
    let anchor = hash32(through, anchor_row.try_get(0)?)?;
    sqlx::query("INSERT INTO purge_window (singleton, up_to_id) VALUES (1, ?)")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT OR IGNORE INTO purged_hashes (id, entry_hash) SELECT id, entry_hash FROM audit_events WHERE id <= ?")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM metadata_pairs WHERE event_id <= ?")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM accepted_tokens WHERE event_id <= ?")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    let removed = sqlx::query("DELETE FROM audit_events WHERE id <= ?")
        .bind(through)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("INSERT OR REPLACE INTO chain_anchor (singleton, first_id, prev_entry_hash) VALUES (1, ?, ?)")
        .bind(through + 1)
        .bind(&anchor[..])
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM purge_window")
        .execute(&mut *tx)
        .await?;
    let note = Note {
        kind: NoteKind::System,
        action: "retention".into(),
        details: serde_json::json!({
            "before": crate::clock::format_millis(before),
            "removed_from": plan.first_id,
            "removed_through": through,
            "removed_records": removed,
            "anchor_entry_hash": crate::keys::jwks::hex(&anchor),
        }),
        at,
    };
    let id = append_after_last(tx, &note).await?;
    Ok((id, anchor))
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
