//! The read side: one handle over either backend's reader, for the service's query API, the
//! CLI and the verifier.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::deliveries::{Backlog, DeliveryFilter, DeliveryRow, DueDelivery};
use super::dialect::Digests;
use super::record;
use super::report::{GroupBy, Summary};
use super::{ChainDigest, ChainRow, EventFilter, StoreError, StoredCheckpoint, StoredRecord};

/// What a read answers, later.
pub(super) type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The read side of a store, as each database implements it (`read::SqlReader`): the
/// counterpart of the writer's `WriteDb`. Boxed futures, so one handle serves either database.
pub(super) trait ReadDb: std::fmt::Debug + Send + Sync {
    /// Whether a trivial query succeeds.
    fn ping(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// A filtered, ordered, limited page of records.
    fn query<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, Vec<StoredRecord>>;
    /// A page as NDJSON.
    fn ndjson_page<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, NdjsonPage>;
    /// How many records match (limit and cursor ignored).
    fn count<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, i64>;
    /// The first and last id received in the filter's time window.
    fn id_window<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, Option<(i64, i64)>>;
    /// One record by id, with the stored token.
    fn event(&self, id: i64) -> Answer<'_, Option<(StoredRecord, Option<String>)>>;
    /// The first verified logout naming a session: id and time.
    fn session_logout<'a>(&'a self, iss: &'a str, sid: &'a str) -> Answer<'a, Option<(i64, i64)>>;
    /// The first verified all-sessions logout of a subject since a time: id and time.
    fn subject_logout<'a>(
        &'a self,
        iss: &'a str,
        sub: &'a str,
        since: i64,
    ) -> Answer<'a, Option<(i64, i64)>>;
    /// Counts per group.
    fn summary<'a>(&'a self, f: &'a EventFilter, group_by: &'a [GroupBy]) -> Answer<'a, Summary>;
    /// The page query's plan, a line per step.
    fn query_plan<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, Vec<String>>;
    /// The session-status queries' plans.
    fn session_plans(&self) -> Answer<'_, Vec<String>>;
    /// Chained rows after an id.
    fn chain_rows(&self, after: i64, limit: u32) -> Answer<'_, Vec<ChainRow>>;
    /// Chained rows after an id as content digests.
    fn chain_digests(&self, after: i64, limit: u32) -> Answer<'_, Digests>;
    /// Entry hashes of purged records after an id.
    fn purged_hashes(&self, after: i64, limit: u32) -> Answer<'_, Vec<(i64, [u8; 32])>>;
    /// Entry hashes, purged or stored, after an id.
    fn entry_hashes(&self, after: i64, limit: u32) -> Answer<'_, Vec<(i64, [u8; 32])>>;
    /// The retention anchor.
    fn anchor(&self) -> Answer<'_, Option<(i64, [u8; 32])>>;
    /// Every checkpoint.
    fn checkpoints(&self) -> Answer<'_, Vec<StoredCheckpoint>>;
    /// Names of the triggers in place.
    fn guards(&self) -> Answer<'_, Vec<String>>;
    /// An archived key set by digest.
    fn key_set<'a>(&'a self, digest: &'a [u8]) -> Answer<'a, Option<(String, String)>>;
    /// A page of deliveries, newest record first.
    fn deliveries<'a>(&'a self, f: &'a DeliveryFilter) -> Answer<'a, Vec<DeliveryRow>>;
    /// A delivery target's position in the log.
    fn delivery_position<'a>(&'a self, target: &'a str) -> Answer<'a, Option<i64>>;
    /// A target's due, unleased pending deliveries.
    fn due_deliveries<'a>(
        &'a self,
        target: &'a str,
        now: i64,
        limit: u32,
    ) -> Answer<'a, Vec<DueDelivery>>;
    /// A target's pending count and oldest pending record.
    fn delivery_backlog<'a>(&'a self, target: &'a str) -> Answer<'a, Backlog>;
}

/// A read-only handle on a store, for the CLI and the verifier.
#[derive(Debug, Clone)]
pub struct StoreReader(Arc<dyn ReadDb>);

/// One page of records as NDJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdjsonPage {
    /// The records, one JSON object a line, `\n`-separated, no trailing newline.
    pub lines: String,
    /// How many records.
    pub count: usize,
    /// The last record's id in the page's order (the next page continues after it).
    pub last_id: Option<i64>,
}

impl NdjsonPage {
    /// The page's records, read back from their JSON.
    pub fn records(&self) -> impl Iterator<Item = Result<StoredRecord, StoreError>> + '_ {
        self.lines
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
                    id: record::line_id(line).unwrap_or(0),
                    message: format!("does not read back: {e}"),
                })
            })
    }

    /// Keeps the first `n` records.
    pub fn truncate(&mut self, n: usize) {
        if self.count <= n {
            return;
        }
        let end = match n.checked_sub(1) {
            None => 0,
            Some(i) => self
                .lines
                .match_indices('\n')
                .nth(i)
                .map_or(self.lines.len(), |(at, _)| at),
        };
        self.lines.truncate(end);
        self.count = n;
        self.last_id = self.lines.rsplit('\n').next().and_then(record::line_id);
    }
}

/// When and by which record a session was logged out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLogout {
    /// The logout record.
    pub event_id: i64,
    /// When it was received (ms since epoch).
    pub at: i64,
}

impl StoreReader {
    /// A handle on a database's read side.
    pub(super) fn new(db: impl ReadDb + 'static) -> Self {
        Self(Arc::new(db))
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> bool {
        self.0.ping().await
    }

    /// A page of deliveries, newest record first (the API and `deliveries list`).
    pub async fn deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        self.0.deliveries(f).await
    }

    /// Where a delivery target stands in the log: the last record it examined.
    pub async fn delivery_position(&self, target: &str) -> Result<Option<i64>, StoreError> {
        self.0.delivery_position(target).await
    }

    /// Pending deliveries of a target due at `now` and leased by nobody, oldest due first.
    pub async fn due_deliveries(
        &self,
        target: &str,
        now: i64,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.0.due_deliveries(target, now, limit).await
    }

    /// A target's pending count and oldest pending record time (metrics).
    pub async fn delivery_backlog(&self, target: &str) -> Result<Backlog, StoreError> {
        self.0.delivery_backlog(target).await
    }

    /// Reads records matching a filter.
    pub async fn query(&self, filter: &EventFilter) -> Result<Vec<StoredRecord>, StoreError> {
        self.0.query(filter).await
    }

    /// One page of records as NDJSON, built by the database (the NDJSON export's fast path):
    /// the same objects as serialising [`StoredRecord`]s.
    pub async fn ndjson_page(&self, filter: &EventFilter) -> Result<NdjsonPage, StoreError> {
        self.0.ndjson_page(filter).await
    }

    /// How many records match a filter (its limit and cursor ignored).
    pub async fn count(&self, filter: &EventFilter) -> Result<i64, StoreError> {
        self.0.count(filter).await
    }

    /// The first and last id of the records in the filter's time window (all records when it
    /// sets none), `None` when there are none: every match lies between them. An export takes
    /// this once, then pages through that fixed range.
    pub async fn id_window(&self, filter: &EventFilter) -> Result<Option<(i64, i64)>, StoreError> {
        self.0.id_window(filter).await
    }

    /// One record by id, with the stored token (kept for accepted records only).
    pub async fn event(
        &self,
        id: i64,
    ) -> Result<Option<(StoredRecord, Option<String>)>, StoreError> {
        self.0.event(id).await
    }

    /// Whether session `sid` of `iss` was logged out: by a verified logout naming it, or, given
    /// `subject_since = (sub, t)`, by a verified logout of all of `sub`'s sessions (no `sid`)
    /// received at or after `t`. The earliest such logout, if any. Rejected tokens never count.
    pub async fn session_status(
        &self,
        iss: &str,
        sid: &str,
        subject_since: Option<(&str, i64)>,
    ) -> Result<Option<SessionLogout>, StoreError> {
        let by_sid = self.0.session_logout(iss, sid).await?;
        let by_sub = match subject_since {
            Some((sub, since)) => self.0.subject_logout(iss, sub, since).await?,
            None => None,
        };
        let first = match (by_sid, by_sub) {
            (Some(a), Some(b)) => Some(if (b.1, b.0) < (a.1, a.0) { b } else { a }),
            (a, b) => a.or(b),
        };
        Ok(first.map(|(event_id, at)| SessionLogout { event_id, at }))
    }

    /// Counts matching records per group of `group_by` (one or two dimensions).
    pub async fn summary(
        &self,
        filter: &EventFilter,
        group_by: &[GroupBy],
    ) -> Result<Summary, StoreError> {
        self.0.summary(filter, group_by).await
    }

    /// `EXPLAIN QUERY PLAN` of the page query for a filter, one line per step (index checks).
    pub async fn query_plan(&self, filter: &EventFilter) -> Result<Vec<String>, StoreError> {
        self.0.query_plan(filter).await
    }

    /// `EXPLAIN QUERY PLAN` of the session-status queries (index checks).
    pub async fn session_plans(&self) -> Result<Vec<String>, StoreError> {
        self.0.session_plans().await
    }

    /// Up to `limit` chained rows after id `after`, in id order.
    pub async fn chain_rows(&self, after: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError> {
        self.0.chain_rows(after, limit).await
    }

    /// Up to `limit` rows after id `after` as content digests (the verifier's fast path); a
    /// row holding a value of the wrong type is an `Err((id, why))`.
    pub async fn chain_digests(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Result<ChainDigest, (i64, String)>>, StoreError> {
        self.0.chain_digests(after, limit).await
    }

    /// Up to `limit` entry hashes of records removed by retention, after id `after`.
    pub async fn purged_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        self.0.purged_hashes(after, limit).await
    }

    /// Up to `limit` entry hashes (purged or stored) after id `after`: the Merkle leaves.
    pub async fn entry_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        self.0.entry_hashes(after, limit).await
    }

    /// The retention anchor, if a retention run removed a prefix.
    pub async fn anchor(&self) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        self.0.anchor().await
    }

    /// Every stored checkpoint.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.0.checkpoints().await
    }

    /// Names of the triggers in place.
    pub async fn guards(&self) -> Result<Vec<String>, StoreError> {
        self.0.guards().await
    }

    /// An archived key set: issuer and document.
    pub async fn key_set(&self, digest: &[u8]) -> Result<Option<(String, String)>, StoreError> {
        self.0.key_set(digest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncating_a_page_keeps_whole_lines_and_the_last_id() {
        let page = NdjsonPage {
            lines: "{\"id\":9,\"a\":\"x\\ny\"}\n{\"id\":8}\n{\"id\":7}".into(),
            count: 3,
            last_id: Some(7),
        };
        let mut two = page.clone();
        two.truncate(2);
        assert_eq!(
            (two.lines.as_str(), two.count, two.last_id),
            ("{\"id\":9,\"a\":\"x\\ny\"}\n{\"id\":8}", 2, Some(8))
        );
        let mut same = page.clone();
        same.truncate(3);
        assert_eq!(same, page);
        let mut none = page;
        none.truncate(0);
        assert_eq!(
            (none.lines.as_str(), none.count, none.last_id),
            ("", 0, None)
        );
    }
}
