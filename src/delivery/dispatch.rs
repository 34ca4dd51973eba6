//! One worker per target follows the log and delivers: it reads the records after the target's
//! position, turns the matching ones into `deliveries` rows in the same transaction that moves
//! the position, leases due deliveries (one attempt of a delivery at a time, across replicas),
//! attempts up to `concurrency` at once, and stores each end (delivered, retry with backoff and
//! jitter, dead). Every write goes through the audit writer and shares its commits.
//!
//! Attempts run in `concurrency` slots ([`slot`]) that take leased deliveries from a queue the
//! worker keeps filled ahead of them ([`Worker::lead`]), so a finished attempt is followed by
//! the next at once, never after a commit or a scan; the ends are stored by a task of their own
//! ([`store_ends`]), batched, so storing them never holds attempts back either.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::event;
use super::http_target::Attempt;
use super::metrics::{AttemptResult, TargetMetrics};
use super::sender::{Message, Sender};
use crate::clock::{SharedClock, parse_rfc3339_millis};
use crate::config::DeliverySettings;
use crate::store::deliveries::{DeliveryOp, DeliveryState, Finish, NewDelivery};
use crate::store::{
    AuditStore, EventFilter, KindFilter, Order, StoreError, StoreReader, StoredRecord,
};

/// Records read from the log per page.
const SCAN_PAGE: u32 = 500;
/// Pages read from the log per refill at most (the rest at the next wake-up).
const SCAN_PAGES: usize = 4;
/// Longest a worker sleeps without looking for due retries (and a CLI's requeue).
const POLL: Duration = Duration::from_secs(1);
/// Shortest time between two refills: commits arrive hundreds of times a second under load, and
/// each refill costs reads and a write; gathering a few milliseconds' records into one refill
/// costs that much latency and saves most of the work.
const REFILL_GAP: Duration = Duration::from_millis(5);
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

/// A leased delivery, queued for a slot or being attempted.
struct InFlight {
    event_id: i64,
    delivery_id: String,
    /// The record as the scan read it (a first attempt needs no second read, unless it
    /// relays the token, which the scan does not read).
    record: Option<Arc<StoredRecord>>,
    attempts: i64,
    pending_since: i64,
    /// Until when this process holds it (ms).
    lease_until: i64,
}

/// What the worker and its attempt slots share.
struct Shared {
    target: Arc<DeliverySettings>,
    sender: Arc<Sender>,
    reader: StoreReader,
    clock: SharedClock,
    metrics: Arc<TargetMetrics>,
    owner: String,
    /// Leased deliveries waiting for a slot, oldest first.
    queue: Mutex<mpsc::UnboundedReceiver<InFlight>>,
    /// How many wait in `queue`.
    queued: AtomicUsize,
    /// How many are being attempted.
    in_flight: AtomicUsize,
    /// How long attempts take (µs), a moving average: how many deliveries to hold leased.
    attempt_us: AtomicU64,
    /// A slot took the queue below `concurrency`, or finished: time to refill.
    hungry: Notify,
    /// Shutting down: queued deliveries are left (their leases are released).
    stopping: AtomicBool,
    /// Where attempts' ends go ([`store_ends`]).
    ends: mpsc::UnboundedSender<DeliveryOp>,
}

impl Shared {
    /// Longest one attempt may take in all (reading the record, connecting, sending): its
    /// timeout and two seconds more, enforced around the attempt.
    fn attempt_bound(&self) -> Duration {
        self.target.timeout + Duration::from_secs(2)
    }
}

/// One target's worker.
pub(super) struct Worker {
    shared: Arc<Shared>,
    store: AuditStore,
    /// Feeds the slots' queue.
    work: mpsc::UnboundedSender<InFlight>,
    /// The stored position (what another replica would read).
    stored: i64,
    /// The last record examined (ahead of `stored` while nothing matched).
    scanned: i64,
    /// When `scanned` last moved past `stored` unstored.
    unstored_since: Option<Instant>,
    /// The ends' receiver, until [`Worker::run`] hands it to [`store_ends`].
    ends_rx: Option<mpsc::UnboundedReceiver<DeliveryOp>>,
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
        let (work, queue) = mpsc::unbounded_channel();
        let (ends, ends_rx) = mpsc::unbounded_channel();
        // Until attempts are timed, as if each took half its bound: `concurrency` held ahead.
        let initial_us = (target.timeout + Duration::from_secs(2)).as_micros() / 2;
        let shared = Arc::new(Shared {
            reader: store.reader(),
            target,
            sender,
            clock,
            metrics,
            owner,
            queue: Mutex::new(queue),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            attempt_us: AtomicU64::new(u64::try_from(initial_us).unwrap_or(u64::MAX)),
            hungry: Notify::new(),
            stopping: AtomicBool::new(false),
            ends,
        });
        Self {
            shared,
            store,
            work,
            stored: 0,
            scanned: 0,
            unstored_since: None,
            ends_rx: Some(ends_rx),
        }
    }

    /// Runs until `stop` turns true; then lets attempts in flight end (2 s at most), stores
    /// their ends and releases the leases it still holds. `head` is the last record committed
    /// before the service began to serve (where a new target starts).
    pub(super) async fn run(mut self, head: i64, mut stop: watch::Receiver<bool>) {
        let mut committed = self.store.committed();
        let name = self.shared.target.name.clone();
        loop {
            let Err(e) = self.init(head).await else {
                break;
            };
            tracing::warn!(target = %name, "delivery position not read: {e}");
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
        let Some(ends_rx) = self.ends_rx.take() else {
            return;
        };
        let storing = tokio::spawn(store_ends(
            self.store.clone(),
            name.clone(),
            Arc::clone(&self.shared.clock),
            ends_rx,
        ));
        let mut slots = JoinSet::new();
        for _ in 0..self.shared.target.concurrency {
            slots.spawn(slot(Arc::clone(&self.shared)));
        }
        let mut next_backlog = Instant::now();
        let mut last_refill = Instant::now();
        loop {
            let since = last_refill.elapsed();
            if since < REFILL_GAP {
                tokio::time::sleep(REFILL_GAP - since).await;
            }
            last_refill = Instant::now();
            if let Err(e) = self.refill().await {
                tracing::warn!(target = %name, "delivery step failed: {e}");
            }
            tokio::select! {
                _ = committed.changed() => {}
                () = self.shared.hungry.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => break,
            }
            if Instant::now() >= next_backlog {
                self.read_backlog().await;
                next_backlog = Instant::now() + BACKLOG_EVERY;
            }
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        let Self { shared, work, .. } = self;
        drop(work);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while slots.join_next().await.is_some() {}
        })
        .await;
        slots.abort_all();
        while slots.join_next().await.is_some() {}
        let (store, owner) = (self.store, shared.owner.clone());
        drop(shared);
        let _ = storing.await;
        if let Err(e) = store.deliveries(vec![DeliveryOp::Release { owner }]).await {
            tracing::warn!(target = %name, "delivery leases not released: {e}");
        }
    }

    /// Reads the target's position, or starts it at `head`.
    async fn init(&mut self, head: i64) -> Result<(), StoreError> {
        let name = &self.shared.target.name;
        let position = match self.shared.reader.delivery_position(name).await? {
            Some(p) => p,
            None => {
                let op = DeliveryOp::InitPosition {
                    target: name.clone(),
                    position: head,
                };
                self.store.deliveries(vec![op]).await?;
                (self.shared.reader.delivery_position(name).await?).unwrap_or(head)
            }
        };
        self.stored = position;
        self.scanned = position;
        let kind = self.shared.target.kind.name();
        tracing::info!(target = %name, position, kind, "delivery started");
        Ok(())
    }

    /// How long a lease lasts: a delivery waits in the queue for at most one attempt's bound,
    /// then takes one, plus a margin; so a replica that died hands its deliveries on within
    /// that time (49 s with the longest timeout, 20 s).
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.shared.attempt_bound().as_millis()).unwrap_or(22_000) * 2 + 5_000
    }

    /// How many deliveries to hold leased beyond those in flight: as many as `concurrency`
    /// attempts get through in one attempt bound at the measured pace (so each waits at most
    /// one bound, and its lease of two bounds covers the wait and the attempt), at least
    /// `concurrency`, at most 256.
    fn lead(&self) -> usize {
        let conc = self.shared.target.concurrency;
        let bound_us = self.shared.attempt_bound().as_secs_f64() * 1e6;
        let attempt_us = self.shared.attempt_us.load(Ordering::Relaxed).max(1) as f64;
        ((bound_us / attempt_us) * conc as f64).clamp(conc as f64, 256.0) as usize
    }

    /// Hands a leased delivery to the slots.
    fn enqueue(&self, flight: InFlight) {
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.work.send(flight).is_err() {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Refreshes the backlog gauges.
    async fn read_backlog(&self) {
        let s = &self.shared;
        match s.reader.delivery_backlog(&s.target.name).await {
            Ok(b) => {
                let age = b
                    .oldest_received_at
                    .map_or(0, |t| s.clock.now_millis().saturating_sub(t));
                s.metrics.backlog(b.pending, age);
            }
            Err(e) => tracing::debug!(target = %s.target.name, "backlog not read: {e}"),
        }
    }

    /// Examines new records and leases due deliveries, up to `concurrency` + [`Worker::lead`]
    /// beyond those queued and in flight, in one write: the position's move, the new
    /// deliveries (the first ones leased here) and the leases of due ones; what this process
    /// leased goes to the slots' queue.
    async fn refill(&mut self) -> Result<(), StoreError> {
        let busy = self.shared.in_flight.load(Ordering::SeqCst)
            + self.shared.queued.load(Ordering::SeqCst);
        let want = (self.shared.target.concurrency + self.lead()).saturating_sub(busy);
        let now = self.shared.clock.now_millis();
        let until = now + self.lease_ms();
        let mut batch = Batch::default();
        let mut free = want;
        let last = self.scan(&mut batch, &mut free, now, until).await?;
        if free > 0 {
            let limit = u32::try_from(free).unwrap_or(1);
            let due = (self.shared.reader)
                .due_deliveries(&self.shared.target.name, now, limit)
                .await?;
            for d in due {
                if batch.leases(d.event_id) {
                    continue;
                }
                let lease = DeliveryOp::Lease {
                    target: self.shared.target.name.clone(),
                    event_id: d.event_id,
                    owner: self.shared.owner.clone(),
                    until,
                    now,
                };
                let flight = InFlight {
                    event_id: d.event_id,
                    delivery_id: d.delivery_id,
                    record: None,
                    lease_until: until,
                    attempts: d.attempts,
                    pending_since: d.pending_since,
                };
                batch.push(lease, Some(flight));
            }
        }
        let found = last.is_some_and(|l| l > self.stored);
        let unstored = last.unwrap_or(self.scanned) - self.stored;
        let since = *self.unstored_since.get_or_insert_with(Instant::now);
        let advance =
            found && (batch.inserts() || unstored >= LAZY_ADVANCE || since.elapsed() >= POLL * 2);
        if advance && let Some(to) = last {
            let op = DeliveryOp::Advance {
                target: self.shared.target.name.clone(),
                from: self.stored,
                to,
            };
            batch.ops.insert(0, op);
            batch.then.insert(0, None);
        }
        if batch.ops.is_empty() {
            // Nothing to deliver: the position is stored later, with the next match or after
            // a while (a crash re-examines at most these records).
            if let Some(l) = last {
                self.scanned = l;
            }
            return Ok(());
        }
        // On failure nothing moves: the same records are examined again at the next step.
        let changed = self.store.deliveries(batch.ops).await?;
        if let Some(l) = last {
            self.scanned = l;
        }
        if advance {
            self.unstored_since = None;
            if changed.first() == Some(&1) {
                self.stored = self.scanned;
            } else if let Some(p) = self
                .shared
                .reader
                .delivery_position(&self.shared.target.name)
                .await?
            {
                // Another replica moved it: ours and its rows are the same deliveries.
                self.stored = p;
                self.scanned = self.scanned.max(p);
            }
        }
        // What this process leased (its insert or lease changed the row) goes to the slots.
        for (flight, n) in batch.then.into_iter().zip(changed) {
            if let (Some(flight), 1) = (flight, n) {
                self.enqueue(flight);
            }
        }
        Ok(())
    }

    /// Reads up to [`SCAN_PAGES`] pages of records after `scanned` and adds an insert for each
    /// match to `batch`, the first `free` leased. Returns the last record examined, if any.
    async fn scan(
        &mut self,
        batch: &mut Batch,
        free: &mut usize,
        now: i64,
        until: i64,
    ) -> Result<Option<i64>, StoreError> {
        let max_age = i64::try_from(self.shared.target.max_age.as_millis()).unwrap_or(i64::MAX);
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
            let records = self.shared.reader.query(&filter).await?;
            let Some(page_last) = records.last().map(|r| r.id) else {
                break;
            };
            let full = records.len() == SCAN_PAGE as usize;
            for r in records {
                let Some(event_type) = event::matches(&self.shared.target, &r) else {
                    continue;
                };
                let received_at = parse_rfc3339_millis(&r.received_at).unwrap_or(now);
                let expired = now.saturating_sub(received_at) > max_age;
                let leased = !expired && *free > 0;
                let insert = NewDelivery {
                    target: self.shared.target.name.clone(),
                    event_id: r.id,
                    delivery_id: format!("msg_{}", crate::util::random_id().replace('-', "")),
                    event_type: event_type.into(),
                    received_at,
                    state: if expired {
                        DeliveryState::Dead
                    } else {
                        DeliveryState::Pending
                    },
                    next_attempt_at: now,
                    last_error: expired.then(|| "older than max_age when found".to_owned()),
                    lease: leased.then(|| (self.shared.owner.clone(), until)),
                };
                let flight = leased.then(|| {
                    *free -= 1;
                    InFlight {
                        event_id: r.id,
                        delivery_id: insert.delivery_id.clone(),
                        record: Some(Arc::new(r)),
                        lease_until: until,
                        attempts: 0,
                        pending_since: now,
                    }
                });
                batch.push(DeliveryOp::Insert(insert), flight);
            }
            after = page_last;
            last = Some(page_last);
            if !full {
                break;
            }
        }
        Ok(last)
    }
}

/// One refill's write, and beside each of its operations the delivery this process takes if
/// that operation changes its row (a leased insert, a lease).
#[derive(Default)]
struct Batch {
    ops: Vec<DeliveryOp>,
    then: Vec<Option<InFlight>>,
}

impl Batch {
    /// Adds an operation and what it hands to the slots.
    fn push(&mut self, op: DeliveryOp, then: Option<InFlight>) {
        self.ops.push(op);
        self.then.push(then);
    }

    /// Whether this batch already takes the delivery of `event_id` (a scan's leased insert).
    fn leases(&self, event_id: i64) -> bool {
        self.then.iter().flatten().any(|f| f.event_id == event_id)
    }

    /// Whether it creates deliveries.
    fn inserts(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, DeliveryOp::Insert(_)))
    }
}

/// One attempt slot: takes the next leased delivery, attempts it, hands its end to
/// [`store_ends`], until the worker stops. A delivery whose lease would run out before its
/// attempt's bound is left alone: it is due again once the lease expires, so no two attempts
/// of a delivery ever overlap.
async fn slot(shared: Arc<Shared>) {
    let bound = shared.attempt_bound();
    let bound_ms = i64::try_from(bound.as_millis()).unwrap_or(i64::MAX);
    loop {
        let next = shared.queue.lock().await.recv().await;
        let Some(flight) = next else {
            return;
        };
        let left = shared
            .queued
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        if left < shared.target.concurrency {
            shared.hungry.notify_one();
        }
        if shared.stopping.load(Ordering::SeqCst)
            || flight.lease_until - shared.clock.now_millis() < bound_ms
        {
            continue;
        }
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let (attempt, received_at) = attempt(&shared, &flight, bound).await;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let avg = shared.attempt_us.load(Ordering::Relaxed);
        let _ = shared.attempt_us.compare_exchange(
            avg,
            (avg / 5) * 4 + took / 5,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        let _ = shared
            .ends
            .send(finish(&shared, &flight, received_at, attempt));
        shared.hungry.notify_one();
    }
}

/// One attempt, bounded in time: the record (read by id unless the scan's copy serves), the
/// message, the send.
async fn attempt(shared: &Shared, flight: &InFlight, bound: Duration) -> (Attempt, Option<i64>) {
    let known = flight
        .record
        .clone()
        .filter(|_| !shared.sender.needs_token());
    let work = async {
        let read = match known {
            Some(record) => Ok(Some(message_of(&record, None, &flight.delivery_id))),
            None => message(&shared.reader, flight.event_id, &flight.delivery_id).await,
        };
        match read {
            Ok(Some((m, received_at))) => (
                shared.sender.send(&m, shared.clock.now_secs()).await,
                Some(received_at),
            ),
            Ok(None) => (Attempt::Dead("the record is no longer stored".into()), None),
            Err(e) => (Attempt::Retry(format!("reading the record: {e}")), None),
        }
    };
    tokio::time::timeout(bound, work)
        .await
        .unwrap_or_else(|_| (Attempt::Retry(format!("no answer within {bound:?}")), None))
}

/// Counts an attempt's end and makes the write that stores it.
fn finish(
    shared: &Shared,
    flight: &InFlight,
    received_at: Option<i64>,
    attempt: Attempt,
) -> DeliveryOp {
    let (target, metrics) = (&shared.target, &shared.metrics);
    let now = shared.clock.now_millis();
    let failed = flight.attempts + 1;
    tracing::debug!(target = %target.name, event_id = flight.event_id, ?attempt, "delivery attempt ended");
    let how = match attempt {
        Attempt::Delivered => {
            metrics.attempt(AttemptResult::Delivered);
            if let Some(at) = received_at {
                metrics.delivered_after(now - at);
            }
            Finish::Delivered
        }
        Attempt::Dead(error) => {
            metrics.attempt(AttemptResult::Dead);
            Finish::Dead { error }
        }
        Attempt::Retry(error) => {
            let max_age = i64::try_from(target.max_age.as_millis()).unwrap_or(i64::MAX);
            let next = now + backoff_ms(failed, jitter());
            if next.saturating_sub(flight.pending_since) > max_age {
                metrics.attempt(AttemptResult::Dead);
                Finish::Dead {
                    error: format!("not delivered within max_age after {failed} attempts: {error}"),
                }
            } else {
                metrics.attempt(AttemptResult::Retry);
                Finish::Retry {
                    next_attempt_at: next,
                    error,
                }
            }
        }
    };
    if let Finish::Dead { error } = &how {
        tracing::warn!(target = %target.name, event_id = flight.event_id, "delivery dead: {error}");
    }
    DeliveryOp::Finish {
        target: target.name.clone(),
        event_id: flight.event_id,
        owner: shared.owner.clone(),
        at: now,
        how,
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
    Ok(Some(message_of(&record, token, delivery_id)))
}

/// The message of a record already read, and its time.
fn message_of(record: &StoredRecord, token: Option<String>, delivery_id: &str) -> (Message, i64) {
    let event_type = match record.outcome.as_deref() {
        Some("duplicate") => event::DUPLICATE,
        _ => event::ACCEPTED,
    };
    let received_at = parse_rfc3339_millis(&record.received_at).unwrap_or(0);
    (
        Message {
            delivery_id: delivery_id.to_owned(),
            body: event::body(event_type, record),
            token,
        },
        received_at,
    )
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
