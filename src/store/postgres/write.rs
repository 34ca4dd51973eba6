//! The PostgreSQL write path: the writer's pool, the chain lock, the CLI's locked transactions,
//! and the batch's statements (array-bound `INSERT ... SELECT FROM unnest(...)`, one statement
//! per table whatever the batch size).

use std::ops::RangeInclusive;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, PgConnection, Postgres, Row, Transaction};

use super::bounded;
use crate::keys::FetchedKeySet;
use crate::store::backend::{
    AcceptedSince, AcceptedToken, ArchivedKeySet, ChainOps, CheckpointRow, Leaves, WriteDb,
    older_through, parse_kids, purge_plan,
};
use crate::store::cells::{self, hash32};
use crate::store::deliveries::{DeliveryOp, Statements, Val};
use crate::store::layout::{Stored, stored};
use crate::store::replay::ReplayWindow;
use crate::store::{PurgePlan, StoreError};
use crate::tlog::entry::{COLUMNS, ColumnType, EventRow, GENESIS, LAYOUT};

/// The writer's pool: a batch takes one connection; a broken one is replaced on the next
/// batch, so the writer recovers by itself when the database comes back.
#[derive(Debug)]
pub(in crate::store) struct Writer {
    pub(super) pool: PgPool,
}

impl WriteDb for Writer {
    type Conn = PgConnection;
    type Tx<'a> = Transaction<'static, Postgres>;

    async fn begin(&mut self) -> Result<Transaction<'static, Postgres>, StoreError> {
        // One round trip: BEGIN and the lock go as one simple query.
        Ok(self.pool.begin_with(BEGIN_LOCKED).await?)
    }

    async fn commit<'a>(tx: Self::Tx<'a>) -> Result<(), StoreError> {
        Ok(tx.commit().await?)
    }
}

/// Begins a transaction and takes the chain lock in it.
const BEGIN_LOCKED: &str = "BEGIN; SELECT singleton FROM chain_lock FOR UPDATE";

/// A single connection for the CLI's writers (access records, retention).
pub(in crate::store) async fn open_writer(
    options: PgConnectOptions,
) -> Result<PgConnection, StoreError> {
    Ok(bounded(options, Duration::from_secs(60)).connect().await?)
}

/// Begins a transaction holding the chain lock (the CLI's writers).
pub(in crate::store) async fn begin_locked(
    conn: &mut PgConnection,
) -> Result<Transaction<'_, Postgres>, StoreError> {
    Ok(sqlx::Connection::begin_with(conn, BEGIN_LOCKED).await?)
}

/// One array-bound `INSERT ... SELECT FROM unnest(...)`: the same statement text for every
/// batch size, prepared once.
static INSERT_ROWS: LazyLock<String> = LazyLock::new(|| {
    let mut params = Vec::new();
    let mut select = Vec::new();
    for (i, (name, ty)) in LAYOUT.iter().enumerate() {
        let array = match (stored(name), ty) {
            (Stored::Flag, _) => "bool[]",
            (_, ColumnType::Int) => "int8[]",
            (_, ColumnType::Text) => "text[]",
            (_, ColumnType::Blob) => "bytea[]",
        };
        params.push(format!("${}::{array}", i + 1));
        select.push(match stored(name) {
            Stored::Time => format!("ll_ts({name})"),
            _ => (*name).to_owned(),
        });
    }
    params.push(format!("${}::bytea[]", LAYOUT.len() + 1));
    format!(
        "INSERT INTO audit_events ({cols}, entry_hash) SELECT {select}, entry_hash \
         FROM unnest({params}) AS t({cols}, entry_hash)",
        cols = COLUMNS.join(", "),
        select = select.join(", "),
        params = params.join(", "),
    )
});

/// [`INSERT_ROWS`] and the batch's metadata pairs in one statement.
static INSERT_ROWS_AND_PAIRS: LazyLock<String> = LazyLock::new(|| {
    let n = LAYOUT.len() + 1;
    format!(
        "WITH rows AS ({}) INSERT INTO metadata_pairs (key, value, event_id) \
         SELECT * FROM unnest(${}::text[], ${}::text[], ${}::int8[]) ON CONFLICT DO NOTHING",
        INSERT_ROWS.as_str(),
        n + 1,
        n + 2,
        n + 3
    )
});

/// A query being bound.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds the columns of `rows` as arrays, in the order of [`INSERT_ROWS`].
fn bind_rows<'q>(q: PgQuery<'q>, rows: &'q [(EventRow, [u8; 32])]) -> PgQuery<'q> {
    let ints = |f: fn(&EventRow) -> Option<i64>| rows.iter().map(|(r, _)| f(r)).collect();
    let texts = |f: for<'a> fn(&'a EventRow) -> Option<&'a str>| -> Vec<Option<&str>> {
        rows.iter().map(|(r, _)| f(r)).collect()
    };
    let blobs = |f: for<'a> fn(&'a EventRow) -> Option<&'a [u8]>| -> Vec<Option<&[u8]>> {
        rows.iter().map(|(r, _)| f(r)).collect()
    };
    q.bind(rows.iter().map(|(r, _)| r.id).collect::<Vec<i64>>())
        .bind(texts(|r| Some(r.kind.as_str())))
        .bind(
            rows.iter()
                .map(|(r, _)| r.received_at)
                .collect::<Vec<i64>>(),
        )
        .bind(texts(|r| r.outcome.as_deref()))
        .bind::<Vec<Option<i64>>>(ints(|r| r.http_status))
        .bind(texts(|r| r.reason.as_deref()))
        .bind(texts(|r| r.reason_detail.as_deref()))
        .bind(texts(|r| r.iss.as_deref()))
        .bind(texts(|r| r.sub.as_deref()))
        .bind(texts(|r| r.sid.as_deref()))
        .bind(texts(|r| r.jti.as_deref()))
        .bind(texts(|r| r.aud.as_deref()))
        .bind::<Vec<Option<i64>>>(ints(|r| r.iat))
        .bind::<Vec<Option<i64>>>(ints(|r| r.exp))
        .bind(texts(|r| r.alg.as_deref()))
        .bind(texts(|r| r.kid.as_deref()))
        .bind(texts(|r| r.typ.as_deref()))
        .bind(texts(|r| r.events.as_deref()))
        .bind(texts(|r| r.session_metadata.as_deref()))
        .bind(texts(|r| r.metadata_status.as_deref()))
        .bind(texts(|r| r.metadata_error.as_deref()))
        .bind(texts(|r| r.source_ip.as_deref()))
        .bind(texts(|r| r.user_agent.as_deref()))
        .bind(blobs(|r| r.token_sha256.as_deref()))
        .bind(texts(|r| r.token.as_deref()))
        .bind(blobs(|r| r.key_set_digest.as_deref()))
        .bind::<Vec<Option<i64>>>(ints(|r| r.duplicate_of))
        .bind(
            rows.iter()
                .map(|(r, _)| r.claims_verified)
                .collect::<Vec<Option<bool>>>(),
        )
        .bind(texts(|r| r.action.as_deref()))
        .bind(texts(|r| r.details.as_deref()))
        .bind(rows.iter().map(|(_, h)| &h[..]).collect::<Vec<&[u8]>>())
}

impl ChainOps for PgConnection {
    async fn last_entry(&mut self) -> Result<(i64, [u8; 32]), StoreError> {
        let last = sqlx::query("SELECT id, entry_hash FROM audit_events ORDER BY id DESC LIMIT 1")
            .fetch_optional(&mut *self)
            .await?;
        if let Some(row) = last {
            return cells::id_and_hash(&row);
        }
        let anchor = sqlx::query("SELECT first_id, prev_entry_hash FROM chain_anchor")
            .fetch_optional(&mut *self)
            .await?;
        match anchor {
            Some(row) => {
                let (first, hash) = cells::id_and_hash(&row)?;
                Ok((first - 1, hash))
            }
            None => Ok((0, GENESIS)),
        }
    }

    async fn leaves(&mut self, ids: RangeInclusive<i64>, limit: u32) -> Result<Leaves, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_hash FROM purged_hashes WHERE id BETWEEN $1 AND $2 \
             UNION ALL SELECT id, entry_hash FROM audit_events WHERE id BETWEEN $1 AND $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(ids.start())
        .bind(ids.end())
        .bind(i64::from(limit))
        .fetch_all(&mut *self)
        .await?;
        rows.iter().map(cells::id_and_hash).collect()
    }

    async fn accepted(&mut self, which: AcceptedSince) -> Result<Vec<AcceptedToken>, StoreError> {
        let query = match which {
            AcceptedSince::Ids(ids) => sqlx::query(
                "SELECT id, iss, jti, token_sha256, ll_ms(received_at) FROM audit_events \
                 WHERE id BETWEEN $1 AND $2 AND outcome = 'accepted' AND kind = 'logout' ORDER BY id",
            )
            .bind(*ids.start())
            .bind(*ids.end()),
            AcceptedSince::Within(span) => sqlx::query(
                "SELECT id, iss, jti, token_sha256, ll_ms(received_at) FROM audit_events \
                 WHERE received_at >= (SELECT max(received_at) FROM audit_events) \
                     - $1 * interval '1 millisecond' \
                 AND outcome = 'accepted' AND kind = 'logout' ORDER BY id",
            )
            .bind(span),
        };
        let rows = query.fetch_all(&mut *self).await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get(0)?;
                Ok(AcceptedToken {
                    id,
                    key: ReplayWindow::key(row.try_get(1)?, row.try_get(2)?),
                    token_sha256: hash32(id, row.try_get::<&[u8], _>(3)?)?,
                    received_at: row.try_get(4)?,
                })
            })
            .collect()
    }

    async fn insert_rows(&mut self, rows: &[(EventRow, [u8; 32])]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let q = sqlx::query(sqlx::AssertSqlSafe(INSERT_ROWS.as_str()));
        bind_rows(q, rows).execute(&mut *self).await?;
        Ok(())
    }

    async fn insert_batch(
        &mut self,
        rows: &[(EventRow, [u8; 32])],
        pairs: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return self.insert_rows(rows).await;
        }
        // One statement, one round trip inside the chain lock: the rows, then their pairs.
        let q = sqlx::query(sqlx::AssertSqlSafe(INSERT_ROWS_AND_PAIRS.as_str()));
        bind_rows(q, rows)
            .bind(pairs.iter().map(|p| p.0.as_str()).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.1.as_str()).collect::<Vec<_>>())
            .bind(pairs.iter().map(|p| p.2).collect::<Vec<_>>())
            .execute(&mut *self)
            .await?;
        Ok(())
    }

    async fn insert_checkpoint(&mut self, c: &CheckpointRow<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (tree_size, root_hash, note, created_at) \
             VALUES ($1, $2, $3, ll_ts($4))",
        )
        .bind(c.size)
        .bind(&c.root[..])
        .bind(c.note)
        .bind(c.at)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn touch_key_set(&mut self, digest: &[u8; 32], seen_at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE key_sets SET last_seen = greatest(last_seen, ll_ts($1)) WHERE digest = $2",
        )
        .bind(seen_at)
        .bind(&digest[..])
        .execute(&mut *self)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn latest_key_set(&mut self, issuer: &str) -> Result<Option<ArchivedKeySet>, StoreError> {
        let row = sqlx::query(
            "SELECT digest, kids FROM key_sets WHERE issuer = $1 \
             ORDER BY first_seen DESC, archived DESC LIMIT 1",
        )
        .bind(issuer)
        .fetch_optional(&mut *self)
        .await?;
        match row {
            Some(row) => Ok(Some((
                hash32(0, row.try_get::<&[u8], _>(0)?)?,
                parse_kids(row.try_get(1)?)?,
            ))),
            None => Ok(None),
        }
    }

    async fn insert_key_set(
        &mut self,
        set: &FetchedKeySet,
        seen_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO key_sets (digest, issuer, jwks, kids, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, ll_ts($5), ll_ts($5)) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(&set.digest[..])
        .bind(&set.issuer)
        .bind(&set.document)
        .bind(serde_json::Value::from(set.kids.clone()).to_string())
        .bind(seen_at)
        .execute(&mut *self)
        .await?;
        Ok(())
    }

    async fn deliveries(&mut self, ops: &[DeliveryOp]) -> Result<Vec<u64>, StoreError> {
        static SQL: LazyLock<Statements> = LazyLock::new(Statements::postgres);
        let mut changed = Vec::with_capacity(ops.len());
        for op in ops {
            let (sql, values) = SQL.plan(op);
            let mut q = sqlx::query(sql);
            for v in values {
                q = match v {
                    Val::Int(i) => q.bind(i),
                    Val::Text(t) => q.bind(t),
                    Val::NullInt => q.bind(None::<i64>),
                    Val::NullText => q.bind(None::<String>),
                };
            }
            changed.push(q.execute(&mut *self).await?.rows_affected());
        }
        Ok(changed)
    }

    async fn purge_plan(&mut self, before: i64) -> Result<PurgePlan, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT MIN(id) FROM audit_events), \
                    (SELECT MIN(id) FROM audit_events WHERE received_at >= ll_ts($1)), \
                    (SELECT MAX(id) FROM audit_events)",
        )
        .bind(before)
        .fetch_one(&mut *self)
        .await?;
        let (first, newer, last): (Option<i64>, Option<i64>, Option<i64>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let older_through = older_through(newer, last);
        let through: Option<i64> =
            sqlx::query_scalar("SELECT MAX(tree_size) FROM checkpoints WHERE tree_size <= $1")
                .bind(older_through)
                .fetch_one(&mut *self)
                .await?;
        Ok(purge_plan(first, through))
    }

    async fn remove_through(&mut self, through: i64) -> Result<([u8; 32], u64), StoreError> {
        let hash: Vec<u8> = sqlx::query_scalar("SELECT entry_hash FROM audit_events WHERE id = $1")
            .bind(through)
            .fetch_one(&mut *self)
            .await?;
        let anchor = hash32(through, &hash)?;
        sqlx::query("INSERT INTO purge_window (singleton, up_to_id) VALUES (true, $1)")
            .bind(through)
            .execute(&mut *self)
            .await?;
        sqlx::query(
            "INSERT INTO purged_hashes (id, entry_hash) SELECT id, entry_hash FROM audit_events \
             WHERE id <= $1 ON CONFLICT DO NOTHING",
        )
        .bind(through)
        .execute(&mut *self)
        .await?;
        sqlx::query("DELETE FROM metadata_pairs WHERE event_id <= $1")
            .bind(through)
            .execute(&mut *self)
            .await?;
        let removed = sqlx::query("DELETE FROM audit_events WHERE id <= $1")
            .bind(through)
            .execute(&mut *self)
            .await?
            .rows_affected();
        sqlx::query(
            "INSERT INTO chain_anchor (singleton, first_id, prev_entry_hash) VALUES (true, $1, $2) \
             ON CONFLICT (singleton) DO UPDATE \
             SET first_id = excluded.first_id, prev_entry_hash = excluded.prev_entry_hash",
        )
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
