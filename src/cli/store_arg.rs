//! `--database`: the audit store a command reads or writes, shared by every command but `serve`.

use anyhow::Context;
use clap::Args;
use logout_ledger::startup::redact_url;
use logout_ledger::store::{AuditStore, StoreReader};

/// The `--database` flag (or `LOGOUT_LEDGER_DATABASE`).
#[derive(Debug, Args)]
pub(super) struct StoreArg {
    /// Audit store URL: sqlite://PATH or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        env = "LOGOUT_LEDGER_DATABASE",
        default_value = "sqlite://logout-ledger.db"
    )]
    pub(super) database: String,
}

impl StoreArg {
    /// The URL as messages may show it: without its password.
    pub(super) fn shown(&self) -> String {
        redact_url(&self.database)
    }

    /// Opens the store for reading; the error names it without its password.
    pub(super) async fn open_reader(&self) -> anyhow::Result<StoreReader> {
        AuditStore::open_reader(&self.database)
            .await
            .with_context(|| format!("cannot open {}", self.shown()))
    }
}
