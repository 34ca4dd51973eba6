//! Delivery benchmark (issue 13, "Measured"): accepted logouts at a fixed rate into a service
//! that delivers each one to three loopback targets, then the same load without deliveries, in
//! one invocation so the two are compared on the same machine state.
//!
//! ```sh
//! cargo bench --bench delivery -- [--seconds 60] [--rate 1000] [--concurrency 4]
//!     [--in-flight 64] [--warmup 200] [--nats 127.0.0.1:4222 | --no-nats] [--drain-timeout 300]
//! ```
//!
//! Everything runs in this process, on one multi-threaded runtime: an issuer
//! ([`LocalIssuer`]), the service under test ([`Application`] with a fresh SQLite store in the
//! temp directory) and its targets:
//! 1. `webhook`: an axum server answering 204 that records each arrival and `webhook-id`;
//! 2. `relay` (kind `backchannel`): a second `Application` with its own SQLite store, same issuer
//!    and audience, at its `/backchannel-logout`;
//! 3. `nats`: JetStream on the machine's NATS server, on a subject and stream unique to the run
//!    (`create_stream = true`; the stream is deleted at the end). A raw core subscriber on the
//!    subject records each message's arrival.
//!
//! Phase 1 (with deliveries): a short warm-up, then `--rate` logouts per second for `--seconds`
//! from an open-loop generator (a tick every `1/rate`, missed ticks sent at once, at most
//! `--in-flight` requests outstanding); then it waits until every target has delivered every
//! accepted logout (the drain). Phase 2 (without deliveries): the same on a fresh store and a
//! service with no target.
//!
//! Commit-to-delivered latency is measured per target against the moment the logout's `POST`
//! got its 200 (the record is committed before the 200 is sent), matched by the token's `jti`:
//! webhook and NATS arrivals are `Instant`s in this process; relayed records are matched by
//! the second store's `received_at` (millisecond resolution, wall clock). The service's own
//! `logout_ledger_delivery_latency_seconds` histogram (record time to acknowledgement, an upper
//! bound) is read from its `/metrics` and shown as bucket bounds beside them.

#[path = "../support/mod.rs"]
mod support;

mod load;
mod nats;
mod webhook;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use logout_ledger::clock::{SystemClock, parse_rfc3339_millis};
use logout_ledger::config::{
    ApiSettings, DeliveryKind, DeliverySettings, EdgeSettings, IssuerSettings, KeyFetchSettings,
    Secret, Settings,
};
use logout_ledger::local_issuer::LocalIssuer;
use logout_ledger::startup::Application;
use logout_ledger::store::{AuditStore, EventFilter, Order};
use logout_ledger::telemetry::LogFormat;
use serde_json::Value;
use support::{AUDIENCE, TOKEN_LIFETIME_SECS, cores, cpu_model, quantile_ms};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use load::{Run, open_loop};

/// Target names, as configured and labelled in `/metrics`.
const WEBHOOK: &str = "webhook";
const RELAY: &str = "relay";
const NATS: &str = "nats";

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    seconds: u64,
    rate: u64,
    /// Each target's attempts in flight.
    concurrency: usize,
    /// Logout requests outstanding at most.
    in_flight: usize,
    /// Requests before each measured phase (key fetch, connections).
    warmup: usize,
    /// The NATS server, or `None` to leave that target out.
    nats: Option<String>,
    /// Longest wait for every target to catch up after the load.
    drain_timeout: Duration,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        seconds: 60,
        rate: 1000,
        concurrency: logout_ledger::config::DEFAULT_CONCURRENCY,
        in_flight: 64,
        warmup: 200,
        nats: Some("127.0.0.1:4222".into()),
        drain_timeout: Duration::from_secs(300),
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
            "--rate" => o.rate = value("--rate")?,
            "--concurrency" => o.concurrency = usize::try_from(value("--concurrency")?)?,
            "--in-flight" => o.in_flight = usize::try_from(value("--in-flight")?)?,
            "--warmup" => o.warmup = usize::try_from(value("--warmup")?)?,
            "--drain-timeout" => o.drain_timeout = Duration::from_secs(value("--drain-timeout")?),
            "--nats" => o.nats = Some(args.next().context("--nats needs host:port")?),
            "--no-nats" => o.nats = None,
            other => bail!(
                "unknown argument {other:?}; flags: --seconds N --rate R --concurrency C \
                 --in-flight N --warmup N --drain-timeout SECS --nats HOST:PORT --no-nats"
            ),
        }
    }
    ensure!(
        o.seconds > 0 && o.rate > 0,
        "--seconds and --rate must be positive"
    );
    ensure!(
        (1..=256).contains(&o.concurrency),
        "--concurrency must be between 1 and 256"
    );
    ensure!(o.in_flight > 0, "--in-flight must be positive");
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// The services
// ---------------------------------------------------------------------------------------------

/// Settings for a service on 127.0.0.1 port 0 trusting `issuer`, with the `/metrics`
/// listener on when `metrics`.
fn settings(
    issuer: &LocalIssuer,
    database: &str,
    deliveries: Vec<DeliverySettings>,
    metrics: bool,
) -> Settings {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    Settings {
        listen: local,
        database: database.to_owned(),
        log_format: LogFormat::Text,
        issuers: vec![IssuerSettings {
            issuer: issuer.issuer().to_owned(),
            audiences: vec![AUDIENCE.into()],
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            jwks_uri: None,
            client_secret: None,
            require_exp: true,
            leeway_secs: 60,
            // Tokens are minted before both phases.
            max_token_age_secs: i64::try_from(TOKEN_LIFETIME_SECS).unwrap_or(3600),
        }],
        keys: KeyFetchSettings {
            allow_insecure_http: true,
            ..KeyFetchSettings::default()
        },
        store_timeout: Duration::from_secs(5),
        checkpoints: None,
        retention: None,
        api: ApiSettings {
            listen: local,
            tokens: Vec::new(),
        },
        edge: EdgeSettings {
            metrics_listen: metrics.then_some(local),
            ..EdgeSettings::default()
        },
        deliveries,
    }
}

/// One delivery target with the benchmark's common settings.
fn target(name: &str, kind: DeliveryKind, concurrency: usize) -> DeliverySettings {
    DeliverySettings {
        concurrency,
        ..DeliverySettings::new(name, kind)
    }
}

/// A service running in this process.
struct Ledger {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Ledger {
    /// Builds and starts the service, and waits for its `/readyz`.
    async fn start(settings: Settings, client: &reqwest::Client) -> anyhow::Result<Self> {
        let app = Application::build(settings, Arc::new(SystemClock))
            .await
            .context("build the service")?;
        let (addr, metrics) = (app.local_addr(), app.metrics_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let ready = format!("http://{addr}/readyz");
        let deadline = Instant::now() + support::READY_TIMEOUT;
        loop {
            if let Ok(r) = client.get(&ready).send().await
                && r.status() == reqwest::StatusCode::OK
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the service at {addr} was not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            addr,
            metrics,
            stop,
            task,
        })
    }

    fn logout_url(&self) -> String {
        format!("http://{}/backchannel-logout", self.addr)
    }

    /// Stops it and waits for its writer's last commit.
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the service panicked")??;
        Ok(())
    }
}

/// A fresh SQLite URL in the temp directory (files removed by [`remove_db`]).
fn fresh_db(tag: &str) -> anyhow::Result<(String, std::path::PathBuf)> {
    let path = support::fresh_db_path(tag)?;
    Ok((format!("sqlite://{}", path.display()), path))
}

// ---------------------------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------------------------

/// What one phase's load saw.
struct LoadFigures {
    sent: usize,
    accepted: usize,
    failed: BTreeMap<u16, usize>,
    example: Option<String>,
    elapsed: Duration,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    lag_p99: f64,
    lag_max: f64,
    /// This process's CPU over the phase, in % of one core (services, targets and generator).
    cpu_pct: f64,
}

impl LoadFigures {
    fn from_run(run: &Run, cpu_secs: f64) -> Self {
        let mut lat: Vec<u32> = run
            .samples
            .iter()
            .filter(|s| s.status == 200)
            .map(|s| s.latency_us)
            .collect();
        lat.sort_unstable();
        let mut lag: Vec<u32> = run.samples.iter().map(|s| s.lag_us).collect();
        lag.sort_unstable();
        let mut failed = BTreeMap::new();
        for s in run.samples.iter().filter(|s| s.status != 200) {
            *failed.entry(s.status).or_default() += 1;
        }
        Self {
            sent: run.samples.len(),
            accepted: lat.len(),
            failed,
            example: run.example.clone(),
            elapsed: run.elapsed,
            p50: quantile_ms(&lat, 0.50),
            p90: quantile_ms(&lat, 0.90),
            p99: quantile_ms(&lat, 0.99),
            max: quantile_ms(&lat, 1.0),
            lag_p99: quantile_ms(&lag, 0.99),
            lag_max: quantile_ms(&lag, 1.0),
            cpu_pct: 100.0 * cpu_secs / run.elapsed.as_secs_f64(),
        }
    }

    fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }
}

/// This process's user + system CPU seconds so far.
fn cpu_secs() -> f64 {
    support::proc_cpu_secs("self").map_or(f64::NAN, |(u, s)| u + s)
}

/// One target's counters and histogram from `/metrics`.
#[derive(Debug, Default, Clone)]
struct Scrape {
    delivered: u64,
    retry: u64,
    dead: u64,
    pending: i64,
    /// `(le seconds, cumulative count)`, in order.
    buckets: Vec<(f64, u64)>,
}

impl Scrape {
    /// The bucket bound holding the `q` quantile, in ms (`inf` past the last bound).
    fn quantile_bound_ms(&self, q: f64) -> f64 {
        let count = self.buckets.last().map_or(0, |b| b.1);
        if count == 0 {
            return f64::NAN;
        }
        let rank = (q * count as f64).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, c)| *c >= rank.max(1))
            .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
    }
}

/// `name{k="v",...} value` → (name, labels, value).
fn parse_metric(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (name, rest) = line.split_once('{')?;
    let (labels, value) = rest.split_once('}')?;
    let labels = labels
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k, v.trim_matches('"')))
        })
        .collect();
    Some((name, labels, value.trim().parse().ok()?))
}

/// Reads every target's delivery metrics from the service's `/metrics`.
async fn scrape(
    client: &reqwest::Client,
    addr: SocketAddr,
) -> anyhow::Result<BTreeMap<String, Scrape>> {
    let text = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out: BTreeMap<String, Scrape> = BTreeMap::new();
    for (name, labels, value) in text.lines().filter_map(parse_metric) {
        let Some(target) = labels.get("target") else {
            continue;
        };
        let t = out.entry((*target).to_owned()).or_default();
        match name {
            "logout_ledger_delivery_attempts_total" => match labels.get("result") {
                Some(&"delivered") => t.delivered = value as u64,
                Some(&"retry") => t.retry = value as u64,
                Some(&"dead") => t.dead = value as u64,
                _ => {}
            },
            "logout_ledger_delivery_pending" => t.pending = value as i64,
            "logout_ledger_delivery_latency_seconds_bucket" => {
                if let Some(le) = labels.get("le").and_then(|l| l.parse::<f64>().ok()) {
                    t.buckets.push((le, value as u64));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Signed microseconds from `from` to `to`.
fn signed_us(from: Instant, to: Instant) -> i64 {
    match to.checked_duration_since(from) {
        Some(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        None => -i64::try_from((from - to).as_micros()).unwrap_or(i64::MAX),
    }
}

/// The `q` quantile of sorted signed microseconds, in ms (nearest rank; NaN when empty).
fn quantile_signed_ms(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// One target's delivery figures over the measured logouts.
struct TargetFigures {
    name: &'static str,
    kind: &'static str,
    /// Measured logouts answered 200.
    expected: usize,
    /// Of those, how many the target's side saw (once or more).
    seen: usize,
    /// Arrivals beyond the first per logout (redeliveries), the warm-up's included.
    repeats: usize,
    /// Measured logouts delivered per second, from the measured load's first send to the
    /// last one's arrival.
    throughput: f64,
    p50: f64,
    p99: f64,
    max: f64,
    /// The service's histogram for the whole phase (warm-up included).
    scrape: Scrape,
    /// Seconds after the last answer when the target had every logout (None: not within the
    /// drain timeout).
    caught_up: Option<f64>,
    /// Pending deliveries in the store at the end.
    pending: i64,
    /// How the latency was taken.
    method: &'static str,
}

/// What the target's side saw of the measured logouts.
struct Seen {
    /// Commit-to-delivered latencies (signed µs), sorted.
    lat: Vec<i64>,
    /// Measured logouts seen (once or more).
    seen: usize,
    /// Arrivals beyond the first per logout, the warm-up's included.
    repeats: usize,
    /// The last measured logout's arrival, in µs after the measured load's first send.
    last_us: i64,
}

/// Exact latencies from `(token index, 200 answer's time in µs after the measured load's
/// first send, signed µs from that answer to the arrival)`, keeping each logout's first arrival.
fn latencies(
    triples: impl Iterator<Item = (usize, i64, i64)>,
    measured: &std::ops::Range<usize>,
) -> Seen {
    let mut seen = HashSet::new();
    let mut lat = Vec::new();
    let mut repeats = 0;
    let mut last_us = 0;
    for (idx, done_us, us) in triples {
        if !seen.insert(idx) {
            repeats += 1;
            continue;
        }
        if measured.contains(&idx) {
            lat.push(us);
            last_us = last_us.max(done_us + us);
        }
    }
    lat.sort_unstable();
    Seen {
        seen: lat.len(),
        lat,
        repeats,
        last_us,
    }
}

/// The `data.jti` of a delivered JSON event, as a token index.
fn event_index(body: &[u8]) -> Option<usize> {
    let v: Value = serde_json::from_slice(body).ok()?;
    load::index(v.pointer("/data/jti")?.as_str()?)
}

// ---------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------

/// Token index ranges of one phase.
#[derive(Clone)]
struct Ranges {
    warmup: std::ops::Range<usize>,
    measured: std::ops::Range<usize>,
}

/// Sends the warm-up (closed loop, 8 at a time) then the measured open-loop load.
async fn drive(
    o: &Options,
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<String>>,
    r: &Ranges,
) -> anyhow::Result<(Run, Run, f64)> {
    let warm = open_loop(client, url, bodies, r.warmup.clone(), o.rate as f64, 8).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = cpu_secs();
    let run = open_loop(
        client,
        url,
        bodies,
        r.measured.clone(),
        o.rate as f64,
        o.in_flight,
    )
    .await?;
    Ok((warm, run, cpu_secs() - cpu0))
}

/// Phase 1: the service with three targets; returns the load and each target's figures.
async fn with_deliveries(
    o: &Options,
    issuer: &LocalIssuer,
    client: &reqwest::Client,
    bodies: &Arc<Vec<String>>,
    r: &Ranges,
) -> anyhow::Result<(LoadFigures, Vec<TargetFigures>, f64)> {
    let (relay_db, relay_path) = fresh_db("delivery-relay")?;
    let relay = Ledger::start(settings(issuer, &relay_db, vec![], false), client).await?;
    let hook = webhook::Webhook::start().await?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let stream = format!("LLBENCH_{}_{nanos}", std::process::id());
    let subject = format!("llbench.{}.{nanos}.logouts", std::process::id());
    let subscriber = match &o.nats {
        Some(addr) => Some(nats::Subscriber::start(addr, &subject).await?),
        None => None,
    };

    let mut targets = vec![
        target(
            WEBHOOK,
            DeliveryKind::Webhook {
                url: hook.url.parse()?,
                key: Secret::new(vec![7u8; 32]),
            },
            o.concurrency,
        ),
        target(
            RELAY,
            DeliveryKind::Backchannel {
                url: relay.logout_url().parse()?,
            },
            o.concurrency,
        ),
    ];
    if let Some(addr) = &o.nats {
        targets.push(target(
            NATS,
            DeliveryKind::Nats {
                servers: vec![addr.clone()],
                subject: subject.clone(),
                stream: Some(stream.clone()),
                create_stream: true,
            },
            o.concurrency,
        ));
    }
    let names: Vec<&'static str> = targets
        .iter()
        .map(|t| match t.kind {
            DeliveryKind::Webhook { .. } => WEBHOOK,
            DeliveryKind::Backchannel { .. } => RELAY,
            DeliveryKind::Nats { .. } => NATS,
        })
        .collect();
    let (db, path) = fresh_db("delivery-with")?;
    let ledger = Ledger::start(settings(issuer, &db, targets, true), client).await?;
    let metrics = ledger.metrics.context("no /metrics listener")?;
    println!(
        "phase 1:  service {} (store {db}), webhook {}, relay {} (store {relay_db}){}",
        ledger.addr,
        hook.url,
        relay.logout_url(),
        o.nats
            .as_ref()
            .map(|a| format!(", NATS {a} subject {subject} stream {stream}"))
            .unwrap_or_default()
    );

    let (warm, run, cpu) = drive(o, client, &ledger.logout_url(), bodies, r).await?;
    let load_end = Instant::now();
    let figures = LoadFigures::from_run(&run, cpu);
    let total_ok = warm.samples.iter().filter(|s| s.status == 200).count()
        + run.samples.iter().filter(|s| s.status == 200).count();

    // The drain: until every target has acknowledged every accepted logout.
    let mut caught_up: BTreeMap<&str, f64> = BTreeMap::new();
    let mut last = BTreeMap::new();
    loop {
        let now = load_end.elapsed().as_secs_f64();
        last = scrape(client, metrics).await.unwrap_or(last);
        for name in &names {
            let done = last
                .get(*name)
                .is_some_and(|s| (s.delivered + s.dead) as usize >= total_ok);
            if done {
                caught_up.entry(name).or_insert(now);
            }
        }
        if caught_up.len() == names.len() || load_end.elapsed() >= o.drain_timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = load_end.elapsed().as_secs_f64();
    // Let the last acknowledgements be stored before reading the backlog.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = AuditStore::open_reader(&db).await?;
    let mut pending = BTreeMap::new();
    for name in &names {
        pending.insert(*name, reader.delivery_backlog(name).await?.pending);
    }
    drop(reader);
    println!(
        "drain:    {:.2} s after the last answer; webhook saw {}, NATS subscriber saw {}",
        drain,
        hook.count(),
        subscriber.as_ref().map_or(0, nats::Subscriber::count)
    );

    ledger.stop().await?;
    relay.stop().await?;
    let arrivals = hook.finish().await;
    let messages = subscriber.map(nats::Subscriber::finish).unwrap_or_default();
    if let Some(addr) = &o.nats {
        match nats::delete_stream(addr, &stream).await {
            Ok(answer) => println!("nats:     stream {stream} deleted: {answer}"),
            Err(e) => println!("nats:     stream {stream} NOT deleted: {e:#}"),
        }
    }

    // Every token's 200 time, as an Instant and as wall-clock microseconds.
    let mut done: Vec<Option<Instant>> = vec![None; bodies.len()];
    for s in warm.samples.iter().chain(&run.samples) {
        if s.status == 200 {
            done[s.idx] = Some(s.done);
        }
    }
    let (base, base_unix_us) = (
        Instant::now(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as i64,
    );
    let unix_us = |at: Instant| base_unix_us + signed_us(base, at);
    let expected = run.samples.iter().filter(|s| s.status == 200).count();

    let mut out = Vec::new();
    let webhook_ids: HashSet<&str> = arrivals.iter().map(|a| a.id.as_str()).collect();
    let pairs = arrivals.iter().filter_map(|a| {
        let idx = event_index(&a.body)?;
        let d = done[idx]?;
        Some((idx, signed_us(run.started, d), signed_us(d, a.at)))
    });
    let seen_hook = latencies(pairs, &r.measured);
    println!(
        "webhook:  {} requests, {} distinct webhook-id",
        arrivals.len(),
        webhook_ids.len()
    );
    out.push((
        WEBHOOK,
        "webhook",
        seen_hook,
        "arrival (in process) - 200 answer",
    ));

    let relay_reader = AuditStore::open_reader(&relay_db).await?;
    let mut relayed = Vec::new();
    let mut after = 0;
    loop {
        let page = relay_reader
            .query(&EventFilter {
                after: Some(after),
                order: Order::Asc,
                limit: 1000,
                ..EventFilter::default()
            })
            .await?;
        let Some(lastid) = page.last().map(|p| p.id) else {
            break;
        };
        after = lastid;
        relayed.extend(page);
    }
    drop(relay_reader);
    let relay_outcomes = relayed.iter().fold(BTreeMap::new(), |mut m, rec| {
        *m.entry(rec.outcome.clone().unwrap_or_default())
            .or_insert(0usize) += 1;
        m
    });
    println!("relay:    second store holds {relay_outcomes:?}");
    let pairs = relayed.iter().filter_map(|rec| {
        let idx = load::index(rec.jti.as_deref()?)?;
        let at_ms = parse_rfc3339_millis(&rec.received_at).ok()?;
        let d = done[idx]?;
        Some((idx, signed_us(run.started, d), at_ms * 1000 - unix_us(d)))
    });
    let seen_relay = latencies(pairs, &r.measured);
    out.push((
        RELAY,
        "backchannel",
        seen_relay,
        "second store's received_at (ms) - 200 answer",
    ));

    if o.nats.is_some() {
        let pairs = messages.iter().filter_map(|(at, payload)| {
            let idx = event_index(payload)?;
            let d = done[idx]?;
            Some((idx, signed_us(run.started, d), signed_us(d, *at)))
        });
        let seen_nats = latencies(pairs, &r.measured);
        out.push((
            NATS,
            "nats",
            seen_nats,
            "core subscriber arrival - 200 answer",
        ));
    }

    let targets = out
        .into_iter()
        .map(|(name, kind, s, method)| TargetFigures {
            name,
            kind,
            expected,
            seen: s.seen,
            repeats: s.repeats,
            throughput: s.seen as f64 / (s.last_us as f64 / 1e6),
            p50: quantile_signed_ms(&s.lat, 0.50),
            p99: quantile_signed_ms(&s.lat, 0.99),
            max: quantile_signed_ms(&s.lat, 1.0),
            scrape: last.get(name).cloned().unwrap_or_default(),
            caught_up: caught_up.get(name).copied(),
            pending: pending.get(name).copied().unwrap_or(-1),
            method,
        })
        .collect();
    for p in [path, relay_path] {
        support::remove_sqlite_files(&p);
    }
    Ok((figures, targets, drain))
}

/// Phase 2: the same load into a service with no target, on a fresh store.
async fn without_deliveries(
    o: &Options,
    issuer: &LocalIssuer,
    client: &reqwest::Client,
    bodies: &Arc<Vec<String>>,
    r: &Ranges,
) -> anyhow::Result<LoadFigures> {
    let (db, path) = fresh_db("delivery-without")?;
    let ledger = Ledger::start(settings(issuer, &db, vec![], false), client).await?;
    println!(
        "phase 2:  service {} (store {db}), no delivery target",
        ledger.addr
    );
    let (_warm, run, cpu) = drive(o, client, &ledger.logout_url(), bodies, r).await?;
    let figures = LoadFigures::from_run(&run, cpu);
    ledger.stop().await?;
    support::remove_sqlite_files(&path);
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn print_load(label: &str, f: &LoadFigures) {
    println!(
        "| {label} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {:.0}% |",
        f.sent,
        f.accepted,
        f.elapsed.as_secs_f64(),
        f.rate(),
        f.p50,
        f.p90,
        f.p99,
        f.max,
        f.lag_p99,
        f.lag_max,
        f.cpu_pct,
    );
}

fn print_report(
    o: &Options,
    with: &LoadFigures,
    targets: &[TargetFigures],
    drain: f64,
    without: &LoadFigures,
) {
    println!();
    println!("== summary ==");
    println!(
        "machine:  {} x {} ({} logical CPUs, nproc); everything in one process",
        cores(),
        cpu_model(),
        cores()
    );
    println!(
        "load:     {} logouts/s offered for {} s, open loop, <= {} in flight; target \
         concurrency {}",
        o.rate, o.seconds, o.in_flight, o.concurrency
    );
    println!();
    println!(
        "| phase | sent | accepted | elapsed s | accepted/s | p50 ms | p90 ms | p99 ms | max ms \
         | send lag p99 / max ms | process CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    print_load("with 3 deliveries", with);
    print_load("without deliveries", without);
    for (label, f) in [("with", with), ("without", without)] {
        if !f.failed.is_empty() {
            println!("{label}: not 200: {:?} e.g. {:?}", f.failed, f.example);
        }
    }
    println!(
        "ratio with/without: accepted/s {:.3}, p50 {:.2}x, p99 {:.2}x",
        with.rate() / without.rate(),
        with.p50 / without.p50,
        with.p99 / without.p99
    );
    println!();
    println!(
        "| target | kind | delivered (measured) | delivered/s | p50 ms | p99 ms | max ms | /metrics p50 <= ms \
         | /metrics p99 <= ms | attempts ok/retry/dead | caught up s after load | pending at end |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for t in targets {
        println!(
            "| {} | {} | {} / {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {}/{}/{} | {} | {} |",
            t.name,
            t.kind,
            t.seen,
            t.expected,
            t.throughput,
            t.p50,
            t.p99,
            t.max,
            t.scrape.quantile_bound_ms(0.50),
            t.scrape.quantile_bound_ms(0.99),
            t.scrape.delivered,
            t.scrape.retry,
            t.scrape.dead,
            t.caught_up.map_or_else(
                || "NOT within the timeout".to_owned(),
                |s| format!("{s:.2}")
            ),
            t.pending,
        );
    }
    println!(
        "drain: {:.2} s from the last answer until every target had every accepted logout",
        drain
    );
    for t in targets {
        println!(
            "  {}: latency = {}; {} repeated arrival(s)",
            t.name, t.method, t.repeats
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn main() -> std::process::ExitCode {
    support::main_with(run())
}

async fn run() -> anyhow::Result<bool> {
    let o = parse_args()?;
    println!("== logout-ledger delivery benchmark ==");
    println!(
        "command:  cargo bench --bench delivery -- --seconds {} --rate {} --concurrency {} \
         --in-flight {} --warmup {}{}",
        o.seconds,
        o.rate,
        o.concurrency,
        o.in_flight,
        o.warmup,
        o.nats
            .as_ref()
            .map_or_else(|| " --no-nats".to_owned(), |a| format!(" --nats {a}"))
    );
    println!(
        "machine:  {} logical CPUs (nproc), {}",
        cores(),
        cpu_model()
    );

    let issuer = LocalIssuer::start()
        .await
        .context("start the local issuer")?;
    let per_phase = usize::try_from(o.rate * o.seconds)?;
    let phase = o.warmup + per_phase;
    let t = Instant::now();
    let bodies = tokio::task::block_in_place(|| load::mint_bodies(&issuer, 2 * phase))?;
    println!(
        "minted:   {} RS256 tokens in {:.1} s",
        bodies.len(),
        t.elapsed().as_secs_f64()
    );
    let bodies = Arc::new(bodies);
    let ranges = |start: usize| Ranges {
        warmup: start..start + o.warmup,
        measured: start + o.warmup..start + phase,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.in_flight)
        .timeout(support::REQUEST_TIMEOUT)
        .build()?;

    let (with, targets, drain) = with_deliveries(&o, &issuer, &client, &bodies, &ranges(0)).await?;
    let without = without_deliveries(&o, &issuer, &client, &bodies, &ranges(phase)).await?;
    print_report(&o, &with, &targets, drain, &without);
    let complete = targets
        .iter()
        .all(|t| t.seen == t.expected && t.pending == 0 && t.caught_up.is_some());
    if !complete {
        println!("INCOMPLETE: a target did not receive every accepted logout");
    }
    Ok(complete && with.failed.is_empty() && without.failed.is_empty())
}
