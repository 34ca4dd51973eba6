//! `logout-ledger export`: every matching record to a file or standard output, as NDJSON, CSV
//! or OCSF, page by page in constant memory; progress on standard error when it is a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use logout_ledger::export::{ExportFormat, ExportPages};
use logout_ledger::store::{KindFilter, Order};
use serde_json::json;

use super::filters::{FilterArgs, record_access};
use super::store_arg::StoreArg;

/// Flags of `export`.
#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    #[command(flatten)]
    store: StoreArg,
    /// ndjson (one record a line), csv (RFC 4180) or ocsf (OCSF Authentication events).
    #[arg(long)]
    format: ExportFormat,
    #[command(flatten)]
    filters: FilterArgs,
    /// Sort order: asc (oldest first) or desc.
    #[arg(long, default_value = "asc")]
    order: Order,
    /// Write here instead of standard output (created or truncated).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Progress on standard error, at most a few times a second.
struct Progress {
    total: i64,
    done: i64,
    started: Instant,
    shown: Instant,
    visible: bool,
}

impl Progress {
    fn show(&mut self, last: bool) {
        if !self.visible || (!last && self.shown.elapsed() < Duration::from_millis(250)) {
            return;
        }
        self.shown = Instant::now();
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-6);
        eprint!(
            "\rexported {}/{} records ({rate:.0}/s){}",
            self.done,
            self.total,
            if last { "\n" } else { "" }
        );
    }
}

/// Runs the export.
pub(super) async fn run(args: ExportArgs) -> anyhow::Result<()> {
    let reader = args.store.open_reader().await?;
    let mut filter = args.filters.filter()?;
    anyhow::ensure!(
        args.format != ExportFormat::Ocsf || filter.kind == KindFilter::Logout,
        "an OCSF export holds logout records only (--kind logout)"
    );
    filter.order = args.order;
    let mut pages = ExportPages::open(reader, filter, args.format)
        .await
        .context("query failed")?;
    let total = pages.rows();
    let target = args
        .output
        .as_ref()
        .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    let details = json!({
        "filters": pages.filter().describe(),
        "format": args.format.code(),
        "output": target,
        "rows": total,
    });
    record_access(
        &args.store.database,
        "export",
        "logout-ledger export",
        details,
    )
    .await?;
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            create_private(path).with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, sink);
    let mut progress = Progress {
        total,
        done: 0,
        started: Instant::now(),
        shown: Instant::now(),
        visible: std::io::stderr().is_terminal(),
    };
    while let Some((chunk, count)) = pages.next_chunk().await? {
        out.write_all(&chunk)
            .with_context(|| format!("cannot write to {target}"))?;
        progress.done += count as i64;
        progress.show(false);
    }
    out.flush()
        .with_context(|| format!("cannot write to {target}"))?;
    progress.show(true);
    Ok(())
}

/// Creates (or truncates) the export file readable by its owner only (0600, whatever the
/// umask; an existing file is narrowed too): an export is audit data.
fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let file = opts.open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    opts.open(path)
}
