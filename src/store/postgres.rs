//! PostgreSQL access: pools that reconnect by themselves, bounded statements, migrations that
//! two replicas may run at once, and the chain reads. The write path (chain lock, batch
//! statements) is in `write`, the filtered read queries in `query`. Every value goes through a
//! bound parameter.
//!
//! Several replicas share one database: each batch locks the `chain_lock` row before it reads
//! the chain head, so appends from every replica form one gapless chain, and replay decisions
//! see every acceptance committed before them (`accepted_tokens`' primary key backs that up).

mod query;
mod write;

pub(super) use write::{Writer, begin_locked, open_writer};

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{ConnectOptions, Row};

use super::backend::{ChainOps, embedded_migrator};
use super::cells;
use super::chain::COLUMNS;
use super::pg_tls;
use super::{ChainDigest, ChainRow, StoreError, StoredCheckpoint};

/// How long a reader waits for a connection: `/readyz` must answer quickly when the
/// database is down.
const READ_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a read statement may run (exports page, so each statement is short).
const READ_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The migrations, embedded in the binary. sqlx holds an advisory lock while it applies them,
/// so replicas starting together apply each migration once.
fn migrator() -> Migrator {
    let sql = [
        (
            1,
            "audit events",
            include_str!("../../migrations/postgres/0001_audit_events.sql"),
        ),
        (
            2,
            "query indexes",
            include_str!("../../migrations/postgres/0002_query_indexes.sql"),
        ),
        (
            3,
            "unverified records",
            include_str!("../../migrations/postgres/0003_unverified_records.sql"),
        ),
    ];
    embedded_migrator(sql)
}

/// Connection options with a statement timeout, so a stalled database cannot hold a request
/// (or the chain lock) forever.
fn bounded(options: PgConnectOptions, timeout: Duration) -> PgConnectOptions {
    options
        .options([
            ("statement_timeout", timeout.as_millis().max(1).to_string()),
            // A transaction left open by a crashed client must not keep the chain lock.
            (
                "idle_in_transaction_session_timeout",
                (timeout.as_millis().max(1) * 4).to_string(),
            ),
        ])
        .disable_statement_logging()
}

/// Longest a migration statement may run (or wait for another replica's migration lock): an
/// index built on a large table takes longer than any request may wait.
const MIGRATE_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Migrates the database (once, whoever starts first) and opens the writer and reader pools.
/// The writer's pool waits for a connection, and each statement (the chain lock's wait
/// included) runs, at most half the store timeout, so an unreachable or locked database fails
/// the batch while its requests still wait for their answer.
pub(super) async fn open(
    options: PgConnectOptions,
    write_timeout: Duration,
) -> Result<(Writer, Reader), StoreError> {
    if matches!(options.get_ssl_mode(), PgSslMode::Disable) && !pg_tls::is_local(&options) {
        tracing::warn!(
            host = options.get_host(),
            "sslmode=disable: audit records travel to the database in clear text"
        );
    }
    let mut conn = bounded(options.clone(), MIGRATE_STATEMENT_TIMEOUT)
        .connect()
        .await
        .map_err(pg_tls::explained(&options))?;
    migrator().run(&mut conn).await?;
    drop(conn);
    let wait = super::health::wait_budget(write_timeout);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .acquire_timeout(wait)
        .connect_with(bounded(options.clone(), wait))
        .await?;
    let reader = Reader::open_existing(options).await?;
    Ok((Writer { pool }, reader))
}

/// The chained columns as the shared decoders read them: times as milliseconds, booleans as
/// 0/1 (the canonical encoding's integers), then `entry_hash`.
static CHAIN_SELECT: LazyLock<String> = LazyLock::new(|| {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| match *c {
            "received_at" => "ll_ms(received_at) AS received_at".to_owned(),
            "claims_verified" => "claims_verified::int4::int8 AS claims_verified".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    format!("SELECT {}, entry_hash FROM audit_events", cols.join(", "))
});

/// A small pool of connections for reads.
#[derive(Debug, Clone)]
pub(super) struct Reader {
    pool: PgPool,
}

impl Reader {
    /// Opens a reader on a database; connections are made on demand (and remade after an
    /// outage).
    pub(super) async fn open_existing(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(READ_ACQUIRE_TIMEOUT)
            .connect_with(bounded(options.clone(), READ_STATEMENT_TIMEOUT))
            .await
            .map_err(pg_tls::explained(&options))?;
        Ok(Self { pool })
    }

    /// Up to `limit` rows with id greater than `after` as the chain decoders read them.
    async fn chain_page(&self, after: i64, limit: u32) -> Result<Vec<PgRow>, StoreError> {
        let sql = format!("{} WHERE id > $1 ORDER BY id LIMIT $2", *CHAIN_SELECT);
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Up to `limit` chained rows with id greater than `after`, in id order.
    pub(super) async fn chain_rows(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ChainRow>, StoreError> {
        let rows = self.chain_page(after, limit).await?;
        rows.iter().map(cells::chain_row).collect()
    }

    /// Up to `limit` rows after `after` as content digests (the verifier's path).
    pub(super) async fn chain_digests(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Result<ChainDigest, (i64, String)>>, StoreError> {
        let rows = self.chain_page(after, limit).await?;
        let mut scratch = Vec::with_capacity(4096);
        Ok(rows
            .iter()
            .map(|row| cells::digest_row(row, &mut scratch))
            .collect())
    }

    /// Up to `limit` purged entry hashes with id greater than `after`, in id order.
    pub(super) async fn purged_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, entry_hash FROM purged_hashes WHERE id > $1 ORDER BY id LIMIT $2",
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

    /// The retention anchor: the first stored id and the hash before it.
    pub(super) async fn anchor(&self) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        let row = sqlx::query("SELECT first_id, prev_entry_hash FROM chain_anchor")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| cells::id_and_hash(&r)).transpose()
    }

    /// Every stored checkpoint, by tree size.
    pub(super) async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT tree_size, root_hash, note, ll_ms(created_at) FROM checkpoints \
             ORDER BY tree_size",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cells::checkpoint_row).collect()
    }

    /// Names of the append-only triggers present and enabled on the store's tables.
    pub(super) async fn guards(&self) -> Result<Vec<String>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT t.tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
             WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' \
             AND c.relname IN ('audit_events', 'checkpoints') AND pg_table_is_visible(c.oid) \
             ORDER BY 1",
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
        let row = sqlx::query("SELECT issuer, jwks FROM key_sets WHERE digest = $1")
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
