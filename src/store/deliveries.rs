//! The store's side of delivery (issue 13): each target's position in the log, and one row per
//! matching record and target (`deliveries`) with its state, attempts, lease and last error.
//! Writes are [`DeliveryOp`]s the writer runs inside its batch transaction (they share its
//! commit); reads are written once for both databases over a [`Dialect`].

use serde::Serialize;
use sqlx::{Pool, QueryBuilder};

use super::StoreError;
use super::cells::Cells;
use super::dialect::{Arg, Dialect};
use super::select::push_time;
use crate::clock::format_millis as rfc3339_ms;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not yet delivered; attempted when due.
    Pending,
    /// The target acknowledged it.
    Delivered,
    /// Given up: refused for good, or not delivered within the target's `max_age`.
    Dead,
}

impl DeliveryState {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

/// A new delivery: one matching record for one target.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The target's name.
    pub target: String,
    /// The audit record delivered.
    pub event_id: i64,
    /// The delivery's id, stable across its retries (`webhook-id`, `Nats-Msg-Id`).
    pub delivery_id: String,
    /// `logout.accepted` or `logout.duplicate`.
    pub event_type: String,
    /// The record's time (ms).
    pub received_at: i64,
    /// `Pending` (attempted from `next_attempt_at`) or `Dead` (too old when found).
    pub state: DeliveryState,
    /// When it is first due (ms).
    pub next_attempt_at: i64,
    /// Why it is dead, when it is.
    pub last_error: Option<String>,
    /// Taken at once by this owner until this time (ms), so no other replica attempts it.
    pub lease: Option<(String, i64)>,
}

/// How an attempt ended, as stored.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Acknowledged by the target.
    Delivered,
    /// Failed; due again at this time (ms).
    Retry {
        /// When (ms).
        next_attempt_at: i64,
        /// Why this attempt failed.
        error: String,
    },
    /// Given up.
    Dead {
        /// Why.
        error: String,
    },
}

/// One write of the delivery side; each answers how many rows it changed.
#[derive(Debug, Clone)]
pub enum DeliveryOp {
    /// Creates a target's position if it has none.
    InitPosition {
        /// The target.
        target: String,
        /// Where it starts (records after it are examined).
        position: i64,
    },
    /// Moves a target's position from `from` to `to`: changes nothing if another replica moved
    /// it meanwhile.
    Advance {
        /// The target.
        target: String,
        /// The position this replica read.
        from: i64,
        /// The last record examined.
        to: i64,
    },
    /// Inserts a delivery unless it exists.
    Insert(NewDelivery),
    /// Takes a due delivery for `owner` until `until`, unless another holds a live lease.
    Lease {
        /// The target.
        target: String,
        /// The record.
        event_id: i64,
        /// Who takes it.
        owner: String,
        /// Until when (ms).
        until: i64,
        /// Now (ms).
        now: i64,
    },
    /// Stores an attempt's end, if `owner` still holds the lease.
    Finish {
        /// The target.
        target: String,
        /// The record.
        event_id: i64,
        /// Who attempted it.
        owner: String,
        /// When the attempt ended (ms).
        at: i64,
        /// How.
        how: Finish,
    },
    /// Makes unleased pending deliveries of a target due now, the [`HASTEN_BATCH`] next ones
    /// (the target answers again; repeated until it changes nothing).
    Hasten {
        /// The target.
        target: String,
        /// Now (ms).
        now: i64,
    },
    /// Gives up every lease `owner` holds (a clean shutdown), so its deliveries are due at once.
    Release {
        /// Whose leases.
        owner: String,
    },
    /// Makes deliveries pending and due now again (`deliveries retry`): one record's, or every
    /// dead one of the target.
    Requeue {
        /// The target.
        target: String,
        /// One record, or `None` for every dead delivery.
        event_id: Option<i64>,
        /// Now (ms).
        now: i64,
    },
}

/// A stored delivery, as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The target's name.
    pub target: String,
    /// The audit record delivered.
    pub event_id: i64,
    /// The delivery's id (`webhook-id`, `Nats-Msg-Id`).
    pub delivery_id: String,
    /// `logout.accepted` or `logout.duplicate`.
    pub event_type: String,
    /// The record's time, RFC 3339.
    pub received_at: String,
    /// pending, delivered or dead.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: i64,
    /// When the last attempt ended.
    pub last_attempt_at: Option<String>,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<String>,
    /// When the target acknowledged it.
    pub delivered_at: Option<String>,
    /// Why the last attempt failed, or why it is dead.
    pub last_error: Option<String>,
}

/// A due delivery a dispatcher may lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The record.
    pub event_id: i64,
    /// The delivery's id.
    pub delivery_id: String,
    /// Attempts so far.
    pub attempts: i64,
    /// When it last became pending (ms): it is dead once still failing `max_age` after.
    pub pending_since: i64,
}

/// Which deliveries a listing shows.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// One target.
    pub target: Option<String>,
    /// One state.
    pub state: Option<DeliveryState>,
    /// One record.
    pub event_id: Option<i64>,
    /// Records received at or after (ms).
    pub since: Option<i64>,
    /// Records received before (ms).
    pub until: Option<i64>,
    /// Keyset position: deliveries before this `(event_id, target)`, newest first.
    pub before: Option<(i64, String)>,
    /// Most rows.
    pub limit: u32,
}

/// A target's backlog, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Pending deliveries.
    pub pending: i64,
    /// The oldest pending record's time (ms), if any.
    pub oldest_received_at: Option<i64>,
}

/// The columns a listing reads, in [`row_from`]'s order.
fn columns<D: Dialect>() -> String {
    format!(
        "target, event_id, delivery_id, event_type, {}, state, attempts, {}, {}, {}, last_error",
        D::millis("received_at"),
        D::millis("last_attempt_at"),
        D::millis("next_attempt_at"),
        D::millis("delivered_at"),
    )
}

/// Reads one listing row.
fn row_from<R: Cells>(r: &R) -> Result<DeliveryRow, StoreError> {
    let time = |i: usize| -> Result<Option<String>, StoreError> { Ok(r.int(i)?.map(rfc3339_ms)) };
    let state = r.string(5)?.unwrap_or_default();
    Ok(DeliveryRow {
        target: r.string(0)?.unwrap_or_default(),
        event_id: r.int_required(1)?,
        delivery_id: r.string(2)?.unwrap_or_default(),
        event_type: r.string(3)?.unwrap_or_default(),
        received_at: rfc3339_ms(r.int_required(4)?),
        state: DeliveryState::parse(&state).ok_or_else(|| StoreError::Corrupt {
            id: r.int(1).ok().flatten().unwrap_or(0),
            message: format!("delivery state {state:?}"),
        })?,
        attempts: r.int_required(6)?,
        last_attempt_at: time(7)?,
        next_attempt_at: time(8)?,
        delivered_at: time(9)?,
        last_error: r.string(10)?,
    })
}

/// A page of deliveries, newest record first.
pub(super) async fn list<D: Dialect>(
    pool: &Pool<D>,
    f: &DeliveryFilter,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let mut q = QueryBuilder::<D>::new(format!(
        "SELECT {} FROM deliveries WHERE 1 = 1",
        columns::<D>()
    ));
    if let Some(t) = &f.target {
        q.push(" AND target = ").arg(t.clone());
    }
    if let Some(s) = f.state {
        q.push(" AND state = ").arg(s.as_str().to_owned());
    }
    if let Some(id) = f.event_id {
        q.push(" AND event_id = ").arg(id);
    }
    if let Some(t) = f.since {
        q.push(" AND received_at >= ");
        push_time(&mut q, t);
    }
    if let Some(t) = f.until {
        q.push(" AND received_at < ");
        push_time(&mut q, t);
    }
    if let Some((id, target)) = &f.before {
        q.push(" AND (event_id < ")
            .arg(*id)
            .push(" OR (event_id = ")
            .arg(*id)
            .push(" AND target < ")
            .arg(target.clone())
            .push("))");
    }
    q.push(" ORDER BY event_id DESC, target DESC LIMIT ")
        .arg(i64::from(f.limit));
    let rows = q.build().fetch_all(D::on(pool)).await?;
    rows.iter().map(row_from).collect()
}

/// A target's position, if it has one.
pub(super) async fn position<D: Dialect>(
    pool: &Pool<D>,
    target: &str,
) -> Result<Option<i64>, StoreError> {
    let mut q = QueryBuilder::<D>::new("SELECT position FROM delivery_positions WHERE target = ");
    q.arg(target.to_owned());
    let row = q.build().fetch_optional(D::on(pool)).await?;
    Ok(row.map(|r| r.int_required(0)).transpose()?)
}

/// Up to `limit` pending deliveries of a target due at `now` and not leased, oldest due first.
pub(super) async fn due<D: Dialect>(
    pool: &Pool<D>,
    target: &str,
    now: i64,
    limit: u32,
) -> Result<Vec<DueDelivery>, StoreError> {
    let mut q = QueryBuilder::<D>::new(format!(
        "SELECT event_id, attempts, {}, delivery_id FROM deliveries WHERE target = ",
        D::millis("pending_since")
    ));
    q.arg(target.to_owned())
        .push(" AND state = 'pending' AND next_attempt_at <= ");
    push_time(&mut q, now);
    q.push(" AND (lease_until IS NULL OR lease_until <= ");
    push_time(&mut q, now);
    q.push(") ORDER BY next_attempt_at, event_id LIMIT ")
        .arg(i64::from(limit));
    let rows = q.build().fetch_all(D::on(pool)).await?;
    rows.iter()
        .map(|r| {
            Ok(DueDelivery {
                event_id: r.int_required(0)?,
                attempts: r.int_required(1)?,
                pending_since: r.int_required(2)?,
                delivery_id: r.string(3)?.unwrap_or_default(),
            })
        })
        .collect()
}

/// A target's pending count and oldest pending record time.
pub(super) async fn backlog<D: Dialect>(
    pool: &Pool<D>,
    target: &str,
) -> Result<Backlog, StoreError> {
    let mut q = QueryBuilder::<D>::new(format!(
        "SELECT {}, {} FROM deliveries WHERE target = ",
        D::int8("count(*)"),
        D::millis("min(received_at)")
    ));
    q.arg(target.to_owned()).push(" AND state = 'pending'");
    let row = q.build().fetch_one(D::on(pool)).await?;
    Ok(Backlog {
        pending: row.int(0)?.unwrap_or(0),
        oldest_received_at: row.int(1)?,
    })
}

/// Most deliveries one [`DeliveryOp::Hasten`] makes due.
pub const HASTEN_BATCH: u32 = 1_000;

/// A value bound to a delivery statement.
#[derive(Debug, Clone)]
pub(super) enum Val {
    /// An integer (times are ms; the statement converts them where the database stores
    /// timestamps).
    Int(i64),
    /// Text.
    Text(String),
    /// A NULL integer or time.
    NullInt,
    /// A NULL text.
    NullText,
}

/// The delivery statements of one database: written once here with `$n` placeholders and
/// times wrapped by the database's conversion.
#[derive(Debug)]
pub(super) struct Statements {
    init: String,
    advance: String,
    insert: String,
    lease: String,
    delivered: String,
    retry: String,
    dead: String,
    hasten: String,
    requeue_one: String,
    requeue_dead: String,
    release: String,
}

impl Statements {
    /// SQLite's statements: times stored as ms (`$n` is a named parameter there, bound by
    /// name).
    pub(super) fn sqlite() -> Self {
        Self::new(str::to_owned)
    }

    /// PostgreSQL's statements: times converted by `ll_ts`.
    pub(super) fn postgres() -> Self {
        Self::new(|p| format!("ll_ts({p})"))
    }

    /// The statements with each time parameter written by `ts` (e.g. `ll_ts($4)`).
    fn new(ts: fn(&str) -> String) -> Self {
        let finish = |set: &str| {
            format!(
                "UPDATE deliveries SET {set}, attempts = attempts + 1, last_attempt_at = {}, \
                 lease_owner = NULL, lease_until = NULL \
                 WHERE target = $1 AND event_id = $2 AND lease_owner = $3 AND state = 'pending'",
                ts("$4")
            )
        };
        Self {
            init: "INSERT INTO delivery_positions (target, position) VALUES ($1, $2) \
                   ON CONFLICT (target) DO NOTHING"
                .into(),
            advance: "UPDATE delivery_positions SET position = $3 \
                      WHERE target = $1 AND position = $2"
                .into(),
            insert: format!(
                "INSERT INTO deliveries (target, event_id, delivery_id, event_type, received_at, \
                 state, pending_since, next_attempt_at, last_error, lease_owner, lease_until) \
                 VALUES ($1, $2, $3, $4, {}, $6, {}, {}, $9, $10, {}) \
                 ON CONFLICT (target, event_id) DO NOTHING",
                ts("$5"),
                ts("$7"),
                ts("$8"),
                ts("$11")
            ),
            lease: format!(
                "UPDATE deliveries SET lease_owner = $3, lease_until = {} \
                 WHERE target = $1 AND event_id = $2 AND state = 'pending' \
                 AND (lease_until IS NULL OR lease_until <= {})",
                ts("$4"),
                ts("$5")
            ),
            delivered: finish(&format!(
                "state = 'delivered', delivered_at = {}, next_attempt_at = NULL, last_error = NULL",
                ts("$4")
            )),
            retry: finish(&format!("next_attempt_at = {}, last_error = $6", ts("$5"))),
            dead: finish("state = 'dead', next_attempt_at = NULL, last_error = $5"),
            // At most HASTEN_BATCH at a time, so a long backlog never makes one long write.
            hasten: format!(
                "UPDATE deliveries SET next_attempt_at = {0} WHERE target = $1 \
                 AND state = 'pending' AND event_id IN (SELECT event_id FROM deliveries \
                 WHERE target = $1 AND state = 'pending' AND next_attempt_at > {0} \
                 AND lease_owner IS NULL ORDER BY next_attempt_at LIMIT {HASTEN_BATCH})",
                ts("$2")
            ),
            requeue_one: format!(
                "UPDATE deliveries SET state = 'pending', pending_since = {0}, \
                 next_attempt_at = {0}, delivered_at = NULL, lease_owner = NULL, \
                 lease_until = NULL WHERE target = $1 AND event_id = $3",
                ts("$2")
            ),
            requeue_dead: format!(
                "UPDATE deliveries SET state = 'pending', pending_since = {0}, \
                 next_attempt_at = {0}, lease_owner = NULL, lease_until = NULL \
                 WHERE target = $1 AND state = 'dead'",
                ts("$2")
            ),
            release: "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL \
                      WHERE lease_owner = $1 AND state = 'pending'"
                .into(),
        }
    }

    /// The statement and bound values of one operation.
    pub(super) fn plan(&self, op: &DeliveryOp) -> (&str, Vec<Val>) {
        use Val::{Int, NullInt, NullText, Text};
        let text = |s: &str| Text(s.to_owned());
        match op {
            DeliveryOp::InitPosition { target, position } => {
                (&self.init, vec![text(target), Int(*position)])
            }
            DeliveryOp::Advance { target, from, to } => {
                (&self.advance, vec![text(target), Int(*from), Int(*to)])
            }
            DeliveryOp::Insert(d) => {
                let (owner, until) = match &d.lease {
                    Some((o, u)) => (text(o), Int(*u)),
                    None => (NullText, NullInt),
                };
                let next = match d.state {
                    DeliveryState::Pending => Int(d.next_attempt_at),
                    _ => NullInt,
                };
                let values = vec![
                    text(&d.target),
                    Int(d.event_id),
                    text(&d.delivery_id),
                    text(&d.event_type),
                    Int(d.received_at),
                    text(d.state.as_str()),
                    Int(d.next_attempt_at),
                    next,
                    d.last_error.as_deref().map_or(NullText, text),
                    owner,
                    until,
                ];
                (&self.insert, values)
            }
            DeliveryOp::Lease {
                target,
                event_id,
                owner,
                until,
                now,
            } => (
                &self.lease,
                vec![
                    text(target),
                    Int(*event_id),
                    text(owner),
                    Int(*until),
                    Int(*now),
                ],
            ),
            DeliveryOp::Finish {
                target,
                event_id,
                owner,
                at,
                how,
            } => {
                let mut values = vec![text(target), Int(*event_id), text(owner), Int(*at)];
                let sql = match how {
                    Finish::Delivered => &self.delivered,
                    Finish::Retry {
                        next_attempt_at,
                        error,
                    } => {
                        values.push(Int(*next_attempt_at));
                        values.push(text(error));
                        &self.retry
                    }
                    Finish::Dead { error } => {
                        values.push(text(error));
                        &self.dead
                    }
                };
                (sql, values)
            }
            DeliveryOp::Release { owner } => (&self.release, vec![text(owner)]),
            DeliveryOp::Hasten { target, now } => (&self.hasten, vec![text(target), Int(*now)]),
            DeliveryOp::Requeue {
                target,
                event_id: Some(id),
                now,
            } => (&self.requeue_one, vec![text(target), Int(*now), Int(*id)]),
            DeliveryOp::Requeue {
                target,
                event_id: None,
                now,
            } => (&self.requeue_dead, vec![text(target), Int(*now)]),
        }
    }
}
