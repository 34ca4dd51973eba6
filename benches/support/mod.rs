//! Support code shared by the load benchmarks (`load`, `flood`, `slow_clients`): the server
//! process and its store, `/proc` readers, token bodies, percentiles and the runtime.
//!
//! Included by each bench with `#[path = "support/mod.rs"] mod support;`. Each bench is its own
//! crate and uses a subset of this module, so unused items are allowed here.
#![allow(dead_code)]

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use logout_ledger::local_issuer::LocalIssuer;
use serde_json::{Map, Value, json};

/// The audience the server is configured for and the tokens carry.
pub(crate) const AUDIENCE: &str = "bench";
/// How long a minted token stays valid, and the `--max-token-age` the server is given.
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 3600;
/// How long the server may take to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-request timeout, so a stuck request cannot hold a benchmark past its time limit.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`RssSampler`] reads the server's resident memory.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Linux reports `/proc/*/stat` CPU times in USER_HZ ticks, 100 per second on every
/// mainstream architecture.
pub(crate) const USER_HZ: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// The runtime
// ---------------------------------------------------------------------------------------------

/// Runs a bench's `run` on a multi-threaded runtime: exit 0 on `Ok(true)`, 1 otherwise (an
/// error is printed as `error: ...`).
pub(crate) fn main_with(run: impl Future<Output = anyhow::Result<bool>>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Machine facts and /proc readers
// ---------------------------------------------------------------------------------------------

/// Logical CPUs available to this process (0 when unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The CPU model from `/proc/cpuinfo` (as `lscpu` names it), or `unknown`.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned())
}

/// Reads a `Key: value kB` line (as in `/proc/meminfo` or `/proc/<pid>/status`), in KiB.
pub(crate) fn kib_field(path: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Reads one field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub(crate) fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    kib_field(&format!("/proc/{pid}/status"), key)
}

/// User and system CPU seconds of a process (`self` for this one), from `/proc/<pid>/stat`.
pub(crate) fn proc_cpu_secs(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After `)`: state is field 3, so utime (14) and stime (15) are at indices 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / USER_HZ, stime / USER_HZ))
}

/// Machine-wide busy and steal CPU seconds so far (all cores), from `/proc/stat`.
pub(crate) fn machine_cpu_secs() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum::<f64>();
    let steal = ticks.get(7).copied().unwrap_or(0.0);
    Some((busy / USER_HZ, steal / USER_HZ))
}

/// Samples a process's resident memory every [`SAMPLE_EVERY`] on a plain thread.
pub(crate) struct RssSampler {
    /// Set to end the sampling thread.
    stop: Arc<AtomicBool>,
    /// The largest VmRSS seen so far, in KiB.
    max_kib: Arc<AtomicU64>,
    /// The sampling thread.
    thread: JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `/proc/<pid>/status`.
    pub(crate) fn start(pid: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kib = Arc::new(AtomicU64::new(0));
        let (s, m, pid) = (Arc::clone(&stop), Arc::clone(&max_kib), pid.to_owned());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = proc_status_kib(&pid, "VmRSS") {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Self {
            stop,
            max_kib,
            thread,
        }
    }

    /// Stops sampling and returns the largest VmRSS seen, in KiB.
    pub(crate) fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.max_kib.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

/// The `q` quantile (0..=1) of sorted latencies in microseconds, in milliseconds (nearest
/// rank; NaN when there are none).
pub(crate) fn quantile_ms<T: Copy + Into<u64>>(sorted_us: &[T], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1].into() as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Tokens and requests
// ---------------------------------------------------------------------------------------------

/// The issuer's default claims for [`AUDIENCE`], expiring [`TOKEN_LIFETIME_SECS`] from now.
pub(crate) fn fresh_claims(issuer: &LocalIssuer) -> anyhow::Result<Map<String, Value>> {
    let mut claims = issuer.claims(AUDIENCE);
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    claims.insert("exp".into(), json!(now + TOKEN_LIFETIME_SECS));
    Ok(claims)
}

/// Signs `claims` with the issuer's RS256 key as a form body (`logout_token=...`).
pub(crate) fn logout_body(
    issuer: &LocalIssuer,
    claims: &Map<String, Value>,
) -> anyhow::Result<String> {
    Ok(format!(
        "logout_token={}",
        issuer.sign("rsa-1", "RS256", claims)?
    ))
}

/// A `POST` of a form `body` to `url` (the back-channel logout endpoint).
pub(crate) fn post_form(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
}

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a probe port")?;
    Ok(listener.local_addr()?.port())
}

/// A fresh SQLite file path in the temp directory, `logout-ledger-<tag>-<pid>-<nanos>.db`.
pub(crate) fn fresh_db_path(tag: &str) -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    Ok(std::env::temp_dir().join(format!(
        "logout-ledger-{tag}-{}-{nanos}.db",
        std::process::id()
    )))
}

/// Removes a SQLite file and its WAL and shared-memory files, ignoring missing ones.
pub(crate) fn remove_sqlite_files(file: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = file.to_path_buf().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// The store under test: a fresh SQLite file, or a fresh PostgreSQL database.
pub(crate) struct Store {
    /// The `--database` URL the server is given.
    pub(crate) url: String,
    /// The SQLite file, when the store is one.
    pub(crate) file: Option<PathBuf>,
    /// `(admin URL, database name)` on PostgreSQL, to drop it afterwards.
    pub(crate) postgres: Option<(String, String)>,
}

impl Store {
    /// A SQLite file `logout-ledger-<tag>-...`, or with `postgres` (an admin URL) a new
    /// database `ll_<tag>_...` on that server.
    pub(crate) async fn create(tag: &str, postgres: Option<&str>) -> anyhow::Result<Self> {
        let Some(admin) = postgres else {
            let file = fresh_db_path(tag)?;
            return Ok(Self {
                url: format!("sqlite://{}", file.display()),
                file: Some(file),
                postgres: None,
            });
        };
        use sqlx::Connection;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let name = format!("ll_{tag}_{}_{nanos}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("connect to {admin}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        let mut url = reqwest::Url::parse(admin)?;
        url.set_path(&name);
        Ok(Self {
            url: url.to_string(),
            file: None,
            postgres: Some((admin.to_owned(), name)),
        })
    }

    /// Removes the SQLite files, or drops the PostgreSQL database.
    pub(crate) async fn remove(&self) -> anyhow::Result<()> {
        if let Some(file) = &self.file {
            remove_sqlite_files(file);
        }
        if let Some((admin, name)) = &self.postgres {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(admin).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// The `serve` arguments for `issuer` and `database` on 127.0.0.1:`port`, then `extra`.
pub(crate) fn serve_args(issuer: &str, database: &str, port: u16, extra: &[&str]) -> Vec<String> {
    [
        "serve",
        "--issuer",
        issuer,
        "--audience",
        AUDIENCE,
        "--allow-insecure-http",
        "--database",
        database,
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]
    .iter()
    .chain(extra)
    .map(|s| (*s).to_owned())
    .collect()
}

/// The release `logout-ledger` binary cargo built for the benches.
pub(crate) fn release_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_logout-ledger"))
}

/// A running `logout-ledger serve` child process, killed if dropped while still running.
pub(crate) struct Server {
    /// The child process.
    pub(crate) child: Child,
    /// Its process id, for `/proc` and `kill`.
    pub(crate) pid: String,
    /// `http://127.0.0.1:<port>`, the API listener.
    pub(crate) base: String,
}

impl Server {
    /// Prints and starts `binary args`, whose `--listen` is 127.0.0.1:`port`.
    pub(crate) fn spawn(binary: &Path, args: &[String], port: u16) -> anyhow::Result<Self> {
        println!("server:   {} {}", binary.display(), args.join(" "));
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            pid: child.id().to_string(),
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// Waits until `GET /readyz` answers 200 (asked with `client`), at most [`READY_TIMEOUT`].
    pub(crate) async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.base);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited during start-up: {status}");
            }
            if let Ok(resp) = client.get(&url).send().await
                && resp.status() == reqwest::StatusCode::OK
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the server was not ready within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status; returns it and how long
    /// the exit took (kills the process and fails after `timeout`).
    pub(crate) async fn stop(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<(ExitStatus, Duration)> {
        let start = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.pid])
            .status()
            .context("run kill")?;
        ensure!(kill.success(), "kill -TERM {} failed: {kill}", self.pid);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the server did not exit within {timeout:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    /// Kills the server on an early error (the normal path has already reaped it).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
