//! `logout-ledger verify`: prove the audit trail was not altered.

use std::path::PathBuf;
use std::time::Instant;

use super::store_arg::StoreArg;
use anyhow::Context;
use clap::Args;
use logout_ledger::ledger::verify::{self, Options};
use logout_ledger::tlog::NoteVerifier;

/// Flags of `verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The log's public key (FILE.pub from keygen); checks every checkpoint's signature.
    #[arg(long)]
    key: Option<PathBuf>,
    /// A checkpoint kept outside the store; the store must still contain what it signed.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<PathBuf>,
    /// Also re-verify every accepted token against its archived key set, offline.
    #[arg(long)]
    signatures: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Reads a note verifier key file.
pub(crate) fn read_key(path: &PathBuf) -> anyhow::Result<NoteVerifier> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    NoteVerifier::parse(text.trim())
        .with_context(|| format!("{} is not a note verifier key", path.display()))
}

/// Verifies the store; fails (exit status 1) when any problem is found.
pub(crate) async fn run(args: VerifyArgs) -> anyhow::Result<()> {
    let key = args.key.as_ref().map(read_key).transpose()?;
    if key.is_none() && !args.checkpoints.is_empty() {
        anyhow::bail!(
            "--checkpoint needs --key: an outside checkpoint is only worth its signature"
        );
    }
    let mut external = Vec::new();
    for path in &args.checkpoints {
        let note = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        external.push((path.display().to_string(), note));
    }
    let reader = args.store.open_reader().await?;
    let started = Instant::now();
    let opts = Options {
        key,
        external,
        signatures: args.signatures,
    };
    let report = verify::run(&reader, &opts)
        .await
        .context("reading the store")?;
    let elapsed = started.elapsed();
    if args.json {
        println!("{:#}", serde_json::to_value(&report)?);
    } else {
        for p in &report.problems {
            println!("PROBLEM {p}");
        }
        let c = &report.chain;
        let rate = c.records as f64 / elapsed.as_secs_f64().max(1e-9);
        println!(
            "records:     {} ({}..={}), checked in {elapsed:.2?} ({rate:.0}/s)",
            c.records, c.first_id, c.last_id
        );
        println!(
            "checkpoints: {} held against the store{}",
            report.checkpoints_checked,
            if opts.key.is_some() {
                ", signatures checked"
            } else {
                " (no --key: signatures not checked)"
            }
        );
        if args.signatures {
            println!(
                "signatures:  {} accepted tokens re-verified offline, {} skipped (HS256 needs the client secret)",
                report.signatures_checked, report.signatures_skipped
            );
        }
        println!(
            "{}",
            if report.problems.is_empty() {
                "OK: the audit trail is intact".to_owned()
            } else {
                format!("FAILED: {} problem(s)", report.problems.len())
            }
        );
    }
    if report.problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "the audit trail failed verification ({} problem(s))",
            report.problems.len()
        )
    }
}
