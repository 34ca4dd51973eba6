//! `logout-ledger deliveries`: what each delivery target was sent, and a way to send again
//! (`retry`), straight on the store like `query`. A running service picks a retry up within
//! its poll interval (a second).

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use logout_ledger::clock::{Clock, SystemClock};
use logout_ledger::store::deliveries::{DeliveryFilter, DeliveryOp, DeliveryRow, DeliveryState};
use logout_ledger::store::{self, MAX_LIMIT, Note, NoteKind};
use serde_json::json;

use super::filters::{record_access, who};
use super::store_arg::StoreArg;

/// Flags of `deliveries`.
#[derive(Debug, Args)]
pub(super) struct DeliveriesArgs {
    #[command(subcommand)]
    command: DeliveriesCommand,
}

#[derive(Debug, Subcommand)]
enum DeliveriesCommand {
    /// List deliveries, newest record first.
    List(ListArgs),
    /// Make deliveries due again: one record's (`--id`) or every dead one (`--dead`).
    Retry(RetryArgs),
}

/// Output formats of `deliveries list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ListFormat {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// Only this state: pending, delivered or dead.
    #[arg(long, value_parser = parse_state)]
    state: Option<DeliveryState>,
    /// Most rows.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    limit: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "dead"])))]
struct RetryArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The target.
    #[arg(long)]
    target: String,
    /// The record whose delivery to send again (whatever its state).
    #[arg(long)]
    id: Option<i64>,
    /// Every dead delivery of the target.
    #[arg(long)]
    dead: bool,
}

fn parse_state(s: &str) -> Result<DeliveryState, String> {
    DeliveryState::parse(s).ok_or_else(|| format!("{s:?}: pending, delivered or dead"))
}

/// Runs `deliveries list` or `deliveries retry`.
pub(super) async fn run(args: DeliveriesArgs) -> anyhow::Result<()> {
    match args.command {
        DeliveriesCommand::List(a) => list(a).await,
        DeliveriesCommand::Retry(a) => retry(a).await,
    }
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let reader = args.store.open_reader().await?;
    let filter = DeliveryFilter {
        target: args.target.clone(),
        state: args.state,
        limit: args.limit,
        ..DeliveryFilter::default()
    };
    let rows = reader
        .deliveries(&filter)
        .await
        .context("cannot read deliveries")?;
    let details = json!({
        "filters": { "target": args.target, "state": args.state.map(DeliveryState::as_str) },
        "rows": rows.len(),
    });
    record_access(
        &args.store.database,
        "query",
        "logout-ledger deliveries list",
        details,
    )
    .await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        ListFormat::Table => table(&mut out, &rows)?,
    }
    Ok(())
}

/// Aligned columns: target, record, state, attempts, times, last error.
fn table(out: &mut impl Write, rows: &[DeliveryRow]) -> std::io::Result<()> {
    let head = [
        "TARGET",
        "EVENT",
        "STATE",
        "ATTEMPTS",
        "RECEIVED",
        "NEXT",
        "DELIVERED",
        "LAST_ERROR",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|d| {
            [
                d.target.clone(),
                d.event_id.to_string(),
                d.state.as_str().to_owned(),
                d.attempts.to_string(),
                d.received_at.clone(),
                d.next_attempt_at.clone().unwrap_or_default(),
                d.delivered_at.clone().unwrap_or_default(),
                d.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, row: &[&str]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                text.push_str(c);
            } else {
                text.push_str(&format!("{c:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &head)?;
    for row in &cells {
        line(out, &row.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

async fn retry(args: RetryArgs) -> anyhow::Result<()> {
    let now = SystemClock.now_millis();
    let op = DeliveryOp::Requeue {
        target: args.target.clone(),
        event_id: args.id,
        now,
    };
    let note = Note {
        kind: NoteKind::System,
        action: "delivery_retry".into(),
        details: json!({
            "who": who(),
            "via": "cli",
            "target": args.target,
            "event_id": args.id,
            "dead": args.dead,
        }),
        at: now,
    };
    let changed = store::write_deliveries(&args.store.database, vec![op], &note)
        .await
        .with_context(|| format!("cannot requeue on {}", args.store.shown()))?;
    let n = changed.first().copied().unwrap_or(0);
    if n == 0 {
        anyhow::bail!(
            "no delivery of target {:?} matched{}",
            args.target,
            args.id.map_or_else(
                || " (no dead deliveries)".to_owned(),
                |id| format!(" record {id}")
            )
        );
    }
    println!(
        "{n} deliver{} of target {} due again; a running service sends {} within a few seconds",
        if n == 1 { "y" } else { "ies" },
        args.target,
        if n == 1 { "it" } else { "them" }
    );
    Ok(())
}
