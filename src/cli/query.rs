//! `logout-ledger query`: read audit records straight from the store, filtered.

use anyhow::Context;
use clap::Args;
use logout_ledger::clock::parse_rfc3339_millis;
use logout_ledger::store::{
    AuditStore, EventFilter, KindFilter, MAX_LIMIT, Order, Outcome, parse_meta, parse_outcome,
    parse_reason,
};

use super::output::{self, Format};

/// Flags of `query`.
#[derive(Debug, Args)]
pub(super) struct QueryArgs {
    /// Audit store URL.
    #[arg(
        long,
        env = "LOGOUT_LEDGER_DATABASE",
        default_value = "sqlite://logout-ledger.db"
    )]
    database: String,
    /// Which records: logout, access (reads of the audit data), system, or all.
    #[arg(long, default_value = "logout")]
    kind: KindFilter,
    /// Only this issuer.
    #[arg(long)]
    iss: Option<String>,
    /// Only this subject.
    #[arg(long)]
    sub: Option<String>,
    /// Only this session id.
    #[arg(long)]
    sid: Option<String>,
    /// Only this token id.
    #[arg(long)]
    jti: Option<String>,
    /// Only this outcome: accepted, duplicate or rejected.
    #[arg(long, value_parser = parse_outcome)]
    outcome: Option<Outcome>,
    /// Only this rejection code.
    #[arg(long, value_parser = parse_reason)]
    reason: Option<String>,
    /// Only records whose session metadata has KEY=VALUE (repeat: all must match).
    #[arg(long = "meta", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
    /// Received at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_rfc3339_millis)]
    since: Option<i64>,
    /// Received before this RFC 3339 time.
    #[arg(long, value_parser = parse_rfc3339_millis)]
    until: Option<i64>,
    /// Most records to print.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    limit: u32,
    /// Sort order: desc (newest first) or asc.
    #[arg(long, default_value = "desc")]
    order: Order,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Prints matching records to standard output.
pub(super) async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let reader = AuditStore::open_reader(&args.database)
        .await
        .with_context(|| format!("cannot open {}", args.database))?;
    let filter = EventFilter {
        kind: args.kind,
        iss: args.iss,
        sub: args.sub,
        sid: args.sid,
        jti: args.jti,
        outcome: args.outcome,
        reason: args.reason,
        meta: args.meta,
        since: args.since,
        until: args.until,
        limit: args.limit,
        order: args.order,
    };
    let records = reader.query(&filter).await.context("query failed")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    output::write(&mut out, &records, args.format).context("cannot write output")?;
    Ok(())
}
