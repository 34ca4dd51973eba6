//! `logout-ledger purge`: retention. Removes whole checkpointed ranges older than a date and
//! leaves a retention record carrying the last removed entry's hash.

use super::store_arg::StoreArg;
use anyhow::Context;
use clap::Args;
use logout_ledger::clock::{Clock, SystemClock, parse_rfc3339_millis};
use logout_ledger::store;

/// Flags of `purge`.
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Remove records received before this time (RFC 3339, or YYYY-MM-DD for midnight UTC).
    #[arg(long, value_parser = parse_before)]
    before: i64,
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
}

/// Parses RFC 3339 or a bare date.
pub(crate) fn parse_before(s: &str) -> Result<i64, String> {
    if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        return parse_rfc3339_millis(&format!("{s}T00:00:00Z"));
    }
    parse_rfc3339_millis(s)
}

/// Runs the retention.
pub(crate) async fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let now = SystemClock.now_millis();
    let purged = store::purge(&args.store.database, args.before, args.dry_run, now)
        .await
        .with_context(|| format!("retention on {} failed", args.store.shown()))?;
    match (purged.plan.through, args.dry_run) {
        (None, _) => {
            println!("nothing to remove: no checkpointed range lies entirely before the date")
        }
        (Some(t), true) => println!(
            "would remove records {}..={} ({} records)",
            purged.plan.first_id, t, purged.plan.records
        ),
        (Some(t), false) => println!(
            "removed records {}..={} ({} records); retention record {} anchors the chain at {}",
            purged.plan.first_id,
            t,
            purged.plan.records,
            purged.record_id.unwrap_or_default(),
            purged
                .anchor
                .map(|a| logout_ledger::keys::jwks::hex(&a))
                .unwrap_or_default()
        ),
    }
    Ok(())
}
