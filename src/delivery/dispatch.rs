//! One worker per target follows the log and delivers: it reads the records after the target's
//! position, turns the matching ones into `deliveries` rows in the same transaction that moves
//! the position, leases due deliveries (one attempt of a delivery at a time, across replicas),
//! attempts up to `concurrency` at once, and stores each end (delivered, retry with backoff and
//! jitter, dead). Every write goes through the audit writer and shares its commits.
//!
//! The worker keeps up to `concurrency` more deliveries leased beyond those in flight, so a
//! finished attempt is followed by the next at once, not after a commit; the ends are stored
//! by a task of their own ([`store_ends`]), batched, so storing them never holds attempts back.

use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::event;
use super::http_target::Attempt;
use super::metrics::{AttemptResult, TargetMetrics};
use super::sender::{Message, Sender};
use crate::clock::{SharedClock, parse_rfc3339_millis};
use crate::config::DeliverySettings;
use crate::store::deliveries::{DeliveryOp, DeliveryState, Finish, NewDelivery};
use crate::store::{AuditStore, EventFilter, KindFilter, Order, StoreError, StoreReader};

/// Records read from the log per page.
const SCAN_PAGE: u32 = 500;
/// Pages read from the log per refill at most (the rest at the next wake-up).
const SCAN_PAGES: usize = 4;
/// Longest a worker sleeps without looking for due retries (and a CLI's requeue).
const POLL: Duration = Duration::from_secs(1);
/// How often the backlog metrics are read from the store.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);
/// Records examined without a match after which the position is stored anyway.
const LAZY_ADVANCE: i64 = 1_000;
/// First retry delay; it doubles with each attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF_MS: i64 = 1_000;
/// Longest delay between attempts.
const MAX_BACKOFF_MS: i64 = 600_000;

/// The delay before attempt `n + 1` after `n` failed ones: doubling from a second up to ten
/// minutes, then a random point in its upper half (so a recovering target is not hit by every
/// delivery at once).
pub fn backoff_ms(failed: i64, jitter: f64) -> i64 {
    let exp = failed.clamp(1, 30) - 1;
    let full = FIRST_BACKOFF_MS
        .saturating_mul(1_i64 << exp)
        .min(MAX_BACKOFF_MS);
    let half = full / 2;
    half + (half as f64 * jitter.clamp(0.0, 1.0)) as i64
}

/// A number in `[0, 1)` from the system's random source.
fn jitter() -> f64 {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 4];
    let _ = SystemRandom::new().fill(&mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// A delivery being attempted.
struct InFlight {
    event_id: i64,
    delivery_id: String,
    attempts: i64,
    pending_since: i64,
}

/// What an attempt task hands back.
struct Ended {
    flight: InFlight,
    received_at: Option<i64>,
    attempt: Attempt,
}

/// One target's worker.
pub(super) struct Worker {
    target: Arc<DeliverySettings>,
    sender: Arc<Sender>,
    store: AuditStore,
    reader: StoreReader,
    clock: SharedClock,
    metrics: Arc<TargetMetrics>,
    /// This process's lease name.
    owner: String,
    /// The stored position (what another replica would read).
    stored: i64,
    /// The last record examined (ahead of `stored` while nothing matched).
    scanned: i64,
    /// When `scanned` last moved past `stored` unstored.
    unstored_since: Option<Instant>,
    /// Leased here, not yet started, oldest first.
    ready: VecDeque<InFlight>,
}

impl Worker {
    /// A worker for `target`, not started.
    pub(super) fn new(
        target: Arc<DeliverySettings>,
        sender: Arc<Sender>,
        store: AuditStore,
        clock: SharedClock,
        metrics: Arc<TargetMetrics>,
        owner: String,
    ) -> Self {
        Self {
            reader: store.reader(),
            target,
            sender,
            store,
            clock,
            metrics,
            owner,
            stored: 0,
            scanned: 0,
            unstored_since: None,
            ready: VecDeque::new(),
        }
    }

    /// Runs until `stop` turns true; then waits briefly for attempts in flight, stores their
    /// ends and releases the leases it still holds. `head` is the last record committed
    /// before the service began to serve (where a new target starts).
    pub(super) async fn run(mut self, head: i64, mut stop: watch::Receiver<bool>) {
        let mut committed = self.store.committed();
        loop {
            let Err(e) = self.init(head).await else {
                break;
            };
            tracing::warn!(target = %self.target.name, "delivery position not read: {e}");
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
        let (ends, ends_rx) = mpsc::unbounded_channel();
        let storing = tokio::spawn(store_ends(
            self.store.clone(),
            self.target.name.clone(),
            Arc::clone(&self.clock),
            ends_rx,
        ));
        let mut attempts: JoinSet<Ended> = JoinSet::new();
        let mut next_backlog = Instant::now();
        loop {
            if let Err(e) = self.refill(attempts.len()).await {
                tracing::warn!(target = %self.target.name, "delivery step failed: {e}");
            }
            self.start_ready(&mut attempts);
            tokio::select! {
                _ = committed.changed() => {}
                Some(joined) = attempts.join_next(), if !attempts.is_empty() => {
                    self.collect(joined, &ends);
                    while let Some(more) = attempts.try_join_next() {
                        self.collect(more, &ends);
                    }
                    self.start_ready(&mut attempts);
                }
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => break,
            }
            if Instant::now() >= next_backlog {
                self.read_backlog().await;
                next_backlog = Instant::now() + BACKLOG_EVERY;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(joined) = attempts.join_next().await {
                self.collect(joined, &ends);
            }
        })
        .await;
        attempts.abort_all();
        drop(ends);
        let _ = storing.await;
        let release = DeliveryOp::Release {
            owner: self.owner.clone(),
        };
        if let Err(e) = self.store.deliveries(vec![release]).await {
            tracing::warn!(target = %self.target.name, "delivery leases not released: {e}");
        }
    }

    /// Reads the target's position, or starts it at `head`.
    async fn init(&mut self, head: i64) -> Result<(), StoreError> {
        let name = &self.target.name;
        let position = match self.reader.delivery_position(name).await? {
            Some(p) => p,
            None => {
                let op = DeliveryOp::InitPosition {
                    target: name.clone(),
                    position: head,
                };
                self.store.deliveries(vec![op]).await?;
                self.reader.delivery_position(name).await?.unwrap_or(head)
            }
        };
        self.stored = position;
        self.scanned = position;
        tracing::info!(target = %name, position, kind = self.target.kind.name(), "delivery started");
        Ok(())
    }

    /// Longest one attempt may take in all (reading the record, connecting, sending): its
    /// timeout and two seconds more, enforced around the attempt.
    fn attempt_bound(&self) -> Duration {
        self.target.timeout + Duration::from_secs(2)
    }

    /// How long a lease lasts: a delivery waits in `ready` for at most one attempt's bound, then
    /// takes one, plus a margin; so a replica that died hands its deliveries on within that time
    /// (49 s with the longest timeout, 20 s).
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.attempt_bound().as_millis()).unwrap_or(22_000) * 2 + 5_000
    }

    /// Starts leased deliveries while fewer than `concurrency` are in flight.
    fn start_ready(&mut self, attempts: &mut JoinSet<Ended>) {
        while attempts.len() < self.target.concurrency {
            let Some(flight) = self.ready.pop_front() else {
                return;
            };
            self.spawn(attempts, flight);
        }
    }

    /// Examines new records and leases due deliveries, up to `concurrency` beyond those in
    /// flight, in one write: the position's move, the new deliveries (the first ones leased
    /// here) and the leases of due ones.
    async fn refill(&mut self, in_flight: usize) -> Result<(), StoreError> {
        let want = (2 * self.target.concurrency).saturating_sub(in_flight + self.ready.len());
        let now = self.clock.now_millis();
        let until = now + self.lease_ms();
        let mut ops = Vec::new();
        let mut leased = Vec::new();
        let mut free = want;
        let last = self
            .scan(&mut ops, &mut leased, &mut free, now, until)
            .await?;
        let mut due = Vec::new();
        if free > 0 {
            due = (self.reader)
                .due_deliveries(&self.target.name, now, u32::try_from(free).unwrap_or(1))
                .await?;
            due.retain(|d| !leased.iter().any(|(id, _)| *id == d.event_id));
            for d in &due {
                ops.push(DeliveryOp::Lease {
                    target: self.target.name.clone(),
                    event_id: d.event_id,
                    owner: self.owner.clone(),
                    until,
                    now,
                });
            }
        }
        let found = last.is_some_and(|l| l > self.stored);
        let unstored = last.unwrap_or(self.scanned) - self.stored;
        let since = *self.unstored_since.get_or_insert_with(Instant::now);
        let advance = found
            && (!leased.is_empty()
                || ops.iter().any(|o| matches!(o, DeliveryOp::Insert(_)))
                || unstored >= LAZY_ADVANCE
                || since.elapsed() >= POLL * 2);
        if advance && let Some(to) = last {
            ops.insert(
                0,
                DeliveryOp::Advance {
                    target: self.target.name.clone(),
                    from: self.stored,
                    to,
                },
            );
        }
        if ops.is_empty() {
            // Nothing to deliver: the position is stored later, with the next match or after
            // a while (a crash re-examines at most these records).
            if let Some(l) = last {
                self.scanned = l;
            }
            return Ok(());
        }
        // On failure nothing moves: the same records are examined again at the next step.
        let changed = self.store.deliveries(ops.clone()).await?;
        if let Some(l) = last {
            self.scanned = l;
        }
        if advance {
            self.unstored_since = None;
            if changed.first() == Some(&1) {
                self.stored = self.scanned;
            } else if let Some(p) = self.reader.delivery_position(&self.target.name).await? {
                // Another replica moved it: ours and its rows are the same deliveries.
                self.stored = p;
                self.scanned = self.scanned.max(p);
            }
        }
        for (op, n) in ops.iter().zip(&changed) {
            if *n != 1 {
                continue;
            }
            match op {
                DeliveryOp::Insert(d) if d.lease.is_some() => self.ready.push_back(InFlight {
                    event_id: d.event_id,
                    delivery_id: d.delivery_id.clone(),
                    attempts: 0,
                    pending_since: now,
                }),
                DeliveryOp::Lease { event_id, .. } => {
                    if let Some(d) = due.iter().find(|d| d.event_id == *event_id) {
                        self.ready.push_back(InFlight {
                            event_id: d.event_id,
                            delivery_id: d.delivery_id.clone(),
                            attempts: d.attempts,
                            pending_since: d.pending_since,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads up to [`SCAN_PAGES`] pages of records after `scanned` and adds an insert for each
    /// match to `ops`, the first `free` leased (noted in `leased`). Returns the last record
    /// examined, if any.
    async fn scan(
        &mut self,
        ops: &mut Vec<DeliveryOp>,
        leased: &mut Vec<(i64, String)>,
        free: &mut usize,
        now: i64,
        until: i64,
    ) -> Result<Option<i64>, StoreError> {
        let max_age = i64::try_from(self.target.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut after = self.scanned;
        let mut last = None;
        for _ in 0..SCAN_PAGES {
            let filter = EventFilter {
                kind: KindFilter::Logout,
                after: Some(after),
                order: Order::Asc,
                limit: SCAN_PAGE,
                ..EventFilter::default()
            };
            let records = self.reader.query(&filter).await?;
            let Some(page_last) = records.last().map(|r| r.id) else {
                break;
            };
            for r in &records {
                let Some(event_type) = event::matches(&self.target, r) else {
                    continue;
                };
                let received_at = parse_rfc3339_millis(&r.received_at).unwrap_or(now);
                let expired = now.saturating_sub(received_at) > max_age;
                let delivery_id = format!("msg_{}", crate::util::random_id().replace('-', ""));
                let lease = (!expired && *free > 0).then(|| {
                    *free -= 1;
                    leased.push((r.id, delivery_id.clone()));
                    (self.owner.clone(), until)
                });
                ops.push(DeliveryOp::Insert(NewDelivery {
                    target: self.target.name.clone(),
                    event_id: r.id,
                    delivery_id,
                    event_type: event_type.into(),
                    received_at,
                    state: if expired {
                        DeliveryState::Dead
                    } else {
                        DeliveryState::Pending
                    },
                    next_attempt_at: now,
                    last_error: expired.then(|| "older than max_age when found".to_owned()),
                    lease,
                }));
            }
            after = page_last;
            last = Some(page_last);
            if records.len() < SCAN_PAGE as usize {
                break;
            }
        }
        Ok(last)
    }

    /// Starts one attempt.
    fn spawn(&self, attempts: &mut JoinSet<Ended>, flight: InFlight) {
        let reader = self.reader.clone();
        let sender = Arc::clone(&self.sender);
        let clock = Arc::clone(&self.clock);
        let bound = self.attempt_bound();
        attempts.spawn(async move {
            let attempt = async {
                match message(&reader, flight.event_id, &flight.delivery_id).await {
                    Ok(Some((m, received_at))) => {
                        (sender.send(&m, clock.now_secs()).await, Some(received_at))
                    }
                    Ok(None) => (Attempt::Dead("the record is no longer stored".into()), None),
                    Err(e) => (Attempt::Retry(format!("reading the record: {e}")), None),
                }
            };
            let (attempt, received_at) = tokio::time::timeout(bound, attempt)
                .await
                .unwrap_or_else(|_| (Attempt::Retry(format!("no answer within {bound:?}")), None));
            Ended {
                flight,
                received_at,
                attempt,
            }
        });
    }

    /// Counts an attempt's end and hands the write that stores it to [`store_ends`].
    fn collect(
        &self,
        joined: Result<Ended, tokio::task::JoinError>,
        ends: &mpsc::UnboundedSender<DeliveryOp>,
    ) {
        let Ok(Ended {
            flight,
            received_at,
            attempt,
        }) = joined
        else {
            // A panicked attempt keeps its lease until it expires; the delivery is retried then.
            return;
        };
        let now = self.clock.now_millis();
        let failed = flight.attempts + 1;
        tracing::debug!(target = %self.target.name, event_id = flight.event_id, ?attempt, "delivery attempt ended");
        let how = match attempt {
            Attempt::Delivered => {
                self.metrics.attempt(AttemptResult::Delivered);
                if let Some(at) = received_at {
                    self.metrics.delivered_after(now - at);
                }
                Finish::Delivered
            }
            Attempt::Dead(error) => {
                self.metrics.attempt(AttemptResult::Dead);
                Finish::Dead { error }
            }
            Attempt::Retry(error) => {
                let max_age = i64::try_from(self.target.max_age.as_millis()).unwrap_or(i64::MAX);
                let next = now + backoff_ms(failed, jitter());
                if next.saturating_sub(flight.pending_since) > max_age {
                    self.metrics.attempt(AttemptResult::Dead);
                    Finish::Dead {
                        error: format!(
                            "not delivered within max_age after {failed} attempts: {error}"
                        ),
                    }
                } else {
                    self.metrics.attempt(AttemptResult::Retry);
                    Finish::Retry {
                        next_attempt_at: next,
                        error,
                    }
                }
            }
        };
        if let Finish::Dead { error } = &how {
            tracing::warn!(target = %self.target.name, event_id = flight.event_id, "delivery dead: {error}");
        }
        let _ = ends.send(DeliveryOp::Finish {
            target: self.target.name.clone(),
            event_id: flight.event_id,
            owner: self.owner.clone(),
            at: now,
            how,
        });
    }

    /// Refreshes the backlog gauges.
    async fn read_backlog(&self) {
        match self.reader.delivery_backlog(&self.target.name).await {
            Ok(b) => {
                let age = b
                    .oldest_received_at
                    .map_or(0, |t| self.clock.now_millis().saturating_sub(t));
                self.metrics.backlog(b.pending, age);
            }
            Err(e) => tracing::debug!(target = %self.target.name, "backlog not read: {e}"),
        }
    }
}

/// Stores attempts' ends, whatever has arrived in one write, until the worker drops its
/// sender. After a failing target succeeds again, each write also makes the next batch of its
/// waiting deliveries due, until a batch finds none. A write that fails leaves those
/// deliveries leased until the lease expires; they are attempted again then (at least once,
/// never lost).
async fn store_ends(
    store: AuditStore,
    target: String,
    clock: SharedClock,
    mut rx: mpsc::UnboundedReceiver<DeliveryOp>,
) {
    let mut batch = Vec::new();
    let (mut failing, mut recovering) = (false, false);
    while rx.recv_many(&mut batch, 1024).await > 0 {
        for op in &batch {
            if let DeliveryOp::Finish { how, .. } = op {
                match how {
                    Finish::Retry { .. } => failing = true,
                    Finish::Delivered if failing => {
                        failing = false;
                        recovering = true;
                    }
                    _ => {}
                }
            }
        }
        let hastening = recovering && !failing;
        if hastening {
            batch.push(DeliveryOp::Hasten {
                target: target.clone(),
                now: clock.now_millis(),
            });
        }
        match store.deliveries(std::mem::take(&mut batch)).await {
            Ok(changed) if hastening && changed.last() == Some(&0) => recovering = false,
            Ok(_) => {}
            Err(e) => tracing::warn!(target = %target, "delivery results not stored: {e}"),
        }
    }
}

/// The message of one record: its JSON event, its token (a duplicate's is its original's, the
/// same token), and its time; `None` when the record is gone (retention).
async fn message(
    reader: &StoreReader,
    event_id: i64,
    delivery_id: &str,
) -> Result<Option<(Message, i64)>, StoreError> {
    let Some((record, token)) = reader.event(event_id).await? else {
        return Ok(None);
    };
    let token = match (token, record.duplicate_of) {
        (Some(t), _) => Some(t),
        (None, Some(original)) => reader.event(original).await?.and_then(|(_, t)| t),
        (None, None) => None,
    };
    let event_type = match record.outcome.as_deref() {
        Some("duplicate") => event::DUPLICATE,
        _ => event::ACCEPTED,
    };
    let received_at = parse_rfc3339_millis(&record.received_at).unwrap_or(0);
    Ok(Some((
        Message {
            delivery_id: delivery_id.to_owned(),
            body: event::body(event_type, &record),
            token,
        },
        received_at,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_ten_minutes_with_jitter_in_the_upper_half() {
        assert_eq!(backoff_ms(1, 0.0), 500);
        assert_eq!(backoff_ms(1, 1.0), 1_000);
        assert_eq!(backoff_ms(2, 1.0), 2_000);
        assert_eq!(backoff_ms(5, 1.0), 16_000);
        assert_eq!(backoff_ms(10, 1.0), 512_000);
        assert_eq!(backoff_ms(11, 1.0), 600_000);
        assert_eq!(backoff_ms(60, 0.5), 450_000);
    }
}
