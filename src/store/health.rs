//! Whether the store is known to be down, shared by the writer (which marks it down when a batch
//! cannot reach the database, and up when a probe gets through) and every request (which then
//! gets its 503 at once instead of queueing behind a database that will not answer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the writer probes a store that is down: it begins a batch transaction (taking the
/// chain lock) and rolls it back.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// The part of the store timeout a batch may spend waiting to start: for a connection (the
/// PostgreSQL pool's acquire timeout), for the write lock (SQLite's busy timeout) or on one
/// statement (PostgreSQL's `statement_timeout`, which also bounds the wait for the chain lock).
/// Half: the database reports a lock or a dead server while the batch's requests still wait.
pub(super) fn wait_budget(store_timeout: Duration) -> Duration {
    (store_timeout / 2).max(Duration::from_millis(100))
}

/// Up or down, as last seen by the writer.
#[derive(Debug, Default)]
pub(super) struct Health {
    down: AtomicBool,
}

impl Health {
    /// Whether the store is known to be unreachable.
    pub(super) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Marks the store down; true when it was up.
    pub(super) fn mark_down(&self) -> bool {
        !self.down.swap(true, Ordering::AcqRel)
    }

    /// Marks the store up; true when it was down.
    pub(super) fn mark_up(&self) -> bool {
        self.down.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_fit_inside_the_store_timeout() {
        for secs in 1..=60 {
            let t = Duration::from_secs(secs);
            assert!(wait_budget(t) < t);
        }
    }

    #[test]
    fn transitions_are_reported_once() {
        let h = Health::default();
        assert!(!h.is_down());
        assert!(h.mark_down());
        assert!(!h.mark_down());
        assert!(h.is_down());
        assert!(h.mark_up());
        assert!(!h.mark_up());
    }
}
