//! One worker per target follows the log and delivers: it reads the records after the target's
//! position, turns the matching ones into `deliveries` rows in the same transaction that moves
//! the position, leases due deliveries (one attempt of a delivery at a time, across replicas),
//! attempts up to `concurrency` at once, and stores each end (delivered, retry with backoff and
//! jitter, dead). Every write goes through the audit writer and shares its commits.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
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

/// Records read from the log per step.
const SCAN_PAGE: u32 = 500;
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
    pub(super) target: Arc<DeliverySettings>,
    pub(super) sender: Arc<Sender>,
    pub(super) store: AuditStore,
    pub(super) reader: StoreReader,
    pub(super) clock: SharedClock,
    pub(super) metrics: Arc<TargetMetrics>,
    /// This process's lease name.
    pub(super) owner: String,
    /// The stored position (what another replica would read).
    stored: i64,
    /// The last record examined (ahead of `stored` while nothing matched).
    scanned: i64,
    /// When `scanned` last moved past `stored` unstored.
    unstored_since: Option<Instant>,
    /// Whether the last attempt failed (a success then makes the waiting deliveries due).
    failing: bool,
    /// Whether waiting deliveries are being made due, a batch per wake-up, after a recovery.
    recovering: bool,
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
            failing: false,
            recovering: false,
        }
    }

    /// Runs until `stop` turns true; then waits briefly for attempts in flight, stores their
    /// ends and releases the leases it still holds. `head` is the last record committed before the service began to serve (where a new
    /// target starts).
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
        let mut attempts: JoinSet<Ended> = JoinSet::new();
        let mut ends: Vec<DeliveryOp> = Vec::new();
        let mut next_backlog = Instant::now();
        loop {
            if let Err(e) = self.step(&mut attempts).await {
                tracing::warn!(target = %self.target.name, "delivery step failed: {e}");
            }
            tokio::select! {
                _ = committed.changed() => {}
                Some(joined) = attempts.join_next(), if !attempts.is_empty() => {
                    self.collect(joined, &mut ends);
                    while let Some(more) = attempts.try_join_next() {
                        self.collect(more, &mut ends);
                    }
                }
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => break,
            }
            self.store_ends(&mut ends).await;
            if Instant::now() >= next_backlog {
                self.read_backlog().await;
                next_backlog = Instant::now() + BACKLOG_EVERY;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(joined) = attempts.join_next().await {
                self.collect(joined, &mut ends);
            }
        })
        .await;
        ends.push(DeliveryOp::Release {
            owner: self.owner.clone(),
        });
        self.store_ends(&mut ends).await;
    }

    /// Reads the target's position, or starts it at the log's end (a new target gets the
    /// logouts from its first start on).
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

    /// Examines new records, then leases what is due, up to the free attempt slots.
    async fn step(&mut self, attempts: &mut JoinSet<Ended>) -> Result<(), StoreError> {
        loop {
            let more = self.scan(attempts).await?;
            if !more {
                break;
            }
        }
        let free = self.target.concurrency.saturating_sub(attempts.len());
        if free == 0 {
            return Ok(());
        }
        let now = self.clock.now_millis();
        let due = (self.reader)
            .due_deliveries(&self.target.name, now, u32::try_from(free).unwrap_or(1))
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let ops = due
            .iter()
            .map(|d| DeliveryOp::Lease {
                target: self.target.name.clone(),
                event_id: d.event_id,
                owner: self.owner.clone(),
                until: now + self.lease_ms(),
                now,
            })
            .collect();
        let taken = self.store.deliveries(ops).await?;
        for (d, n) in due.iter().zip(taken) {
            if n == 1 {
                self.spawn(
                    attempts,
                    InFlight {
                        event_id: d.event_id,
                        delivery_id: d.delivery_id.clone(),
                        attempts: d.attempts,
                        pending_since: d.pending_since,
                    },
                );
            }
        }
        Ok(())
    }

    /// How long a lease lasts: an attempt's whole bound ([`Worker::attempt_bound`]) and a
    /// margin, so a replica that died mid-attempt hands its deliveries on within that time
    /// (at most 45 s with the longest timeout, 30 s).
    fn lease_ms(&self) -> i64 {
        i64::try_from(self.attempt_bound().as_millis()).unwrap_or(40_000) + 5_000
    }

    /// Longest one attempt may take in all (reading the record, connecting, sending): its
    /// timeout and ten seconds more, enforced around the attempt.
    fn attempt_bound(&self) -> Duration {
        self.target.timeout + Duration::from_secs(10)
    }

    /// Examines one page of records after the position; matching ones become deliveries (the
    /// first few leased at once to this worker). Returns whether a full page was read.
    async fn scan(&mut self, attempts: &mut JoinSet<Ended>) -> Result<bool, StoreError> {
        let filter = EventFilter {
            kind: KindFilter::Logout,
            after: Some(self.scanned),
            order: Order::Asc,
            limit: SCAN_PAGE,
            ..EventFilter::default()
        };
        let records = self.reader.query(&filter).await?;
        let Some(last) = records.last().map(|r| r.id) else {
            return Ok(false);
        };
        let full = records.len() == SCAN_PAGE as usize;
        let now = self.clock.now_millis();
        let mut free = self.target.concurrency.saturating_sub(attempts.len());
        let mut ops = Vec::new();
        let mut leased = Vec::new();
        for r in &records {
            let Some(event_type) = event::matches(&self.target, r) else {
                continue;
            };
            let received_at = parse_rfc3339_millis(&r.received_at).unwrap_or(now);
            let max_age = i64::try_from(self.target.max_age.as_millis()).unwrap_or(i64::MAX);
            let expired = now.saturating_sub(received_at) > max_age;
            let lease = (!expired && free > 0).then(|| {
                free -= 1;
                leased.push(r.id);
                (self.owner.clone(), now + self.lease_ms())
            });
            ops.push(DeliveryOp::Insert(NewDelivery {
                target: self.target.name.clone(),
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
                lease,
            }));
        }
        let unstored = last - self.stored;
        let since = *self.unstored_since.get_or_insert_with(Instant::now);
        if ops.is_empty() && unstored < LAZY_ADVANCE && since.elapsed() < POLL * 2 {
            // Nothing to deliver: the position is stored later, with the next match or after
            // a while (a crash re-examines at most these records).
            self.scanned = last;
            return Ok(full);
        }
        ops.insert(
            0,
            DeliveryOp::Advance {
                target: self.target.name.clone(),
                from: self.stored,
                to: last,
            },
        );
        let first_insert = 1;
        // On failure nothing moves: the same records are examined again at the next step.
        let changed = self.store.deliveries(ops.clone()).await?;
        self.scanned = last;
        self.unstored_since = None;
        if changed.first() == Some(&1) {
            self.stored = self.scanned;
        } else if let Some(p) = self.reader.delivery_position(&self.target.name).await? {
            // Another replica moved it: ours and its rows are the same deliveries.
            self.stored = p;
            self.scanned = self.scanned.max(p);
        }
        for (op, n) in ops.iter().zip(&changed).skip(first_insert) {
            if let DeliveryOp::Insert(d) = op
                && *n == 1
                && leased.contains(&d.event_id)
            {
                self.spawn(
                    attempts,
                    InFlight {
                        event_id: d.event_id,
                        delivery_id: d.delivery_id.clone(),
                        attempts: 0,
                        pending_since: now,
                    },
                );
            }
        }
        Ok(full)
    }

    /// Starts one attempt.
    fn spawn(&self, attempts: &mut JoinSet<Ended>, flight: InFlight) {
        tracing::debug!(target = %self.target.name, event_id = flight.event_id, attempts = flight.attempts, "delivery attempt");
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

    /// Turns an attempt's end into the write that stores it.
    fn collect(
        &mut self,
        joined: Result<Ended, tokio::task::JoinError>,
        ends: &mut Vec<DeliveryOp>,
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
                if std::mem::take(&mut self.failing) {
                    self.recovering = true;
                }
                Finish::Delivered
            }
            Attempt::Dead(error) => {
                self.metrics.attempt(AttemptResult::Dead);
                Finish::Dead { error }
            }
            Attempt::Retry(error) => {
                self.failing = true;
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
        ends.push(DeliveryOp::Finish {
            target: self.target.name.clone(),
            event_id: flight.event_id,
            owner: self.owner.clone(),
            at: now,
            how,
        });
    }

    /// Stores attempts' ends; on failure they stay leased until the lease expires, and are
    /// attempted again then (at least once, never lost).
    /// After a recovery, the next batch of waiting deliveries is made due with them, until a
    /// batch finds none.
    async fn store_ends(&mut self, ends: &mut Vec<DeliveryOp>) {
        if self.recovering && !self.failing {
            ends.push(DeliveryOp::Hasten {
                target: self.target.name.clone(),
                now: self.clock.now_millis(),
            });
        }
        if ends.is_empty() {
            return;
        }
        let hastening = matches!(ends.last(), Some(DeliveryOp::Hasten { .. }));
        match self.store.deliveries(std::mem::take(ends)).await {
            Ok(changed) => {
                if hastening && changed.last() == Some(&0) {
                    self.recovering = false;
                }
            }
            Err(e) => {
                tracing::warn!(target = %self.target.name, "delivery results not stored: {e}")
            }
        }
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
