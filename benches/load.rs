//! Load benchmark: drives the real `logout-ledger serve` binary over loopback and reports
//! throughput, latency percentiles, server memory and CPU, then checks durability.
//!
//! What it does, in order:
//! 1. starts an in-process issuer ([`LocalIssuer`]) serving discovery and a key set;
//! 2. mints every token (distinct `jti`/`sid`, realistic `session_metadata`) before timing;
//! 3. spawns the release server binary on a free port with a fresh SQLite file and waits for
//!    `GET /readyz`;
//! 4. sends a short warm-up, then a bounded number of `POST /backchannel-logout` requests from
//!    `C` keep-alive connections (stopping early at a hard time limit);
//! 5. reads the server's peak RSS, stops it with SIGTERM, and checks that the store holds one
//!    `accepted` row per 200 answer (exits non-zero otherwise).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench load -- --requests 40000
//! --concurrency 64`. Flags: `--requests N`, `--concurrency C`, `--warmup N`,
//! `--time-limit SECS`, `--keep-db`, `--postgres ADMIN_URL` (a fresh database on that server
//! instead of a SQLite file, dropped afterwards) and `--replicas N` (that many `serve`
//! processes on the one store; the connections are spread over them as a load balancer would),
//! `--binary PATH` (drive another build, e.g. one with `--features bench-unchained`) and
//! `--without-query-indexes` (SQLite without migration 0002's indexes, to measure their cost)
//! and `--sqlite-file PATH` (an existing store, e.g. one `cargo bench --bench query -- --db PATH
//! --records 5000000 --fill-only` filled, to measure the write path on a large store; kept, and
//! the durability check counts the rows the run added).
//!
//! Pinning and profiling (issue 11):
//! - `--server-cpus LIST` starts each server under `taskset -c LIST` (e.g. `0`), so the service
//!   runs on those CPUs only;
//! - `--client-cpus LIST` pins this process (every thread, with `taskset -a -p -c LIST`) once
//!   the tokens are minted (minting still uses every core), so the load generator runs there;
//! - `--server-wrapper "CMD ARGS"` puts a command in front of the server binary (split on
//!   whitespace, after `taskset` if both are given), e.g.
//!   `--server-wrapper "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out"`; the
//!   wrapper must exec the server in the same process (valgrind does), since SIGTERM, `/proc`
//!   and the figures follow that pid; start-up and exit may then take minutes.
//!
//! Example, one CPU each: `cargo bench --bench load -- --requests 40000 --concurrency 32
//! --server-cpus 0 --client-cpus 1`.
//!
//! Besides throughput, latency and CPU, the report gives the server's peak RSS (`VmHWM`) and
//! its disk writes over the measured phase from `/proc/<pid>/io`: `write_bytes` (bytes it caused
//! to be sent to storage: WAL frames and checkpoint copies into the database file together,
//! counted when a page is dirtied) per accepted logout, and `wchar` (everything passed to
//! write-like system calls, sockets included). The second reading is taken 0.6 s after the last
//! answer, so the background checkpointer's copy of the run's last frames is included.
//! See `docs/performance.md` for measured figures.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use logout_ledger::local_issuer::LocalIssuer;
use serde_json::json;
use support::{
    REQUEST_TIMEOUT, RssSampler, Server, Store, TOKEN_LIFETIME_SECS, cores, cpu_model, kib_field,
    machine_cpu_secs, post_form, proc_cpu_secs, proc_status_kib, quantile_ms,
};

/// How long the server may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times longer a server under `--server-wrapper` may take to start and to exit.
const WRAPPED_SLOWDOWN: u32 = 12;
/// How long after the last answer the second disk-write reading is taken, so the background
/// checkpointer (every 250 ms) has copied the run's last WAL frames into the database.
const WRITE_SETTLE: Duration = Duration::from_millis(600);

/// Target from the issue: accepted logouts per second at concurrency 64.
const TARGET_RATE: f64 = 8_000.0;
/// Target from the issue: 99th-percentile latency.
const TARGET_P99_MS: f64 = 25.0;
/// Target from the issue: peak server resident memory.
const TARGET_RSS_MIB: f64 = 100.0;

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    requests: usize,
    concurrency: usize,
    warmup: usize,
    time_limit: Duration,
    keep_db: bool,
    postgres: Option<String>,
    replicas: usize,
    /// Another build of the server to drive (e.g. one built with `--features bench-unchained`).
    binary: Option<PathBuf>,
    /// Drop the query API's indexes before the run (SQLite), to measure their write cost.
    without_query_indexes: bool,
    /// CPUs (a `taskset -c` list) the server runs on.
    server_cpus: Option<String>,
    /// CPUs (a `taskset -c` list) the load generator runs on once the tokens are minted.
    client_cpus: Option<String>,
    /// A command (and its arguments) the server binary is started under, e.g. valgrind.
    server_wrapper: Vec<String>,
    /// An existing SQLite store to run against (kept; its rows are counted before the run).
    sqlite_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests: 40_000,
            concurrency: 64,
            warmup: 500,
            time_limit: Duration::from_secs(60),
            keep_db: false,
            postgres: None,
            replicas: 1,
            binary: None,
            without_query_indexes: false,
            sqlite_file: None,
            server_cpus: None,
            client_cpus: None,
            server_wrapper: Vec::new(),
        }
    }
}

/// Parses the flags after `--`; ignores `--bench`, which cargo passes.
fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .with_context(|| format!("{name}: {v:?} is not a number"))
        };
        match arg.as_str() {
            "--bench" => {}
            "--requests" => o.requests = usize::try_from(value("--requests")?)?,
            "--concurrency" => o.concurrency = usize::try_from(value("--concurrency")?)?,
            "--warmup" => o.warmup = usize::try_from(value("--warmup")?)?,
            "--time-limit" => o.time_limit = Duration::from_secs(value("--time-limit")?),
            "--keep-db" => o.keep_db = true,
            "--replicas" => o.replicas = usize::try_from(value("--replicas")?)?,
            "--postgres" => o.postgres = Some(args.next().context("--postgres needs a URL")?),
            "--binary" => o.binary = Some(args.next().context("--binary needs a path")?.into()),
            "--without-query-indexes" => o.without_query_indexes = true,
            "--sqlite-file" => {
                o.sqlite_file = Some(args.next().context("--sqlite-file needs a path")?.into());
            }
            "--server-cpus" => o.server_cpus = Some(cpu_list(args.next(), "--server-cpus")?),
            "--client-cpus" => o.client_cpus = Some(cpu_list(args.next(), "--client-cpus")?),
            "--server-wrapper" => {
                let cmd = args.next().context("--server-wrapper needs a command")?;
                o.server_wrapper = cmd.split_whitespace().map(str::to_owned).collect();
                ensure!(!o.server_wrapper.is_empty(), "--server-wrapper is empty");
            }
            other => bail!(
                "unknown argument {other:?}; flags: --requests N --concurrency C --warmup N \
                 --time-limit SECS --keep-db --postgres ADMIN_URL --replicas N --binary PATH \
                 --without-query-indexes --server-cpus LIST --client-cpus LIST \
                 --server-wrapper CMD"
            ),
        }
    }
    ensure!(o.requests > 0, "--requests must be positive");
    ensure!(o.concurrency > 0, "--concurrency must be positive");
    ensure!(o.replicas > 0, "--replicas must be positive");
    ensure!(
        o.replicas == 1 || o.postgres.is_some(),
        "--replicas needs --postgres (SQLite serves one process)"
    );
    Ok(o)
}

/// Checks a `taskset -c` CPU list (digits, `,` and `-` only, e.g. `0`, `0,1`, `2-3`).
fn cpu_list(value: Option<String>, flag: &str) -> anyhow::Result<String> {
    let list = value.with_context(|| format!("{flag} needs a CPU list"))?;
    ensure!(
        !list.is_empty()
            && list
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == '-'),
        "{flag}: {list:?} is not a CPU list like 0 or 0,1 or 2-3"
    );
    Ok(list)
}

// ---------------------------------------------------------------------------------------------
// Machine facts and /proc readers
// ---------------------------------------------------------------------------------------------

/// The source revision the server was built from: `git describe`, marked when `src/` has
/// uncommitted changes; `unknown` outside a git checkout.
fn source_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => match git(&[
            "status",
            "--porcelain",
            "--",
            "src",
            "migrations",
            "Cargo.lock",
        ]) {
            Some(changes) if !changes.is_empty() => format!("{rev} + uncommitted changes in src/"),
            _ => rev,
        },
        None => "unknown (not a git checkout)".into(),
    }
}

/// A process's write counters from `/proc/<pid>/io`, all threads together.
#[derive(Debug, Clone, Copy)]
struct WriteCounters {
    /// Bytes passed to write-like system calls (`wchar`): WAL frames, checkpoint copies and
    /// socket writes, whether or not they reach the disk.
    passed: u64,
    /// Bytes the process caused to be sent to storage (`write_bytes` less
    /// `cancelled_write_bytes`): WAL and database pages as the disk sees them.
    to_disk: u64,
}

impl WriteCounters {
    /// Reads the counters of `pid`; `None` when `/proc/<pid>/io` is unreadable.
    fn read(pid: &str) -> Option<Self> {
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
        let field = |name: &str| -> Option<u64> {
            io.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        Some(Self {
            passed: field("wchar")?,
            to_disk: field("write_bytes")?.saturating_sub(field("cancelled_write_bytes")?),
        })
    }

    /// What was written between `before` and `self`.
    fn since(self, before: Self) -> Self {
        Self {
            passed: self.passed.saturating_sub(before.passed),
            to_disk: self.to_disk.saturating_sub(before.to_disk),
        }
    }
}

/// Pins every thread of this process to `cpus` (threads started later inherit it).
fn pin_self(cpus: &str) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .output()
        .context("run taskset (util-linux)")?;
    ensure!(
        out.status.success(),
        "taskset -a -p -c {cpus} {pid} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Describes the machine: cores, CPU model, memory, kernel.
fn machine_facts() -> Vec<(&'static str, String)> {
    let cores = cores();
    let model = cpu_model();
    let mem = kib_field("/proc/meminfo", "MemTotal").map_or_else(
        || "unknown".into(),
        |k| format!("{:.1} GiB", k as f64 / 1048576.0),
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    vec![
        ("cores (nproc)", cores.to_string()),
        ("CPU", model),
        ("memory", mem),
        ("kernel", kernel),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

const ORGS: [(&str, &str); 4] = [
    ("org_7Hq2LkVn3XbR9tWd", "acme-corp"),
    ("org_Q4mZp8YcE1sF6uJa", "globex"),
    ("org_c9TgB2nK5wHx0LrM", "initech"),
    ("org_V3dS7jP1qN8eZyUo", "umbrella-eu"),
];
const DEVICES: [&str; 4] = [
    "MacBook Pro (Chrome 126)",
    "iPhone 15 (Safari)",
    "Pixel 8 (Chrome Mobile)",
    "Windows 11 (Edge 125)",
];
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-southeast-2"];

/// Signs one valid RS256 logout token with realistic claims for request number `i`.
fn mint(issuer: &LocalIssuer, i: usize) -> anyhow::Result<String> {
    // Minting all tokens takes a while: keep exp well ahead of the end of the run.
    let mut claims = support::fresh_claims(issuer)?;
    // Users in no particular order (as in production), so the `sub` index is not appended to
    // in key order: Fibonacci hashing spreads consecutive requests over 50,000 users.
    let user = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 50_000;
    claims.insert("sub".into(), json!(format!("auth0|user-{user:06}")));
    let (org_id, org_slug) = ORGS[i % ORGS.len()];
    claims.insert(
        "session_metadata".into(),
        json!({
            "org_id": org_id,
            "org_slug": org_slug,
            "deviceName": DEVICES[i % DEVICES.len()],
            "loginRegion": REGIONS[i % REGIONS.len()],
        }),
    );
    Ok(issuer.sign("rsa-1", "RS256", &claims)?)
}

/// Mints `n` form bodies (`logout_token=...`) on every core, before any timing starts.
fn mint_bodies(issuer: &LocalIssuer, n: usize) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism().map_or(2, |t| t.get());
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(|i| mint(issuer, i).map(|t| format!("logout_token={t}")))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for w in workers {
            let part = w
                .join()
                .map_err(|_| anyhow::anyhow!("a minting thread panicked"))??;
            out.extend(part);
        }
        Ok(out)
    })
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// The query API's indexes (migration 0002), dropped to measure what they cost the writer.
const QUERY_INDEXES: [&str; 4] = [
    "audit_events_sub",
    "audit_events_sid",
    "audit_events_kind",
    "audit_events_subject_logouts",
];

/// Creates and migrates a SQLite store, then drops the query API's indexes (the server finds
/// its migrations applied and leaves the schema as it is).
async fn drop_query_indexes(url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let (store, writer) = logout_ledger::store::AuditStore::open(
        url,
        logout_ledger::store::WriterSettings::with_timeout(Duration::from_secs(5)),
    )
    .await?;
    drop(store);
    writer.finished().await;
    let mut conn = sqlx::SqliteConnection::connect(url).await?;
    for index in QUERY_INDEXES {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {index}")))
            .execute(&mut conn)
            .await?;
    }
    println!(
        "store:    without the query API's indexes ({})",
        QUERY_INDEXES.join(", ")
    );
    Ok(())
}

/// A fresh store for the run: a SQLite file (without the query API's indexes if asked), or a
/// PostgreSQL database.
async fn create_store(o: &Options) -> anyhow::Result<Store> {
    if let Some(path) = &o.sqlite_file {
        ensure!(
            path.exists(),
            "--sqlite-file {}: no such store",
            path.display()
        );
        return Ok(Store {
            url: format!("sqlite://{}", path.display()),
            file: None,
            postgres: None,
        });
    }
    let store = Store::create("bench", o.postgres.as_deref()).await?;
    if store.file.is_some() && o.without_query_indexes {
        drop_query_indexes(&store.url).await?;
    }
    Ok(store)
}

/// Starts one server (`--binary`, or the release build) on a free port against the store,
/// under `taskset -c` (`--server-cpus`) and the `--server-wrapper` command if given.
fn spawn_server(issuer: &str, store: &Store, o: &Options) -> anyhow::Result<Server> {
    let port = support::free_port()?;
    let binary = o.binary.as_deref().unwrap_or(support::release_binary());
    let max_age = TOKEN_LIFETIME_SECS.to_string();
    let args = support::serve_args(issuer, &store.url, port, &["--max-token-age", &max_age]);
    let mut prefix: Vec<String> = Vec::new();
    if let Some(cpus) = &o.server_cpus {
        prefix.extend(["taskset".into(), "-c".into(), cpus.clone()]);
    }
    prefix.extend(o.server_wrapper.iter().cloned());
    let Some((program, before)) = prefix.split_first() else {
        return Server::spawn(binary, &args, port);
    };
    // taskset and valgrind exec the server in their own process: the pid stays the server's.
    let mut full: Vec<String> = before.to_vec();
    full.push(binary.display().to_string());
    full.extend(args);
    Server::spawn(Path::new(program), &full, port)
}

/// Waits for a server's `/readyz`; a wrapped server (valgrind) gets [`WRAPPED_SLOWDOWN`] times
/// the usual start-up time.
async fn wait_ready(
    server: &mut Server,
    client: &reqwest::Client,
    o: &Options,
) -> anyhow::Result<()> {
    let tries = if o.server_wrapper.is_empty() {
        1
    } else {
        WRAPPED_SLOWDOWN
    };
    for _ in 1..tries {
        if server.wait_ready(client).await.is_ok() {
            return Ok(());
        }
    }
    server.wait_ready(client).await
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of every answered request, in microseconds.
    latencies_us: Vec<u32>,
    /// Answers per HTTP status.
    statuses: BTreeMap<u16, u64>,
    /// Transport errors (no HTTP answer).
    errors: u64,
    /// One example per non-200 status or error, for diagnosis.
    examples: BTreeMap<String, String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        self.errors += other.errors;
        for (k, v) in other.examples {
            self.examples.entry(k).or_insert(v);
        }
    }

    fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }
}

/// Sends one logout request and reads the whole answer; returns the status and, for a
/// non-200, the start of the body (an example for the report).
async fn send_one(
    client: &reqwest::Client,
    url: &str,
    body: &str,
) -> Result<(u16, Option<String>), reqwest::Error> {
    let resp = post_form(client, url, body.to_owned()).send().await?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await?;
    let text = (status != 200).then(|| String::from_utf8_lossy(&body).chars().take(300).collect());
    Ok((status, text))
}

/// One of `C` workers: takes the next body index until the bodies or the time run out.
async fn worker(
    client: reqwest::Client,
    url: Arc<str>,
    bodies: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> Tally {
    let mut t = Tally {
        latencies_us: Vec::with_capacity(bodies.len() / 16 + 16),
        ..Tally::default()
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(body) = bodies.get(i) else { break };
        if Instant::now() >= deadline {
            break;
        }
        let start = Instant::now();
        match send_one(&client, &url, body).await {
            Ok((status, text)) => {
                let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
                t.latencies_us.push(us);
                *t.statuses.entry(status).or_default() += 1;
                if let Some(text) = text {
                    t.examples.entry(format!("HTTP {status}")).or_insert(text);
                }
            }
            Err(e) => {
                t.errors += 1;
                t.examples
                    .entry("transport error".into())
                    .or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    t
}

/// Drives `bodies` through `concurrency` workers; returns the tally and the wall time.
async fn drive(
    client: &reqwest::Client,
    urls: &[String],
    bodies: Vec<String>,
    concurrency: usize,
    time_limit: Duration,
) -> anyhow::Result<(Tally, Duration)> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let urls: Vec<Arc<str>> = urls.iter().map(|u| Arc::from(u.as_str())).collect();
    let start = Instant::now();
    let deadline = start + time_limit;
    let handles: Vec<_> = (0..concurrency)
        .map(|i| {
            tokio::spawn(worker(
                client.clone(),
                Arc::clone(&urls[i % urls.len()]),
                Arc::clone(&bodies),
                Arc::clone(&next),
                deadline,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(h.await.context("a load worker panicked")?);
    }
    Ok((tally, start.elapsed()))
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

/// CPU seconds (user, system) used by a process between two samples.
fn cpu_delta(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> (f64, f64) {
    match (before, after) {
        (Some((u0, s0)), Some((u1, s1))) => (u1 - u0, s1 - s0),
        _ => (f64::NAN, f64::NAN),
    }
}

/// The figures of one measured run.
struct Figures {
    requests: u64,
    accepted: u64,
    elapsed: Duration,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    rss_sampled_mib: f64,
    rss_hwm_mib: f64,
    server_cpu: (f64, f64),
    bench_cpu: (f64, f64),
    /// Machine-wide (busy, steal) CPU seconds during the run.
    machine_cpu: (f64, f64),
    /// The server's writes during the run (and [`WRITE_SETTLE`] after it).
    server_written: Option<WriteCounters>,
    /// The machine's logical CPUs, counted before `--client-cpus` narrowed this process.
    machine_cores: usize,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    /// The larger of VmHWM and the sampled VmRSS (the kernel updates VmHWM lazily, so a
    /// sample can exceed it by a few pages).
    fn peak_rss_mib(&self) -> f64 {
        self.rss_hwm_mib.max(self.rss_sampled_mib)
    }

    /// The server's `write_bytes` per accepted logout, in KiB.
    fn write_kib_per_accepted(&self) -> Option<f64> {
        let w = self.server_written?;
        (self.accepted > 0).then(|| w.to_disk as f64 / 1024.0 / self.accepted as f64)
    }

    fn cpu_pct(&self, (user, sys): (f64, f64)) -> f64 {
        100.0 * (user + sys) / self.elapsed.as_secs_f64()
    }

    /// CPU used by other processes during the run, in % of one core (noise in the figures).
    fn other_pct(&self) -> f64 {
        let ours = self.server_cpu.0 + self.server_cpu.1 + self.bench_cpu.0 + self.bench_cpu.1;
        (100.0 * (self.machine_cpu.0 - ours) / self.elapsed.as_secs_f64()).max(0.0)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn print_report(o: &Options, tally: &Tally, f: &Figures) {
    println!();
    println!("== results (measured phase) ==");
    println!("requests sent:      {}", f.requests);
    println!("accepted (200):     {}", f.accepted);
    for (status, n) in tally.statuses.iter().filter(|(s, _)| **s != 200) {
        println!("HTTP {status}:           {n}");
    }
    println!("transport errors:   {}", tally.errors);
    for (kind, example) in &tally.examples {
        println!("  example {kind}: {example}");
    }
    println!("elapsed:            {:.3} s", f.elapsed.as_secs_f64());
    println!("accepted/s:         {:.0}", f.rate());
    println!(
        "latency ms:         p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        f.p50, f.p90, f.p99, f.max
    );
    println!(
        "server RSS:         peak VmHWM {:.1} MiB, max sampled VmRSS {:.1} MiB",
        f.rss_hwm_mib, f.rss_sampled_mib
    );
    println!(
        "server CPU:         user {:.2} s + sys {:.2} s = {:.0}% of one core",
        f.server_cpu.0,
        f.server_cpu.1,
        f.cpu_pct(f.server_cpu)
    );
    println!(
        "load generator CPU: user {:.2} s + sys {:.2} s = {:.0}% of one core",
        f.bench_cpu.0,
        f.bench_cpu.1,
        f.cpu_pct(f.bench_cpu)
    );
    if let Some(w) = f.server_written {
        println!(
            "server disk writes: {:.1} MiB write_bytes ({:.2} KiB per accepted logout; WAL and \
             database together)",
            w.to_disk as f64 / 1048576.0,
            f.write_kib_per_accepted().unwrap_or(f64::NAN)
        );
        println!(
            "server write calls: {:.1} MiB wchar ({:.2} KiB per request; WAL, checkpoints and \
             responses)",
            w.passed as f64 / 1048576.0,
            w.passed as f64 / 1024.0 / f.requests.max(1) as f64
        );
    }
    let cores = f.machine_cores;
    println!(
        "machine CPU:        {:.0}% busy of {}00% (other processes {:.0}%, steal {:.0}%)",
        100.0 * f.machine_cpu.0 / f.elapsed.as_secs_f64(),
        cores,
        f.other_pct(),
        100.0 * f.machine_cpu.1 / f.elapsed.as_secs_f64()
    );
    if f.other_pct() > 20.0 {
        println!("WARNING:            other processes used CPU during the run; figures are noisy");
    }
    println!();
    println!("== targets (issue) ==");
    println!(
        ">= {TARGET_RATE:.0} accepted/s at concurrency 64: {} ({:.0}/s at concurrency {})",
        verdict(f.rate() >= TARGET_RATE && o.concurrency == 64),
        f.rate(),
        o.concurrency
    );
    println!(
        "p99 < {TARGET_P99_MS} ms: {} ({:.2} ms)",
        verdict(f.p99 < TARGET_P99_MS),
        f.p99
    );
    println!(
        "server RSS < {TARGET_RSS_MIB} MiB: {} ({:.1} MiB)",
        verdict(f.peak_rss_mib() < TARGET_RSS_MIB),
        f.peak_rss_mib()
    );
    println!();
    println!(
        "table head: | C | requests | accepted | elapsed s | accepted/s | p50 ms | p90 ms | p99 ms \
         | max ms | peak RSS MiB | write KiB/accepted | server CPU | generator CPU | other CPU |"
    );
    println!(
        "table row: | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.0}% | {:.0}% | {:.0}% |",
        o.concurrency,
        f.requests,
        f.accepted,
        f.elapsed.as_secs_f64(),
        f.rate(),
        f.p50,
        f.p90,
        f.p99,
        f.max,
        f.peak_rss_mib(),
        f.write_kib_per_accepted().unwrap_or(f64::NAN),
        f.cpu_pct(f.server_cpu),
        f.cpu_pct(f.bench_cpu),
        f.other_pct(),
    );
}

/// Counts the store's `accepted` rows and all rows.
async fn count_rows(url: &str) -> anyhow::Result<(i64, i64)> {
    use logout_ledger::store::{AuditStore, EventFilter, KindFilter, Outcome};
    let reader = AuditStore::open_reader(url)
        .await
        .with_context(|| format!("open {url}"))?;
    let all = EventFilter {
        kind: KindFilter::All,
        ..EventFilter::default()
    };
    let accepted = EventFilter {
        outcome: Some(Outcome::Accepted),
        ..EventFilter::default()
    };
    Ok((reader.count(&accepted).await?, reader.count(&all).await?))
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    support::main_with(async { run().await.map(|()| true) })
}

fn print_header(o: &Options) {
    println!("== logout-ledger load benchmark ==");
    println!(
        "command:  CARGO_TARGET_DIR=/work/target-bench cargo bench --bench load -- \
         --requests {} --concurrency {} --warmup {} --time-limit {}",
        o.requests,
        o.concurrency,
        o.warmup,
        o.time_limit.as_secs()
    );
    let argv: Vec<String> = std::env::args().collect();
    println!("argv:     {}", argv.join(" "));
    println!(
        "pinning:  server CPUs {}, load generator CPUs {}",
        o.server_cpus.as_deref().unwrap_or("any"),
        o.client_cpus.as_deref().unwrap_or("any")
    );
    println!(
        "source:   {} ({})",
        source_revision(),
        env!("CARGO_MANIFEST_DIR")
    );
    for (k, v) in machine_facts() {
        println!("{k:<9} {v}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("unix time {now}");
}

async fn run() -> anyhow::Result<()> {
    let o = parse_args()?;
    print_header(&o);

    let issuer = LocalIssuer::start()
        .await
        .context("start the local issuer")?;
    let total = o.warmup + o.requests;
    let t = Instant::now();
    let mut bodies = tokio::task::block_in_place(|| mint_bodies(&issuer, total))?;
    println!(
        "minted:   {total} RS256 tokens in {:.1} s (body ~{} bytes)",
        t.elapsed().as_secs_f64(),
        bodies.first().map_or(0, String::len)
    );
    let measured = bodies.split_off(o.warmup);
    let warmup = bodies;
    let machine_cores = cores();
    if let Some(cpus) = &o.client_cpus {
        pin_self(cpus)?;
        println!("client:   load generator pinned to CPU(s) {cpus}");
    }

    let store = create_store(&o).await?;
    // An existing store (`--sqlite-file`) already holds records: the durability check counts
    // what this run added.
    let (accepted_before, _) = match o.sqlite_file {
        Some(_) => count_rows(&store.url).await?,
        None => (0, 0),
    };
    if accepted_before > 0 {
        println!(
            "store:    {} holds {accepted_before} accepted rows before the run",
            store.url
        );
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("build the HTTP client")?;
    // The first replica migrates the store; the others start after it.
    let mut servers = Vec::with_capacity(o.replicas);
    for _ in 0..o.replicas {
        let mut server = spawn_server(issuer.issuer(), &store, &o)?;
        wait_ready(&mut server, &client, &o).await?;
        servers.push(server);
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("{}/backchannel-logout", s.base))
        .collect();
    println!("store:    {} ({} replica(s))", store.url, o.replicas);

    let (warm, _) = drive(&client, &urls, warmup, o.concurrency, o.time_limit).await?;
    println!(
        "warm-up:  {} requests, {} accepted",
        warm.answered() + warm.errors,
        warm.ok()
    );

    let server = &servers[0];
    let sampler = RssSampler::start(&server.pid);
    let server_cpu0: Vec<_> = servers.iter().map(|s| proc_cpu_secs(&s.pid)).collect();
    let bench_cpu0 = proc_cpu_secs("self");
    let machine_cpu0 = machine_cpu_secs();
    let written0 = WriteCounters::read(&server.pid);
    let (mut tally, elapsed) = drive(&client, &urls, measured, o.concurrency, o.time_limit).await?;
    // All replicas together (RSS below is the first replica's).
    let server_cpu = servers
        .iter()
        .zip(server_cpu0)
        .map(|(s, before)| cpu_delta(before, proc_cpu_secs(&s.pid)))
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let bench_cpu = cpu_delta(bench_cpu0, proc_cpu_secs("self"));
    let machine_cpu = cpu_delta(machine_cpu0, machine_cpu_secs());
    let rss_sampled = sampler.finish();
    tokio::time::sleep(WRITE_SETTLE).await;
    let server_written = WriteCounters::read(&server.pid)
        .zip(written0)
        .map(|(after, before)| after.since(before));
    let hwm = proc_status_kib(&server.pid, "VmHWM").context("read the server's VmHWM")?;
    if elapsed >= o.time_limit {
        println!("note:     stopped at the {:?} time limit", o.time_limit);
    }

    tally.latencies_us.sort_unstable();
    let l = &tally.latencies_us;
    let figures = Figures {
        requests: tally.answered() + tally.errors,
        accepted: tally.ok(),
        elapsed,
        p50: quantile_ms(l, 0.50),
        p90: quantile_ms(l, 0.90),
        p99: quantile_ms(l, 0.99),
        max: quantile_ms(l, 1.0),
        rss_sampled_mib: rss_sampled as f64 / 1024.0,
        rss_hwm_mib: hwm as f64 / 1024.0,
        server_cpu,
        bench_cpu,
        machine_cpu,
        server_written,
        machine_cores,
    };
    print_report(&o, &tally, &figures);

    drop(client);
    println!();
    println!("== durability ==");
    let mut all_exited = true;
    for server in &mut servers {
        let exit_timeout = if o.server_wrapper.is_empty() {
            EXIT_TIMEOUT
        } else {
            EXIT_TIMEOUT * WRAPPED_SLOWDOWN
        };
        let (status, took) = server.stop(exit_timeout).await?;
        println!(
            "server exit after SIGTERM: {status} in {:.2} s",
            took.as_secs_f64()
        );
        all_exited &= status.success();
    }
    let (accepted_rows, all_rows) = count_rows(&store.url).await?;
    let accepted_rows = accepted_rows - accepted_before;
    let answered_ok = warm.ok() + tally.ok();
    let sent = warm.answered() + warm.errors + tally.answered() + tally.errors;
    println!(
        "store: {accepted_rows} accepted rows ({all_rows} rows in all) for {answered_ok} \
         answers 200 ({sent} requests incl. warm-up)"
    );
    if o.keep_db || o.sqlite_file.is_some() {
        println!("store kept at {}", store.url);
    } else {
        store.remove().await?;
    }
    ensure!(all_exited, "a server exited with an error");
    ensure!(
        u64::try_from(accepted_rows).ok() == Some(answered_ok),
        "DURABILITY MISMATCH: {answered_ok} requests were answered 200 but the store holds \
         {accepted_rows} accepted rows"
    );
    println!("durability: ok (every 200 has its accepted row)");
    Ok(())
}
