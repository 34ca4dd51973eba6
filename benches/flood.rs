//! Flood benchmark: what anonymous junk costs while real logouts keep arriving. Drives the
//! release `logout-ledger serve` binary over loopback (started as `benches/load.rs` does: an
//! in-process issuer, a fresh store, the real process) and reports the valid logouts' latency,
//! the junk rate, the store's growth and the server's peak memory, then checks that every
//! request is in the chain, one by one or counted in a `rejections_suppressed` record.
//!
//! For `--seconds` (30): `--sources` (256) client addresses 127.0.0.x, each with its own
//! sockets, send ~60 KiB junk tokens from `--junk-workers` (64) concurrent loops as fast as the
//! machine allows, while valid logouts arrive at `--valid-rate` (100) per second from 127.0.1.1
//! on a fixed schedule (each sent at its time, whatever the previous one's latency).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench flood` (flags after `--`:
//! `--seconds N --sources N --junk-workers N --valid-rate N --junk-kib N --postgres ADMIN_URL
//! --keep-db`). See `docs/performance.md` for measured figures.

#[path = "support/mod.rs"]
mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use logout_ledger::local_issuer::LocalIssuer;
use logout_ledger::store::{AuditStore, EventFilter, KindFilter, Order};
use serde_json::json;
use support::{
    REQUEST_TIMEOUT, RssSampler, Server, Store, cores, cpu_model, machine_cpu_secs, post_form,
    proc_cpu_secs, proc_status_kib, quantile_ms,
};

/// How long the server may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Where the valid logouts come from.
const VALID_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);

/// Targets from the issue.
const TARGET_P99_MS: f64 = 100.0;
const TARGET_GROWTH_MB: f64 = 20.0;
const TARGET_RSS_MIB: f64 = 150.0;

#[derive(Debug, Clone)]
struct Options {
    seconds: u64,
    sources: usize,
    junk_workers: usize,
    valid_rate: u64,
    junk_kib: usize,
    postgres: Option<String>,
    keep_db: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        seconds: 30,
        sources: 256,
        junk_workers: 64,
        valid_rate: 100,
        junk_kib: 60,
        postgres: None,
        keep_db: false,
    };
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
            "--seconds" => o.seconds = value("--seconds")?,
            "--sources" => o.sources = usize::try_from(value("--sources")?)?,
            "--junk-workers" => o.junk_workers = usize::try_from(value("--junk-workers")?)?,
            "--valid-rate" => o.valid_rate = value("--valid-rate")?,
            "--junk-kib" => o.junk_kib = usize::try_from(value("--junk-kib")?)?,
            "--postgres" => o.postgres = Some(args.next().context("--postgres needs a URL")?),
            "--keep-db" => o.keep_db = true,
            other => bail!(
                "unknown argument {other:?}; flags: --seconds N --sources N --junk-workers N \
                 --valid-rate N --junk-kib N --postgres ADMIN_URL --keep-db"
            ),
        }
    }
    ensure!((1..=600).contains(&o.seconds), "--seconds must be 1..=600");
    ensure!((1..=256).contains(&o.sources), "--sources must be 1..=256");
    ensure!(
        o.junk_workers <= 1024,
        "--junk-workers must be 0..=1024 (0: valid logouts only)"
    );
    ensure!(
        (1..=1000).contains(&o.valid_rate),
        "--valid-rate must be 1..=1000"
    );
    ensure!((1..=63).contains(&o.junk_kib), "--junk-kib must be 1..=63");
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// The server process and its store
// ---------------------------------------------------------------------------------------------

/// Flood-only measurements of the store.
impl Store {
    /// Folds a SQLite store's WAL into the file (run once the server has exited), so its size
    /// is the data's, not the WAL's high-water mark.
    async fn checkpoint(&self) -> anyhow::Result<()> {
        if self.file.is_some() {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        Ok(())
    }

    /// The store's size in bytes: the SQLite file with its WAL, or the database's size.
    async fn size(&self) -> anyhow::Result<u64> {
        if let Some(file) = &self.file {
            return Ok(["", "-wal"]
                .iter()
                .filter_map(|s| {
                    let mut p = file.clone().into_os_string();
                    p.push(s);
                    std::fs::metadata(p).ok().map(|m| m.len())
                })
                .sum());
        }
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await?;
        Ok(u64::try_from(size).unwrap_or(0))
    }
}

/// User + system CPU seconds of a process (0 when unreadable).
fn cpu_secs(pid: &str) -> f64 {
    proc_cpu_secs(pid).map_or(0.0, |(user, sys)| user + sys)
}

/// Busy CPU seconds of the whole machine (every core; 0 when unreadable).
fn machine_busy_secs() -> f64 {
    machine_cpu_secs().map_or(0.0, |(busy, _)| busy)
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

fn client_from(ip: IpAddr) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(ip)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// A ~`kib` KiB junk form body: three dot-separated runs of base64url-looking bytes (decodes
/// to nothing that is JSON), different for each `seed`.
fn junk_body(kib: usize, seed: u64) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = kib * 1024 - "logout_token=".len();
    let mut token: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize]
        })
        .collect();
    token[n / 3] = b'.';
    token[2 * n / 3] = b'.';
    format!("logout_token={}", String::from_utf8_lossy(&token))
}

#[derive(Debug, Default)]
struct JunkTally {
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

/// One junk loop: cycles through its share of the source clients until the deadline.
async fn junk_worker(
    url: Arc<str>,
    clients: Vec<reqwest::Client>,
    bodies: Arc<Vec<String>>,
    deadline: Instant,
) -> JunkTally {
    let mut t = JunkTally::default();
    let mut i = 0usize;
    while Instant::now() < deadline && !clients.is_empty() {
        let client = &clients[i % clients.len()];
        let body = bodies[i % bodies.len()].clone();
        i += 1;
        let sent = post_form(client, &url, body).send().await;
        match sent {
            Ok(r) => {
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                *t.statuses.entry(status).or_default() += 1;
            }
            Err(_) => t.errors += 1,
        }
    }
    t
}

/// Valid logouts on a fixed schedule: the `k`-th leaves at `start + k / rate`, each on its own
/// task; returns (latencies in µs, 200s, other answers, transport errors).
async fn valid_sender(
    url: Arc<str>,
    client: reqwest::Client,
    bodies: Vec<String>,
    rate: u64,
) -> anyhow::Result<(Vec<u64>, u64, u64, u64)> {
    let start = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(bodies.len());
    for (k, body) in bodies.into_iter().enumerate() {
        tokio::time::sleep_until(start + period * u32::try_from(k)?).await;
        let (client, url) = (client.clone(), Arc::clone(&url));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = post_form(&client, &url, body).send().await;
            match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    Some((status, t.elapsed().as_micros() as u64))
                }
                Err(_) => None,
            }
        }));
    }
    let (mut latencies, mut ok, mut other, mut errors) = (Vec::new(), 0, 0, 0);
    for t in tasks {
        match t.await? {
            Some((200, us)) => {
                ok += 1;
                latencies.push(us);
            }
            Some((_, us)) => {
                other += 1;
                latencies.push(us);
            }
            None => errors += 1,
        }
    }
    Ok((latencies, ok, other, errors))
}

/// `n` valid logout bodies, one user (`sub`) each.
fn mint(issuer: &LocalIssuer, n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|i| {
            let mut claims = support::fresh_claims(issuer)?;
            claims.insert("sub".into(), json!(format!("auth0|flood-{i}")));
            support::logout_body(issuer, &claims)
        })
        .collect()
}

/// Logout rows, and the requests counted in `rejections_suppressed` records.
async fn accounted(url: &str) -> anyhow::Result<(u64, u64, usize)> {
    let reader = AuditStore::open_reader(url).await?;
    let logouts = u64::try_from(reader.count(&EventFilter::default()).await?)?;
    let mut counted = 0;
    let mut records = 0;
    let mut after = None;
    loop {
        let page = reader
            .query(&EventFilter {
                kind: KindFilter::System,
                order: Order::Asc,
                limit: 1000,
                after,
                ..EventFilter::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for r in &page {
            if r.action.as_deref() == Some("rejections_suppressed") {
                records += 1;
                counted += r
                    .details
                    .as_ref()
                    .and_then(|d| d["count"].as_u64())
                    .unwrap_or(0);
            }
        }
    }
    Ok((logouts, counted, records))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

async fn run() -> anyhow::Result<()> {
    let o = parse_args()?;
    println!("== logout-ledger flood benchmark ==");
    println!(
        "command:  cargo bench --bench flood -- --seconds {} --sources {} --junk-workers {} \
         --valid-rate {} --junk-kib {}{}",
        o.seconds,
        o.sources,
        o.junk_workers,
        o.valid_rate,
        o.junk_kib,
        o.postgres
            .as_ref()
            .map_or(String::new(), |p| format!(" --postgres {p}"))
    );
    println!("machine:  {} ({} cores)", cpu_model(), cores());

    let issuer = LocalIssuer::start().await.context("start the issuer")?;
    let n_valid = usize::try_from(o.seconds * o.valid_rate)?;
    let t = Instant::now();
    let valid_bodies = tokio::task::block_in_place(|| mint(&issuer, n_valid))?;
    println!(
        "minted:   {n_valid} valid tokens in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let junk: Arc<Vec<String>> = Arc::new((0..16).map(|s| junk_body(o.junk_kib, s)).collect());

    let store = Store::create("flood", o.postgres.as_deref()).await?;
    let probe = reqwest::Client::new();
    let port = support::free_port()?;
    let args = support::serve_args(issuer.issuer(), &store.url, port, &[]);
    let mut server = Server::spawn(support::release_binary(), &args, port)?;
    server.wait_ready(&probe).await?;
    let size0 = store.size().await?;
    let url: Arc<str> = Arc::from(format!("{}/backchannel-logout", server.base).as_str());

    let sources: Vec<IpAddr> = (0..o.sources)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(i).unwrap_or(u8::MAX))))
        .collect();
    let clients: Vec<reqwest::Client> = sources
        .iter()
        .map(|ip| client_from(*ip))
        .collect::<anyhow::Result<_>>()?;
    let mut shares = vec![Vec::new(); o.junk_workers];
    for (i, c) in clients.into_iter().enumerate() {
        if let Some(share) = shares.get_mut(i % o.junk_workers.max(1)) {
            share.push(c);
        }
    }

    let sampler = RssSampler::start(&server.pid);

    let cpu0 = (cpu_secs(&server.pid), cpu_secs("self"), machine_busy_secs());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.seconds);
    let junk_tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            tokio::spawn(junk_worker(
                Arc::clone(&url),
                share,
                Arc::clone(&junk),
                deadline,
            ))
        })
        .collect();
    let valid = tokio::spawn(valid_sender(
        Arc::clone(&url),
        client_from(IpAddr::V4(VALID_SOURCE))?,
        valid_bodies,
        o.valid_rate,
    ));
    let mut junk_tally = JunkTally::default();
    for t in junk_tasks {
        let t = t.await?;
        for (s, n) in t.statuses {
            *junk_tally.statuses.entry(s).or_default() += n;
        }
        junk_tally.errors += t.errors;
    }
    let (mut latencies, valid_ok, valid_other, valid_errors) = valid.await??;
    let junk_elapsed = started.elapsed().as_secs_f64();
    let cpu = [
        cpu_secs(&server.pid) - cpu0.0,
        cpu_secs("self") - cpu0.1,
        machine_busy_secs() - cpu0.2,
    ]
    .map(|s| 100.0 * s / junk_elapsed);
    let peak = sampler.finish();
    let hwm = proc_status_kib(&server.pid, "VmHWM").unwrap_or(0);
    let rss_mib = peak.max(hwm) as f64 / 1024.0;
    let (status, _) = server.stop(EXIT_TIMEOUT).await?;
    let size_with_wal = store.size().await?;
    store.checkpoint().await?;
    let size1 = store.size().await?;
    let (logouts, counted, suppressed_records) = accounted(&store.url).await?;

    latencies.sort_unstable();
    let junk_answered: u64 = junk_tally.statuses.values().sum();
    let p99 = quantile_ms(&latencies, 0.99);
    let growth_mb = (size1.saturating_sub(size0)) as f64 / 1e6;
    println!();
    println!("== results ({:.1} s) ==", junk_elapsed);
    println!(
        "junk:     {junk_answered} answered ({:.0}/s, {:.1} MB/s of bodies), statuses {:?}, {} transport errors",
        junk_answered as f64 / junk_elapsed,
        junk_answered as f64 * (o.junk_kib * 1024) as f64 / junk_elapsed / 1e6,
        junk_tally.statuses,
        junk_tally.errors
    );
    println!(
        "valid:    {valid_ok} of {n_valid} answered 200 ({valid_other} other answers, {valid_errors} errors); \
         p50 {:.1} ms, p90 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        quantile_ms(&latencies, 0.5),
        quantile_ms(&latencies, 0.9),
        quantile_ms(&latencies, 1.0)
    );
    println!(
        "store:    {:.2} MB -> {:.2} MB (growth {growth_mb:.2} MB; {:.2} MB on disk with the WAL \
         before a checkpoint); {logouts} logout rows, {counted} requests counted in \
         {suppressed_records} rejections_suppressed records",
        size0 as f64 / 1e6,
        size1 as f64 / 1e6,
        size_with_wal as f64 / 1e6
    );
    println!("server:   peak RSS {rss_mib:.1} MiB; exit {status}");
    println!(
        "CPU:      server {:.0}%, load generator {:.0}%, whole machine {:.0}% (of {} cores: 100% = one)",
        cpu[0],
        cpu[1],
        cpu[2],
        cores()
    );
    println!();
    let all_valid = valid_ok == n_valid as u64;
    println!(
        "target valid p99 < {TARGET_P99_MS} ms: {}",
        verdict(p99 < TARGET_P99_MS)
    );
    println!("target every valid logout 200: {}", verdict(all_valid));
    println!(
        "target store growth < {TARGET_GROWTH_MB} MB: {}",
        verdict(growth_mb < TARGET_GROWTH_MB)
    );
    println!(
        "target peak RSS < {TARGET_RSS_MIB} MiB: {}",
        verdict(rss_mib < TARGET_RSS_MIB)
    );
    // A request the client gave up on (transport error) may or may not have reached the server.
    let sent = junk_answered + valid_ok + valid_other;
    let unanswered = junk_tally.errors + valid_errors;
    let in_chain = logouts + counted;
    let balanced = (sent..=sent + unanswered).contains(&in_chain);
    println!(
        "accounted: {logouts} rows + {counted} counted = {in_chain} for {sent} answered \
         requests (+{unanswered} unanswered): {}",
        verdict(balanced)
    );
    if o.keep_db {
        println!("store kept at {}", store.url);
    } else {
        store.remove().await?;
    }
    ensure!(status.success(), "the server exited with an error");
    ensure!(
        balanced,
        "ACCOUNTING MISMATCH: {sent} answered (+{unanswered} unanswered) requests, \
         {logouts} rows + {counted} counted"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    support::main_with(async { run().await.map(|()| true) })
}
