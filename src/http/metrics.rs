//! Process counters in the Prometheus text format: outcomes, rejection reasons, store failures,
//! key-set fetches, and the query API's session checks and refused requests.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::logout_token::Reason;
use crate::store::Outcome;

/// Counters updated by the logout endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 3],
    reasons: [AtomicU64; Reason::ALL.len()],
    store_failures: AtomicU64,
    session_checks: [AtomicU64; 2],
    api_unauthorized: AtomicU64,
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
}

/// `GET /metrics`.
pub(super) async fn render(axum::extract::State(state): State<AppState>) -> impl IntoResponse {
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
    // --- admission of rejection records ---
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
    // --- end admission ---
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
