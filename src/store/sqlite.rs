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

use super::filter::{EventFilter, Order};
use super::record::{SELECT_COLUMNS, StoredRecord};
use super::{Committed, NewRecord, Outcome, StoreError, resolve};

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

/// The next sequence number: one past the largest id.
pub(super) async fn next_id(conn: &mut SqliteConnection) -> Result<i64, StoreError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit_events")
        .fetch_one(&mut *conn)
        .await?;
    Ok(max.unwrap_or(0) + 1)
}

/// Writes one batch in one transaction; ids are assigned from `next_id` in arrival order.
pub(super) async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &[&NewRecord],
    mut next_id: i64,
) -> Result<Vec<Committed>, StoreError> {
    let mut tx = conn.begin().await?;
    let mut out = Vec::with_capacity(batch.len());
    for record in batch {
        let existing = match (&record.facts.iss, &record.facts.jti) {
            (Some(iss), Some(jti)) if record.token_sha256.is_some() => {
                let row = sqlx::query(
                    "SELECT event_id, token_sha256 FROM accepted_tokens WHERE iss = ? AND jti = ?",
                )
                .bind(iss)
                .bind(jti)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some(row) => {
                        let id: i64 = row.try_get(0)?;
                        let hash: Vec<u8> = row.try_get(1)?;
                        let hash: [u8; 32] = hash.try_into().map_err(|_| StoreError::Corrupt {
                            id,
                            message: "accepted token hash is not 32 bytes".into(),
                        })?;
                        Some((id, hash))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let (outcome, rejection, duplicate_of) = resolve(record, existing);
        let id = next_id;
        next_id += 1;
        let committed = Committed {
            id,
            outcome,
            rejection,
            duplicate_of,
        };
        insert_event(&mut tx, id, record, &committed).await?;
        if outcome == Outcome::Accepted {
            sqlx::query("INSERT INTO accepted_tokens (iss, jti, token_sha256, event_id) VALUES (?, ?, ?, ?)")
                .bind(&record.facts.iss)
                .bind(&record.facts.jti)
                .bind(record.token_sha256.map(|h| h.to_vec()))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(meta) = &record.facts.metadata {
            for (key, value) in &meta.pairs {
                sqlx::query(
                    "INSERT OR IGNORE INTO metadata_pairs (key, value, event_id) VALUES (?, ?, ?)",
                )
                .bind(key)
                .bind(value)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        out.push(committed);
    }
    tx.commit().await?;
    Ok(out)
}

async fn insert_event(
    tx: &mut SqliteConnection,
    id: i64,
    r: &NewRecord,
    c: &Committed,
) -> Result<(), StoreError> {
    let f = &r.facts;
    let accepted = c.outcome == Outcome::Accepted;
    let verified = c.outcome != Outcome::Rejected;
    let aud = f
        .aud
        .as_ref()
        .map(|a| serde_json::Value::from(a.clone()).to_string());
    let meta = f.metadata.as_ref();
    sqlx::query(
        "INSERT INTO audit_events (id, kind, received_at, outcome, http_status, reason, reason_detail, \
         iss, sub, sid, jti, aud, iat, exp, alg, kid, typ, events, session_metadata, metadata_status, \
         metadata_error, source_ip, user_agent, token_sha256, token, key_set_digest, duplicate_of, claims_verified) \
         VALUES (?, 'logout', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(r.received_at)
    .bind(c.outcome.code())
    .bind(i64::from(c.http_status()))
    .bind(c.rejection.as_ref().map(|x| x.reason.code()))
    .bind(c.rejection.as_ref().map(|x| x.detail.as_str()))
    .bind(&f.iss)
    .bind(&f.sub)
    .bind(&f.sid)
    .bind(&f.jti)
    .bind(aud)
    .bind(f.iat)
    .bind(f.exp)
    .bind(&f.alg)
    .bind(&f.kid)
    .bind(&f.typ)
    .bind(&f.events)
    .bind(meta.and_then(|m| m.stored_json.as_deref()))
    .bind(meta.map_or("absent", |m| m.status.code()))
    .bind(meta.and_then(|m| m.error.as_deref()))
    .bind(&r.source_ip)
    .bind(&r.user_agent)
    .bind(r.token_sha256.map(|h| h.to_vec()))
    .bind(if accepted { r.token.as_deref() } else { None })
    .bind(if verified { f.key_set_digest.map(|d| d.to_vec()) } else { None })
    .bind(c.duplicate_of)
    .bind(verified)
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
