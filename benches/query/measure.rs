//! The measurements: latency of each query kind over HTTP (and in the store alone), export
//! throughput over HTTP and through the CLI, and resident memory while exporting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use logout_ledger::clock::format_millis;
use logout_ledger::store::{AuditStore, EventFilter, Outcome, StoreReader};

use crate::fill::{self, DAYS, ORGS, REGIONS, mix};

const DAY: i64 = 86_400_000;

/// What the store does for one request, timed on its own.
enum StoreCall {
    Query(EventFilter),
    Session(String, String, Option<(String, i64)>),
    Other,
}

/// One request of a kind.
struct Request {
    path: String,
    store: StoreCall,
}

pub(crate) struct Bench {
    client: reqwest::Client,
    api: SocketAddr,
    token: &'static str,
    url: String,
    reader: StoreReader,
    n: u64,
    end: i64,
    samples: usize,
}

fn pct(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `VmRSS` or `VmHWM` of a process, in KiB.
fn memory_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Samples this process's RSS every 10 ms until stopped; the largest seen.
fn sample_rss(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(memory_kib("self", "VmRSS:").unwrap_or(0));
            std::thread::sleep(Duration::from_millis(10));
        }
        peak
    })
}

impl Bench {
    pub(crate) async fn new(
        api: SocketAddr,
        token: &'static str,
        url: &str,
        n: u64,
        end: i64,
        samples: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::new(),
            api,
            token,
            url: url.to_owned(),
            reader: AuditStore::open_reader(url).await?,
            n,
            end,
            samples,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<(Duration, usize)> {
        let started = Instant::now();
        let r = self
            .client
            .get(format!("http://{}{path}", self.api))
            .bearer_auth(self.token)
            .send()
            .await?;
        let status = r.status();
        let body = r.bytes().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {body:?}");
        Ok((started.elapsed(), body.len()))
    }

    async fn store_time(&self, call: &StoreCall) -> anyhow::Result<Option<Duration>> {
        let started = Instant::now();
        match call {
            StoreCall::Query(f) => {
                self.reader.ndjson_page(f).await?;
            }
            StoreCall::Session(iss, sid, subject) => {
                let subject = subject.as_ref().map(|(s, t)| (s.as_str(), *t));
                self.reader.session_status(iss, sid, subject).await?;
            }
            StoreCall::Other => return Ok(None),
        }
        Ok(Some(started.elapsed()))
    }

    /// A random record index (the same for the same `k` and `salt`).
    fn pick(&self, k: u64, salt: u64) -> u64 {
        mix(k ^ salt) % self.n
    }

    fn sub(&self, i: u64) -> String {
        format!("auth0|{:012x}", fill::subject_of(i))
    }

    fn day(&self, k: u64) -> (i64, i64) {
        let d = (mix(k ^ 0xDA7) % DAYS as u64) as i64;
        let since = self.end - (DAYS - d) * DAY;
        (since, since + DAY)
    }

    fn request(&self, kind: &str, k: u64) -> Request {
        let i = self.pick(k, kind.len() as u64);
        let page = |f: EventFilter| EventFilter { limit: 101, ..f };
        match kind {
            "events?sub=" => Request {
                path: format!("/api/v1/events?sub={}", enc(&self.sub(i))),
                store: StoreCall::Query(page(EventFilter {
                    sub: Some(self.sub(i)),
                    ..Default::default()
                })),
            },
            "events?sid=" => Request {
                path: format!("/api/v1/events?sid={}", fill::sid_of(i)),
                store: StoreCall::Query(page(EventFilter {
                    sid: Some(fill::sid_of(i)),
                    ..Default::default()
                })),
            },
            "events?meta.org_id=" => {
                let org = format!("org_{:04}", mix(k) % ORGS);
                Request {
                    path: format!("/api/v1/events?meta.org_id={org}"),
                    store: StoreCall::Query(page(EventFilter {
                        meta: vec![("org_id".into(), org)],
                        ..Default::default()
                    })),
                }
            }
            "events?meta.org_id=&meta.loginRegion=" => {
                let org = format!("org_{:04}", mix(k) % ORGS);
                let region = REGIONS[(mix(k ^ 3) % REGIONS.len() as u64) as usize];
                Request {
                    path: format!("/api/v1/events?meta.org_id={org}&meta.loginRegion={region}"),
                    store: StoreCall::Query(page(EventFilter {
                        meta: vec![
                            ("org_id".into(), org),
                            ("loginRegion".into(), region.into()),
                        ],
                        ..Default::default()
                    })),
                }
            }
            "events?since=&until= (one day)" => {
                let (s, u) = self.day(k);
                Request {
                    path: format!(
                        "/api/v1/events?since={}&until={}",
                        format_millis(s),
                        format_millis(u)
                    ),
                    store: StoreCall::Query(page(EventFilter {
                        since: Some(s),
                        until: Some(u),
                        ..Default::default()
                    })),
                }
            }
            "events?outcome=rejected&since=&until= (one day)" => {
                let (s, u) = self.day(k);
                Request {
                    path: format!(
                        "/api/v1/events?outcome=rejected&since={}&until={}",
                        format_millis(s),
                        format_millis(u)
                    ),
                    store: StoreCall::Query(page(EventFilter {
                        outcome: Some(Outcome::Rejected),
                        since: Some(s),
                        until: Some(u),
                        ..Default::default()
                    })),
                }
            }
            "events (newest page)" => Request {
                path: "/api/v1/events".into(),
                store: StoreCall::Query(page(EventFilter::default())),
            },
            "events/{id}" => Request {
                path: format!("/api/v1/events/{}", 1 + i),
                store: StoreCall::Other,
            },
            "subjects/{sub}/logouts" => Request {
                path: format!("/api/v1/subjects/{}/logouts", enc(&self.sub(i))),
                store: StoreCall::Other,
            },
            "sessions/{sid}" => {
                let iss = fill::issuer_of(fill::subject_of(i));
                Request {
                    path: format!("/api/v1/sessions/{}?iss={}", fill::sid_of(i), enc(iss)),
                    store: StoreCall::Session(iss.into(), fill::sid_of(i), None),
                }
            }
            "sessions/{sid}?sub=&since=" => {
                let iss = fill::issuer_of(fill::subject_of(i));
                let since = fill::received_at(i, self.n, self.end) - 30 * DAY;
                Request {
                    path: format!(
                        "/api/v1/sessions/unknown-sid?iss={}&sub={}&since={}",
                        enc(iss),
                        enc(&self.sub(i)),
                        format_millis(since)
                    ),
                    store: StoreCall::Session(
                        iss.into(),
                        "unknown-sid".into(),
                        Some((self.sub(i), since)),
                    ),
                }
            }
            "reports/summary?group_by=outcome (one day)" => {
                let (s, u) = self.day(k);
                Request {
                    path: format!(
                        "/api/v1/reports/summary?group_by=outcome&since={}&until={}",
                        format_millis(s),
                        format_millis(u)
                    ),
                    store: StoreCall::Other,
                }
            }
            _ => Request {
                path: "/api/v1/reports/summary?group_by=day&group_by=meta:org_id".into(),
                store: StoreCall::Other,
            },
        }
    }

    pub(crate) async fn run(&self) -> anyhow::Result<()> {
        let kinds: [(&str, usize); 13] = [
            ("events?sub=", self.samples),
            ("events?sid=", self.samples),
            ("events?meta.org_id=", self.samples),
            ("events?meta.org_id=&meta.loginRegion=", self.samples),
            ("events?since=&until= (one day)", self.samples),
            (
                "events?outcome=rejected&since=&until= (one day)",
                self.samples,
            ),
            ("events (newest page)", self.samples),
            ("events/{id}", self.samples),
            ("subjects/{sub}/logouts", self.samples),
            ("sessions/{sid}", self.samples * 5),
            ("sessions/{sid}?sub=&since=", self.samples * 5),
            (
                "reports/summary?group_by=outcome (one day)",
                self.samples / 4,
            ),
            (
                "reports/summary?group_by=day&group_by=meta:org_id (all records)",
                3,
            ),
        ];
        println!();
        println!(
            "| query (API, page of up to 100) | samples | p50 ms | p99 ms | store p50 ms | store p99 ms | mean body |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (kind, samples) in kinds {
            for k in 0..10u64 {
                let r = self.request(kind, 1_000_000 + k);
                self.get(&r.path).await?;
            }
            let (mut http, mut store, mut bytes) = (Vec::new(), Vec::new(), 0usize);
            for k in 0..samples as u64 {
                let r = self.request(kind, k);
                let (t, len) = self.get(&r.path).await?;
                http.push(t);
                bytes += len;
                if let Some(t) = self.store_time(&r.store).await? {
                    store.push(t);
                }
            }
            http.sort();
            store.sort();
            let (s50, s99) = if store.is_empty() {
                ("".into(), "".into())
            } else {
                (
                    format!("{:.2}", pct(&store, 50)),
                    format!("{:.2}", pct(&store, 99)),
                )
            };
            println!(
                "| `{kind}` | {samples} | {:.2} | {:.2} | {s50} | {s99} | {} B |",
                pct(&http, 50),
                pct(&http, 99),
                bytes / samples.max(1)
            );
        }
        self.export_api().await?;
        self.export_cli()?;
        Ok(())
    }

    /// Every logout record over HTTP, read and dropped: rows/s and this process's RSS.
    async fn export_api(&self) -> anyhow::Result<()> {
        let before = memory_kib("self", "VmRSS:").unwrap_or(0);
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = sample_rss(Arc::clone(&stop));
        let started = Instant::now();
        let mut r = self
            .client
            .get(format!("http://{}/api/v1/export?format=ndjson", self.api))
            .bearer_auth(self.token)
            .send()
            .await?;
        let rows: u64 = r
            .headers()
            .get("x-export-rows")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (mut bytes, mut lines) = (0usize, 0u64);
        while let Some(chunk) = r.chunk().await? {
            bytes += chunk.len();
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
        let secs = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap_or(0);
        anyhow::ensure!(lines == rows, "export: {lines} lines, {rows} announced");
        println!();
        println!(
            "export over HTTP, NDJSON, read and dropped by the client: {rows} records, {:.0} MiB in {secs:.1} s = {:.0} records/s ({:.0} MiB/s)",
            bytes as f64 / 1048576.0,
            rows as f64 / secs,
            bytes as f64 / 1048576.0 / secs
        );
        println!(
            "  RSS of the benchmark process (service + client): {:.0} MiB before, peak {:.0} MiB during",
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        );
        Ok(())
    }

    /// `logout-ledger export --format ndjson --output /dev/null` as its own process: rows/s and
    /// its peak RSS (VmHWM).
    fn export_cli(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_logout-ledger"))
            .args(["export", "--database", &self.url, "--format", "ndjson"])
            .args(["--output", "/dev/null"])
            .spawn()?;
        let pid = child.id().to_string();
        let mut hwm = 0;
        let status = loop {
            hwm = hwm.max(memory_kib(&pid, "VmHWM:").unwrap_or(0));
            if let Some(s) = child.try_wait()? {
                break s;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(status.success(), "CLI export failed");
        let rows = self.n as f64;
        println!(
            "export by the CLI (`logout-ledger export --format ndjson --output /dev/null`): {:.0} records in {secs:.1} s = {:.0} records/s, peak RSS (VmHWM) {:.0} MiB",
            rows,
            rows / secs,
            hwm as f64 / 1024.0
        );
        Ok(())
    }
}
