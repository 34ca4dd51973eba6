//! Per-target delivery metrics in the Prometheus text format: attempts by result, the backlog
//! (pending count, oldest pending age) and the record-to-delivered latency histogram.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0, 60.0, 600.0, 3600.0,
];

/// How an attempt ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// Acknowledged.
    Delivered,
    /// Failed, to be retried.
    Retry,
    /// Failed for good.
    Dead,
}

impl AttemptResult {
    const ALL: [Self; 3] = [Self::Delivered, Self::Retry, Self::Dead];

    fn name(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Dead => "dead",
        }
    }
}

/// One target's counters.
#[derive(Debug)]
pub struct TargetMetrics {
    name: String,
    attempts: [AtomicU64; 3],
    pending: AtomicI64,
    oldest_pending_ms: AtomicI64,
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ms: AtomicU64,
}

impl TargetMetrics {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            attempts: Default::default(),
            pending: AtomicI64::new(0),
            oldest_pending_ms: AtomicI64::new(0),
            buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_ms: AtomicU64::new(0),
        }
    }

    /// Counts one attempt's end.
    pub fn attempt(&self, result: AttemptResult) {
        self.attempts[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Attempts so far that ended so (tests, the benchmark).
    pub fn attempts(&self, result: AttemptResult) -> u64 {
        self.attempts[result as usize].load(Ordering::Relaxed)
    }

    /// Records one delivery's time from the record to the target's acknowledgement.
    pub fn delivered_after(&self, ms: i64) {
        let ms = ms.max(0);
        let secs = ms as f64 / 1000.0;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms
            .fetch_add(ms.unsigned_abs(), Ordering::Relaxed);
    }

    /// Sets the backlog read from the store: pending count and the oldest pending age (ms).
    pub fn backlog(&self, pending: i64, oldest_age_ms: i64) {
        self.pending.store(pending, Ordering::Relaxed);
        self.oldest_pending_ms
            .store(oldest_age_ms, Ordering::Relaxed);
    }
}

/// Every target's counters, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    targets: Vec<std::sync::Arc<TargetMetrics>>,
}

impl DeliveryMetrics {
    /// Counters for these targets.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            targets: names
                .into_iter()
                .map(|n| std::sync::Arc::new(TargetMetrics::new(n)))
                .collect(),
        }
    }

    /// One target's counters.
    pub fn target(&self, name: &str) -> Option<std::sync::Arc<TargetMetrics>> {
        self.targets.iter().find(|t| t.name == name).cloned()
    }

    /// Appends the delivery metrics (nothing when no target is configured).
    pub fn render(&self, out: &mut String) {
        if self.targets.is_empty() {
            return;
        }
        let _ = writeln!(out, "# TYPE logout_ledger_delivery_attempts_total counter");
        for t in &self.targets {
            for r in AttemptResult::ALL {
                let _ = writeln!(
                    out,
                    "logout_ledger_delivery_attempts_total{{target=\"{}\",result=\"{}\"}} {}",
                    t.name,
                    r.name(),
                    t.attempts(r)
                );
            }
        }
        let _ = writeln!(out, "# TYPE logout_ledger_delivery_pending gauge");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "logout_ledger_delivery_pending{{target=\"{}\"}} {}",
                t.name,
                t.pending.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# TYPE logout_ledger_delivery_oldest_pending_seconds gauge"
        );
        for t in &self.targets {
            let _ = writeln!(
                out,
                "logout_ledger_delivery_oldest_pending_seconds{{target=\"{}\"}} {:.3}",
                t.name,
                t.oldest_pending_ms.load(Ordering::Relaxed) as f64 / 1000.0
            );
        }
        let name = "logout_ledger_delivery_latency_seconds";
        let _ = writeln!(out, "# TYPE {name} histogram");
        for t in &self.targets {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{target=\"{}\",le=\"{le}\"}} {}",
                    t.name,
                    t.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = t.latency_count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{target=\"{}\",le=\"+Inf\"}} {count}",
                t.name
            );
            let _ = writeln!(
                out,
                "{name}_sum{{target=\"{}\"}} {:.3}",
                t.name,
                t.latency_sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
            );
            let _ = writeln!(out, "{name}_count{{target=\"{}\"}} {count}", t.name);
        }
    }
}
