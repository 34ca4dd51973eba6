//! Slow-client benchmark: 1,000 connections from 127.0.0.1 that each send one header byte
//! every 5 s (a slowloris), while valid logouts arrive from 127.0.0.2, against the real
//! release-built `logout-ledger serve` with its default connection limits.
//!
//! What it does, in order:
//! 1. starts an in-process issuer ([`LocalIssuer`]) and mints the valid tokens before timing;
//! 2. spawns the server binary (default limits: header timeout 10 s, 128 connections per
//!    source, 4,096 per listener) with `--metrics-listen`, and waits for `GET /readyz` from
//!    127.0.0.2 (so 127.0.0.1 starts with no connection open);
//! 3. opens the slow connections at once and sends their bytes; meanwhile posts one valid
//!    logout every 50 ms from 127.0.0.2;
//! 4. records when each slow connection was closed (within 1 s of connecting: refused at
//!    accept; else by the header timeout), every logout's status and latency, the server's
//!    connection counters and its peak memory; stops the server with SIGTERM.
//!
//! It fails (exit 1) if a logout is not answered 200 within 1 s or a slow connection outlives
//! header timeout + 1 s. Bounded: at most about 40 s in all.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-bench cargo bench --bench slow_clients` (needs
//! `ulimit -n` ≥ 2048: one descriptor per slow connection). Figures: `docs/performance.md`.

#[path = "support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use logout_ledger::local_issuer::LocalIssuer;
use support::{AUDIENCE, Server, cores, cpu_model, post_form, proc_status_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Slow connections opened from 127.0.0.1.
const SLOW_CONNECTIONS: usize = 1_000;
/// Time between two header bytes of a slow connection.
const BYTE_EVERY: Duration = Duration::from_secs(5);
/// The server's default header-read timeout (not configured here).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A slow connection closed within this time of connecting counts as refused at accept.
const AT_ONCE: Duration = Duration::from_secs(1);
/// A slow connection still open this long after connecting is given up on (a failure).
const SLOW_GIVE_UP: Duration = Duration::from_secs(25);
/// Time between two valid logouts.
const LOGOUT_EVERY: Duration = Duration::from_millis(50);
/// How long a valid logout may take.
const LOGOUT_LIMIT: Duration = Duration::from_secs(1);
/// Valid logouts also run this long after the last slow connection has ended.
const TAIL: Duration = Duration::from_secs(1);
/// Hard bound on the measured phase.
const TIME_LIMIT: Duration = Duration::from_secs(32);
/// How long the server may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Loopback address of the slow clients.
const SLOW_SOURCE: [u8; 4] = [127, 0, 0, 1];
/// Loopback address of the valid logouts.
const GOOD_SOURCE: [u8; 4] = [127, 0, 0, 2];

/// A valid form body with a fresh `jti` and `sid`, good for an hour.
fn logout_body(issuer: &LocalIssuer) -> anyhow::Result<String> {
    support::logout_body(issuer, &support::fresh_claims(issuer)?)
}

/// What happened to one slow connection.
#[derive(Debug, Clone, Copy)]
enum Slow {
    /// Could not connect at all.
    ConnectFailed,
    /// Closed by the server this long after connecting.
    Closed(Duration),
    /// Still open at [`SLOW_GIVE_UP`].
    StillOpen,
}

/// One slowloris connection: a header byte every [`BYTE_EVERY`] until the server closes it.
async fn slow_client(server: SocketAddr) -> Slow {
    let Ok(socket) = TcpSocket::new_v4() else {
        return Slow::ConnectFailed;
    };
    if socket.bind(SocketAddr::from((SLOW_SOURCE, 0))).is_err() {
        return Slow::ConnectFailed;
    }
    let Ok(mut stream) = socket.connect(server).await else {
        return Slow::ConnectFailed;
    };
    let start = Instant::now();
    let header = b"POST /backchannel-logout HTTP/1.1\r\nHost: bench\r\n";
    let mut buf = [0u8; 512];
    for (sent, byte) in (1u32..).zip(header.iter().cycle()) {
        if stream.write_all(&[*byte]).await.is_err() {
            return Slow::Closed(start.elapsed());
        }
        let until = (start + BYTE_EVERY * sent).min(start + SLOW_GIVE_UP);
        loop {
            let read = tokio::time::timeout_at(until.into(), stream.read(&mut buf)).await;
            match read {
                Ok(Ok(0) | Err(_)) => return Slow::Closed(start.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
        if start.elapsed() >= SLOW_GIVE_UP {
            return Slow::StillOpen;
        }
    }
    Slow::StillOpen
}

/// One valid logout's status and latency.
#[derive(Debug, Clone, Copy)]
struct Logout {
    status: u16,
    latency: Duration,
}

/// Posts one prepared body every [`LOGOUT_EVERY`] until `stop` turns true.
async fn logouts(
    client: reqwest::Client,
    url: String,
    bodies: Vec<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Logout> {
    let mut out = Vec::with_capacity(bodies.len());
    let mut tick = tokio::time::interval(LOGOUT_EVERY);
    for body in bodies {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let start = Instant::now();
        let sent = post_form(&client, &url, body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let status = match sent {
            Ok(r) => {
                let s = r.status().as_u16();
                let _ = r.bytes().await;
                s
            }
            Err(_) => 0,
        };
        out.push(Logout {
            status,
            latency: start.elapsed(),
        });
    }
    out
}

/// The value of one metrics series.
fn series(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The server's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib(pid: &str) -> Option<f64> {
    proc_status_kib(pid, "VmHWM").map(|kib| kib as f64 / 1024.0)
}

/// The server's SQLite file, removed (with its WAL files) when dropped.
struct DbFile(PathBuf);

impl Drop for DbFile {
    fn drop(&mut self) {
        support::remove_sqlite_files(&self.0);
    }
}

async fn run() -> anyhow::Result<bool> {
    println!(
        "slow_clients: {SLOW_CONNECTIONS} connections from 127.0.0.1, one header byte every {}s; valid logouts from 127.0.0.2 every {} ms",
        BYTE_EVERY.as_secs(),
        LOGOUT_EVERY.as_millis()
    );
    println!("machine:  {} ({} logical CPUs)", cpu_model(), cores());
    let issuer = LocalIssuer::start().await?;
    let (port, metrics_port) = (support::free_port()?, support::free_port()?);
    // Declared before the server, so dropped after it: the files go once it has been killed.
    let db = DbFile(support::fresh_db_path("slow")?);
    let args = [
        "serve".to_owned(),
        "--issuer".into(),
        issuer.issuer().to_owned(),
        "--audience".into(),
        AUDIENCE.into(),
        "--allow-insecure-http".into(),
        "--max-token-age".into(),
        "3600".into(),
        "--database".into(),
        format!("sqlite://{}", db.0.display()),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
    ];
    let mut server = Server::spawn(support::release_binary(), &args, port)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let good = reqwest::Client::builder()
        .local_address(IpAddr::from(GOOD_SOURCE))
        .build()?;
    server.wait_ready(&good).await?;
    let count = (TIME_LIMIT.as_millis() / LOGOUT_EVERY.as_millis()) as usize + 1;
    let bodies = (0..count + 1)
        .map(|_| logout_body(&issuer))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (warm, bodies) = bodies.split_first().context("bodies")?;
    let url = format!("http://{addr}/backchannel-logout");
    let warm = post_form(&good, &url, warm.clone()).send().await?;
    ensure!(warm.status() == 200, "warm-up logout: {}", warm.status());

    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let driver = tokio::spawn(logouts(good.clone(), url, bodies.to_vec(), stop_rx));
    let slow: Vec<_> = (0..SLOW_CONNECTIONS)
        .map(|_| tokio::spawn(slow_client(addr)))
        .collect();
    let mut outcomes = Vec::with_capacity(SLOW_CONNECTIONS);
    let all_slow = async {
        for s in slow {
            outcomes.push(s.await.unwrap_or(Slow::ConnectFailed));
        }
    };
    tokio::time::timeout(TIME_LIMIT, all_slow)
        .await
        .context("slow connections outlived the time limit")?;
    let slow_done = started.elapsed();
    tokio::time::sleep(TAIL).await;
    let _ = stop_tx.send(true);
    let logouts = driver.await?;
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await?
        .text()
        .await?;
    let rss = peak_rss_mib(&server.pid);
    let exit = server.stop(EXIT_TIMEOUT).await;

    // Figures.
    let refused: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| match o {
            Slow::Closed(d) if *d < AT_ONCE => Some(*d),
            _ => None,
        })
        .collect();
    let mut later: Vec<Duration> = outcomes
        .iter()
        .filter_map(|o| match o {
            Slow::Closed(d) if *d >= AT_ONCE => Some(*d),
            _ => None,
        })
        .collect();
    later.sort();
    let still_open = outcomes
        .iter()
        .filter(|o| matches!(o, Slow::StillOpen))
        .count();
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Slow::ConnectFailed))
        .count();
    let mut latencies: Vec<Duration> = logouts.iter().map(|l| l.latency).collect();
    latencies.sort();
    let not_200 = logouts.iter().filter(|l| l.status != 200).count();
    let slow_logouts = latencies.iter().filter(|l| **l > LOGOUT_LIMIT).count();
    let refused_metric = series(
        &metrics,
        "logout_ledger_connections_refused_total{listener=\"public\",cap=\"source\"}",
    );
    let header_metric = series(
        &metrics,
        "logout_ledger_connections_timed_out_total{listener=\"public\",timeout=\"header\"}",
    );
    println!();
    println!(
        "slow connections ({SLOW_CONNECTIONS}, all ended {:.1} s after the start):",
        slow_done.as_secs_f64()
    );
    println!(
        "  closed within {} s of connecting (refused at accept): {} (server: refused by the per-source cap {})",
        AT_ONCE.as_secs(),
        refused.len(),
        refused_metric.map_or("?".into(), |n| n.to_string())
    );
    println!(
        "  closed later: {} (server: closed by the header timeout {}), after min {:.2} s / median {:.2} s / max {:.2} s of connecting",
        later.len(),
        header_metric.map_or("?".into(), |n| n.to_string()),
        quantile(&later, 0.0).as_secs_f64(),
        quantile(&later, 0.5).as_secs_f64(),
        quantile(&later, 1.0).as_secs_f64(),
    );
    println!(
        "  still open after {} s: {still_open}; could not connect: {failed}",
        SLOW_GIVE_UP.as_secs()
    );
    println!(
        "valid logouts from 127.0.0.2: {} sent, {} not 200; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; over {} s: {}",
        logouts.len(),
        not_200,
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(quantile(&latencies, 1.0)),
        LOGOUT_LIMIT.as_secs(),
        slow_logouts
    );
    println!(
        "server:   peak RSS {}; exit after SIGTERM: {}",
        rss.map_or("?".into(), |r| format!("{r:.1} MiB")),
        match exit {
            Ok((s, _)) => s.to_string(),
            _ => "did not exit in 10 s".into(),
        }
    );
    let max_close = quantile(&later, 1.0);
    let ok = not_200 == 0
        && slow_logouts == 0
        && !logouts.is_empty()
        && still_open == 0
        && failed == 0
        && max_close <= HEADER_TIMEOUT + Duration::from_secs(1);
    println!(
        "verdict:  {}",
        if ok {
            "PASS (every logout 200 within 1 s; every slow connection closed at accept or within header timeout + 1 s)"
        } else {
            "FAIL"
        }
    );
    Ok(ok)
}

fn main() -> std::process::ExitCode {
    support::main_with(run())
}
