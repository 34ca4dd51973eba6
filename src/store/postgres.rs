//! PostgreSQL access: pools that reconnect by themselves, bounded statements, migrations that
//! two replicas may run at once, and the reader's pool. The write path (chain lock, batch
//! statements) is in `write`; the reads are shared with SQLite (`read.rs`). Every value goes
//! through a bound parameter.
//!
//! Several replicas share one database: each batch locks the `chain_lock` row before it reads
//! the chain head, so appends from every replica form one gapless chain, and replay decisions
//! see every acceptance committed before them (the writer reads other replicas' acceptances into
//! its replay window before deciding).

mod write;

pub(super) use write::{Writer, begin_locked, open_writer};

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Postgres};

use super::StoreError;
use super::backend::postgres_migrator;
use super::pg_tls;
use super::read::SqlReader;

/// How long a reader waits for a connection: `/readyz` must answer quickly when the
/// database is down.
const READ_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a read statement may run (exports page, so each statement is short).
const READ_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

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
    postgres_migrator().run(&mut conn).await?;
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

/// A small pool of connections for reads.
pub(super) type Reader = SqlReader<Postgres>;

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
}
