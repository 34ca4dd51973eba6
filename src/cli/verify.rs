//! `logout-ledger verify`: prove the audit trail was not altered.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use logout_ledger::ledger::verify::{self, Problem};
use logout_ledger::store::AuditStore;

/// Flags of `verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Audit store URL.
    #[arg(
        long,
        env = "LOGOUT_LEDGER_DATABASE",
        default_value = "sqlite://logout-ledger.db"
    )]
    database: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Verifies the store; fails (exit status 1) when any problem is found.
pub(crate) async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let reader = AuditStore::open_reader(&args.database)
        .await
        .with_context(|| format!("cannot open {}", args.database))?;
    let started = Instant::now();
    let mut problems: Vec<Problem> = verify::guards(&reader).await?;
    let chain = verify::chain(&reader, |_, _| {})
        .await
        .context("reading the chain")?;
    problems.extend(chain.problems.iter().cloned());
    let elapsed = started.elapsed();
    if args.json {
        let report = serde_json::json!({
            "records": chain.records,
            "first_id": chain.first_id,
            "last_id": chain.last_id,
            "problems": problems,
            "ok": problems.is_empty(),
        });
        println!("{report:#}");
    } else {
        for p in &problems {
            println!("PROBLEM {p}");
        }
        let rate = chain.records as f64 / elapsed.as_secs_f64().max(1e-9);
        println!(
            "{} records ({}..={}) checked in {:.2?} ({rate:.0}/s): {}",
            chain.records,
            chain.first_id,
            chain.last_id,
            elapsed,
            if problems.is_empty() {
                "the chain is intact".to_owned()
            } else {
                format!("{} problem(s)", problems.len())
            }
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "the audit trail failed verification ({} problem(s))",
            problems.len()
        )
    }
}
