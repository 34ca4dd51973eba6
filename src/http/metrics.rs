//! Process counters in the Prometheus text format: outcomes, rejection reasons, store failures,
//! key-set fetches, the query API's session checks and refused requests, and each listener's
//! connections (open, refused by a cap, closed by a timeout).

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::delivery::DeliveryMetrics;
use crate::keys::KeyRegistry;
use crate::logout_token::Reason;
use crate::store::Outcome;

/// Which listener a connection arrived on (a label of the connection metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// The public logout endpoint with `/healthz` and `/readyz`.
    Public,
    /// The query API (with `/metrics`).
    Api,
    /// The `--metrics-listen` listener.
    Metrics,
}

impl ListenerKind {
    const ALL: [Self; 3] = [Self::Public, Self::Api, Self::Metrics];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Api => "api",
            Self::Metrics => "metrics",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which cap refused a connection at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// The listener's `max_connections`.
    Listener,
    /// The source address's `max_connections_per_source`.
    Source,
}

impl Cap {
    const ALL: [Self; 2] = [Self::Listener, Self::Source];

    fn name(self) -> &'static str {
        match self {
            Self::Listener => "listener",
            Self::Source => "source",
        }
    }
}

/// Which timeout closed a connection (or, for `Request`, answered its request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// No full request header within `header_read_timeout`.
    Header,
    /// A request not answered within `request_timeout` (answered 408 or 503, then closed).
    Request,
    /// An answer whose client read nothing of it for `request_timeout`.
    Send,
    /// A kept-alive connection idle for `idle_timeout`.
    Idle,
}

impl Timeout {
    const ALL: [Self; 4] = [Self::Header, Self::Request, Self::Send, Self::Idle];

    fn name(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Request => "request",
            Self::Send => "send",
            Self::Idle => "idle",
        }
    }
}

/// One listener's connection counters.
#[derive(Debug, Default)]
struct ConnectionCounters {
    open: AtomicI64,
    refused: [AtomicU64; Cap::ALL.len()],
    timed_out: [AtomicU64; Timeout::ALL.len()],
}

/// Counters updated by the logout endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 3],
    reasons: [AtomicU64; Reason::ALL.len()],
    store_failures: AtomicU64,
    session_checks: [AtomicU64; 2],
    api_unauthorized: AtomicU64,
    connections: [ConnectionCounters; ListenerKind::ALL.len()],
    suppressed: [AtomicU64; Reason::ALL.len()],
}

impl Metrics {
    /// Counts one recorded outcome.
    pub fn outcome(&self, outcome: Outcome) {
        let i = match outcome {
            Outcome::Accepted => 0,
            Outcome::Duplicate => 1,
            Outcome::Rejected => 2,
        };
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one rejection reason (recorded or not).
    pub fn reason(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.reasons[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one audit write that failed.
    pub fn store_failure(&self) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one session check of the query API (not audited: an application's hot path).
    pub fn session_check(&self, logged_out: bool) {
        self.session_checks[usize::from(logged_out)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one query API request refused for want of a valid token.
    pub fn api_unauthorized(&self) {
        self.api_unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    // --- admission of rejection records ---
    /// Counts one rejection answered but only counted, not stored as its own record.
    pub fn suppressed(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.suppressed[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Audit writes that failed so far.
    pub fn store_failures(&self) -> u64 {
        self.store_failures.load(Ordering::Relaxed)
    }

    /// Counts a connection opened (`+1`) or closed (`-1`) on a listener.
    pub fn connection_open(&self, listener: ListenerKind, delta: i64) {
        self.connections[listener.index()]
            .open
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts a connection closed at accept because a cap was reached.
    pub fn connection_refused(&self, listener: ListenerKind, cap: Cap) {
        self.connections[listener.index()].refused[cap as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed (or a request answered) because a timeout passed.
    pub fn connection_timed_out(&self, listener: ListenerKind, timeout: Timeout) {
        self.connections[listener.index()].timed_out[timeout as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused by `cap` on `listener` so far.
    pub fn refused(&self, listener: ListenerKind, cap: Cap) -> u64 {
        self.connections[listener.index()].refused[cap as usize].load(Ordering::Relaxed)
    }

    /// Connections closed by `timeout` on `listener` so far.
    pub fn timed_out(&self, listener: ListenerKind, timeout: Timeout) -> u64 {
        self.connections[listener.index()].timed_out[timeout as usize].load(Ordering::Relaxed)
    }
}

/// What `/metrics` reads: the counters and the key caches (fetch count).
#[derive(Debug, Clone)]
pub struct MetricsState {
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// The key caches.
    pub keys: Arc<KeyRegistry>,
    /// Each delivery target's counters.
    pub deliveries: Arc<DeliveryMetrics>,
}

/// `GET /metrics`.
pub(super) async fn render(State(state): State<MetricsState>) -> impl IntoResponse {
    let m = &state.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE logout_ledger_requests_total counter");
    for (i, name) in ["accepted", "duplicate", "rejected"].iter().enumerate() {
        let _ = writeln!(
            out,
            "logout_ledger_requests_total{{outcome=\"{name}\"}} {}",
            m.outcomes[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE logout_ledger_rejections_total counter");
    for (i, r) in Reason::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "logout_ledger_rejections_total{{reason=\"{}\"}} {}",
            r.code(),
            m.reasons[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# TYPE logout_ledger_store_write_failures_total counter"
    );
    let _ = writeln!(
        out,
        "logout_ledger_store_write_failures_total {}",
        m.store_failures()
    );
    let _ = writeln!(out, "# TYPE logout_ledger_jwks_fetches_total counter");
    let _ = writeln!(
        out,
        "logout_ledger_jwks_fetches_total {}",
        state.keys.fetch_count()
    );
    key_set_age_lines(&mut out, &state.keys);
    let _ = writeln!(out, "# TYPE logout_ledger_session_checks_total counter");
    for (i, logged_out) in ["false", "true"].iter().enumerate() {
        let _ = writeln!(
            out,
            "logout_ledger_session_checks_total{{logged_out=\"{logged_out}\"}} {}",
            m.session_checks[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# TYPE logout_ledger_api_unauthorized_total counter");
    let _ = writeln!(
        out,
        "logout_ledger_api_unauthorized_total {}",
        m.api_unauthorized.load(Ordering::Relaxed)
    );
    connection_lines(&mut out, m);
    suppressed_lines(&mut out, m);
    state.deliveries.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Each issuer's key-set age, for alerting well before `--max-key-age`.
fn key_set_age_lines(out: &mut String, keys: &KeyRegistry) {
    let _ = writeln!(out, "# TYPE logout_ledger_key_set_age_seconds gauge");
    for (issuer, age) in keys.key_set_ages() {
        if let Some(age) = age {
            // Text-format label escaping: backslash, quote, newline.
            let label = issuer
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = writeln!(
                out,
                "logout_ledger_key_set_age_seconds{{issuer=\"{label}\"}} {:.3}",
                age.as_secs_f64()
            );
        }
    }
}

/// Rejection records counted instead of stored, per unverified reason.
fn suppressed_lines(out: &mut String, m: &Metrics) {
    let _ = writeln!(
        out,
        "# TYPE logout_ledger_rejections_suppressed_total counter"
    );
    for (i, r) in Reason::ALL
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_unverified())
    {
        let _ = writeln!(
            out,
            "logout_ledger_rejections_suppressed_total{{reason=\"{}\"}} {}",
            r.code(),
            m.suppressed[i].load(Ordering::Relaxed)
        );
    }
}

fn connection_lines(out: &mut String, m: &Metrics) {
    let _ = writeln!(out, "# TYPE logout_ledger_connections_open gauge");
    for l in ListenerKind::ALL {
        let _ = writeln!(
            out,
            "logout_ledger_connections_open{{listener=\"{}\"}} {}",
            l.name(),
            m.connections[l.index()].open.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# TYPE logout_ledger_connections_refused_total counter"
    );
    for l in ListenerKind::ALL {
        for cap in Cap::ALL {
            let _ = writeln!(
                out,
                "logout_ledger_connections_refused_total{{listener=\"{}\",cap=\"{}\"}} {}",
                l.name(),
                cap.name(),
                m.refused(l, cap)
            );
        }
    }
    let _ = writeln!(
        out,
        "# TYPE logout_ledger_connections_timed_out_total counter"
    );
    for l in ListenerKind::ALL {
        for t in Timeout::ALL {
            let _ = writeln!(
                out,
                "logout_ledger_connections_timed_out_total{{listener=\"{}\",timeout=\"{}\"}} {}",
                l.name(),
                t.name(),
                m.timed_out(l, t)
            );
        }
    }
}
