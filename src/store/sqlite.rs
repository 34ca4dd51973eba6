//! SQLite access: opening with durable settings, migrations, the writer's batch insert and
//! the read queries. Every value goes through a bound parameter.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, SqlStr, Sqlite, SqliteConnection};

use super::StoreError;
use super::chain::{EventRow, GENESIS};
use super::filter::{EventFilter, Order};
use super::record::{SELECT_COLUMNS, StoredRecord};
use super::writer::Head;
use crate::keys::FetchedKeySet;

/// The migrations, embedded in the binary so a fresh machine needs nothing else.
fn migrator() -> Migrator {
    let sql = [(
        1,
        "audit events",
        include_str!("../../migrations/sqlite/0001_audit_events.sql"),
    )];
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

    /// Whether a trivial query succeeds.
    pub(super) async fn ping(&self) -> bool {
        sqlx::query("SELECT 1 FROM audit_events LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .is_ok()
    }

    /// Runs a filtered, ordered, limited query.
    pub(super) async fn query(&self, f: &EventFilter) -> Result<Vec<StoredRecord>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {SELECT_COLUMNS} FROM audit_events e WHERE 1 = 1"
        ));
        if let Some(kind) = f.kind.code() {
            q.push(" AND e.kind = ").push_bind(kind);
        }
        let text = [
            ("iss", &f.iss),
            ("sub", &f.sub),
            ("sid", &f.sid),
            ("jti", &f.jti),
            ("reason", &f.reason),
        ];
        for (column, value) in text {
            if let Some(v) = value {
                q.push(format_args!(" AND e.{column} = "))
                    .push_bind(v.clone());
            }
        }
        if let Some(o) = f.outcome {
            q.push(" AND e.outcome = ").push_bind(o.code());
        }
        if let Some(since) = f.since {
            q.push(" AND e.received_at >= ").push_bind(since);
        }
        if let Some(until) = f.until {
            q.push(" AND e.received_at < ").push_bind(until);
        }
        for (key, value) in &f.meta {
            q.push(" AND e.id IN (SELECT event_id FROM metadata_pairs WHERE key = ")
                .push_bind(key.clone())
                .push(" AND value = ")
                .push_bind(value.clone())
                .push(")");
        }
        q.push(match f.order {
            Order::Desc => " ORDER BY e.id DESC",
            Order::Asc => " ORDER BY e.id ASC",
        });
        q.push(" LIMIT ").push_bind(i64::from(f.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(StoredRecord::from_row).collect()
    }
}

/// The chain head: one past the largest id and its entry hash (or the retention anchor, or
/// the genesis hash on an empty store).
pub(super) async fn chain_head(conn: &mut SqliteConnection) -> Result<Head, StoreError> {
    let last = sqlx::query("SELECT id, entry_hash FROM audit_events ORDER BY id DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    let (last_id, hash) = match last {
        Some(row) => (row.try_get::<i64, _>(0)?, row.try_get::<Vec<u8>, _>(1)?),
        None => {
            let anchor = sqlx::query(
                "SELECT first_id, prev_entry_hash FROM chain_anchor WHERE singleton = 1",
            )
            .fetch_optional(&mut *conn)
            .await?;
            match anchor {
                Some(row) => (row.try_get::<i64, _>(0)? - 1, row.try_get::<Vec<u8>, _>(1)?),
                None => (0, GENESIS.to_vec()),
            }
        }
    };
    let prev_hash = hash32(last_id, hash)?;
    Ok(Head {
        next_id: last_id + 1,
        prev_hash,
    })
}

fn hash32(id: i64, bytes: Vec<u8>) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        id,
        message: "hash is not 32 bytes".into(),
    })
}

/// The accepted record holding `(iss, jti)`, with its token hash.
pub(super) async fn accepted_token(
    tx: &mut SqliteConnection,
    iss: &str,
    jti: &str,
) -> Result<Option<(i64, [u8; 32])>, StoreError> {
    let row =
        sqlx::query("SELECT event_id, token_sha256 FROM accepted_tokens WHERE iss = ? AND jti = ?")
            .bind(iss)
            .bind(jti)
            .fetch_optional(&mut *tx)
            .await?;
    match row {
        Some(row) => {
            let id: i64 = row.try_get(0)?;
            Ok(Some((id, hash32(id, row.try_get(1)?)?)))
        }
        None => Ok(None),
    }
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

/// Remembers an accepted `(iss, jti)` for replay detection.
pub(super) async fn insert_accepted(
    tx: &mut SqliteConnection,
    iss: &str,
    jti: &str,
    sha: &[u8; 32],
    id: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO accepted_tokens (iss, jti, token_sha256, event_id) VALUES (?, ?, ?, ?)",
    )
    .bind(iss)
    .bind(jti)
    .bind(&sha[..])
    .bind(id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Indexes valid metadata pairs of record `id`.
pub(super) async fn insert_pairs(
    tx: &mut SqliteConnection,
    id: i64,
    pairs: &[(String, String)],
) -> Result<(), StoreError> {
    for (key, value) in pairs {
        sqlx::query("INSERT OR IGNORE INTO metadata_pairs (key, value, event_id) VALUES (?, ?, ?)")
            .bind(key)
            .bind(value)
            .bind(id)
            .execute(&mut *tx)
            .await?;
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
