//! `logout-ledger export`: every matching record to a file or standard output, as NDJSON, CSV
//! or OCSF, page by page in constant memory; progress on standard error when it is a terminal.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use logout_ledger::export::ExportFormat;
use logout_ledger::store::{AuditStore, KindFilter, Order};
use serde_json::json;

use super::filters::{FilterArgs, record_access};

/// Records read per page.
const PAGE: u32 = 1000;

/// Flags of `export`.
#[derive(Debug, Args)]
pub(super) struct ExportArgs {
    /// Audit store URL.
    #[arg(
        long,
        env = "LOGOUT_LEDGER_DATABASE",
        default_value = "sqlite://logout-ledger.db"
    )]
    database: String,
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
    let reader = AuditStore::open_reader(&args.database)
        .await
        .with_context(|| format!("cannot open {}", args.database))?;
    let mut filter = args.filters.filter()?;
    anyhow::ensure!(
        args.format != ExportFormat::Ocsf || filter.kind == KindFilter::Logout,
        "an OCSF export holds logout records only (--kind logout)"
    );
    filter.order = args.order;
    filter.limit = PAGE;
    let window = reader.id_window(&filter).await.context("query failed")?;
    filter.id_range = window;
    let total = match window {
        Some(_) => reader.count(&filter).await.context("query failed")?,
        None => 0,
    };
    let target = args
        .output
        .as_ref()
        .map_or_else(|| "standard output".to_owned(), |p| p.display().to_string());
    let details = json!({
        "filters": filter.describe(),
        "format": args.format.code(),
        "output": target,
        "rows": total,
    });
    record_access(&args.database, "export", "logout-ledger export", details).await?;
    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
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
    let mut buf = Vec::with_capacity(1 << 18);
    args.format.start(&mut buf);
    let mut more = window.is_some();
    while more {
        let records = reader.query(&filter).await.context("query failed")?;
        for r in &records {
            args.format.write(&mut buf, r)?;
        }
        out.write_all(&buf)
            .with_context(|| format!("cannot write to {target}"))?;
        buf.clear();
        progress.done += records.len() as i64;
        progress.show(false);
        more = records.len() == PAGE as usize;
        filter.after = records.last().map(|r| r.id);
    }
    out.write_all(&buf)?;
    out.flush()
        .with_context(|| format!("cannot write to {target}"))?;
    progress.show(true);
    Ok(())
}
