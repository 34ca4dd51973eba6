//! `logout-ledger report summary`: counts of matching records per day, issuer, outcome,
//! reason or metadata value, as a table or JSON.

use anyhow::Context;
use clap::{Args, Subcommand};
use logout_ledger::store::{GroupBy, Summary};
use serde_json::{Value, json};

use super::filters::{FilterArgs, record_access};
use super::store_arg::StoreArg;

/// Reports.
#[derive(Debug, Args)]
pub(super) struct ReportArgs {
    #[command(subcommand)]
    report: Report,
}

#[derive(Debug, Subcommand)]
enum Report {
    /// Counts per group, e.g. logouts per organization per day, or rejections by reason.
    Summary(SummaryArgs),
}

/// Output of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ReportFormat {
    /// Aligned columns.
    Table,
    /// The query API's JSON.
    Json,
}

/// Flags of `report summary`.
#[derive(Debug, Args)]
struct SummaryArgs {
    #[command(flatten)]
    store: StoreArg,
    /// day, issuer, outcome, reason or meta:KEY; once or twice.
    #[arg(long = "group-by", required = true, num_args = 1)]
    group_by: Vec<GroupBy>,
    #[command(flatten)]
    filters: FilterArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
}

/// Runs a report.
pub(super) async fn run(args: ReportArgs) -> anyhow::Result<()> {
    let Report::Summary(args) = args.report;
    anyhow::ensure!(
        args.group_by.len() <= logout_ledger::store::MAX_GROUP_BY,
        "--group-by: at most {} dimensions",
        logout_ledger::store::MAX_GROUP_BY
    );
    let reader = args.store.open_reader().await?;
    let filter = args.filters.filter()?;
    let summary = reader
        .summary(&filter, &args.group_by)
        .await
        .context("query failed")?;
    let names: Vec<String> = args.group_by.iter().map(GroupBy::name).collect();
    let details = json!({
        "filters": filter.describe(),
        "group_by": names,
        "rows": summary.groups.len(),
        "total": summary.total,
    });
    record_access(
        &args.store.database,
        "report",
        "logout-ledger report summary",
        details,
    )
    .await?;
    match args.format {
        ReportFormat::Json => println!("{:#}", serde_json::to_value(&summary)?),
        ReportFormat::Table => print!("{}", table(&names, &summary)),
    }
    Ok(())
}

fn table(names: &[String], summary: &Summary) -> String {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        _ => "(none)".into(),
    };
    let mut rows: Vec<Vec<String>> = vec![names.iter().cloned().chain(["count".into()]).collect()];
    for g in &summary.groups {
        let mut row: Vec<String> = names.iter().map(|n| text(g.key.get(n))).collect();
        row.push(g.count.to_string());
        rows.push(row);
    }
    let widths: Vec<usize> = (0..=names.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == names.len() {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str(&format!(
        "total {}{}\n",
        summary.total,
        if summary.truncated {
            " (groups truncated)"
        } else {
            ""
        }
    ));
    out
}
