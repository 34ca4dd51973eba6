//! Query benchmark: fills a store with realistic logout records through the store's writer,
//! starts the real service with its query API on loopback, then reports p50/p99 of each query
//! kind over HTTP (and the store's own time), export throughput and peak RSS during exports.
//!
//! ```sh
//! cargo bench --bench query -- [--records N] [--samples N] [--db PATH] [--fill-only]
//! ```
//! `--records` defaults to 1,000,000; `--db PATH` keeps the filled store for another run (a run
//! on an existing file only adds the missing records); `--fill-only` stops after the fill (to
//! measure the write cost of the indexes).

mod fill;
mod measure;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use logout_ledger::clock::{SystemClock, parse_rfc3339_millis};
use logout_ledger::config::{
    ApiSettings, ApiToken, IssuerSettings, KeyFetchSettings, Settings, parse_fetch_url,
};
use logout_ledger::startup::Application;
use logout_ledger::store::{AuditStore, EventFilter};
use logout_ledger::telemetry::LogFormat;

/// The token the benchmark's client presents.
const TOKEN: &str = "llq_benchmark";
/// The last record's arrival (records spread over the 90 days before).
const END: &str = "2026-11-20T00:00:00Z";

struct Args {
    records: u64,
    samples: usize,
    db: Option<PathBuf>,
    fill_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        records: 1_000_000,
        samples: 200,
        db: None,
        fill_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--records" => a.records = it.next().unwrap_or_default().parse()?,
            "--samples" => a.samples = it.next().unwrap_or_default().parse()?,
            "--db" => a.db = it.next().map(PathBuf::from),
            "--fill-only" => a.fill_only = true,
            _ => {} // `cargo bench` passes --bench
        }
    }
    Ok(a)
}

fn settings(url: &str) -> anyhow::Result<Settings> {
    let issuers = fill::ISSUERS
        .iter()
        .map(|iss| {
            Ok(IssuerSettings {
                issuer: (*iss).to_owned(),
                audiences: vec!["web-app".into()],
                algorithms: vec![jsonwebtoken::Algorithm::RS256],
                // Nothing listens there: key fetches fail at once, without DNS or network.
                jwks_uri: Some(parse_fetch_url(
                    "jwks_uri",
                    "https://127.0.0.1:9/jwks",
                    false,
                )?),
                client_secret: None,
                require_exp: true,
                leeway_secs: 60,
                max_token_age_secs: 300,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(Settings {
        listen: local,
        database: url.to_owned(),
        log_format: LogFormat::Text,
        issuers,
        keys: KeyFetchSettings::default(),
        store_timeout: Duration::from_secs(30),
        checkpoints: None,
        retention: None,
        api: ApiSettings {
            listen: local,
            tokens: vec![ApiToken::for_token("bench", TOKEN)],
        },
        edge: logout_ledger::config::EdgeSettings::default(),
        deliveries: Vec::new(),
    })
}

fn file_size(path: &std::path::Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let temp = a.db.is_none();
    let path = a.db.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "logout-ledger-query-bench-{}.db",
            std::process::id()
        ))
    });
    let url = format!("sqlite://{}", path.display());
    let end = parse_rfc3339_millis(END).map_err(anyhow::Error::msg)?;
    let have = if path.exists() {
        let reader = AuditStore::open_reader(&url).await?;
        reader.count(&EventFilter::default()).await? as u64
    } else {
        0
    };
    println!("# logout-ledger query benchmark");
    println!();
    println!(
        "store: {} ({} records requested, {have} present)",
        path.display(),
        a.records
    );
    if have < a.records {
        eprintln!("filling {} records through the writer...", a.records - have);
        let rate = fill::fill(&url, have, a.records, end).await?;
        println!(
            "fill: {} records through AuditStore::append at {rate:.0} records/s",
            a.records - have
        );
    }
    println!("store size: {:.0} MiB", file_size(&path) as f64 / 1048576.0);
    if a.fill_only {
        remove_if_temporary(temp, &path);
        return Ok(());
    }
    let app = Application::build(settings(&url)?, Arc::new(SystemClock)).await?;
    let api = app
        .api_addr()
        .ok_or_else(|| anyhow::anyhow!("the API did not start"))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let bench = measure::Bench::new(api, TOKEN, &url, a.records, end, a.samples).await?;
    bench.run().await?;
    let _ = stop.send(());
    server.await??;
    remove_if_temporary(temp, &path);
    Ok(())
}

fn remove_if_temporary(temp: bool, path: &std::path::Path) {
    if temp {
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }
}
