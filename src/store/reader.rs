//! The read side: one handle over either backend's reader, for the service's query API, the
//! CLI and the verifier.

use super::report::{GroupBy, Summary};
use super::{ChainDigest, ChainRow, EventFilter, StoreError, StoredCheckpoint, StoredRecord};
use super::{postgres, record, sqlite};

/// The read side of either backend.
#[derive(Debug, Clone)]
pub(super) enum Reader {
    /// A SQLite store.
    Sqlite(sqlite::Reader),
    /// A PostgreSQL store.
    Postgres(postgres::Reader),
}

/// Calls the same method on whichever backend a [`Reader`] holds.
macro_rules! on_backend {
    ($reader:expr, $r:ident => $call:expr) => {
        match $reader {
            Reader::Sqlite($r) => $call,
            Reader::Postgres($r) => $call,
        }
    };
}

/// A read-only handle on a store, for the CLI and the verifier.
#[derive(Debug, Clone)]
pub struct StoreReader(pub(super) Reader);

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
    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> bool {
        on_backend!(&self.0, r => r.ping().await)
    }

    /// Reads records matching a filter.
    pub async fn query(&self, filter: &EventFilter) -> Result<Vec<StoredRecord>, StoreError> {
        on_backend!(&self.0, r => r.query(filter).await)
    }

    /// One page of records as NDJSON, built by the database (the NDJSON export's fast path):
    /// the same objects as serialising [`StoredRecord`]s.
    pub async fn ndjson_page(&self, filter: &EventFilter) -> Result<NdjsonPage, StoreError> {
        on_backend!(&self.0, r => r.ndjson_page(filter).await)
    }

    /// How many records match a filter (its limit and cursor ignored).
    pub async fn count(&self, filter: &EventFilter) -> Result<i64, StoreError> {
        on_backend!(&self.0, r => r.count(filter).await)
    }

    /// The first and last id of the records in the filter's time window (all records when it
    /// sets none), `None` when there are none: every match lies between them. An export takes
    /// this once, then pages through that fixed range.
    pub async fn id_window(&self, filter: &EventFilter) -> Result<Option<(i64, i64)>, StoreError> {
        on_backend!(&self.0, r => r.id_window(filter).await)
    }

    /// One record by id, with the stored token (kept for accepted records only).
    pub async fn event(
        &self,
        id: i64,
    ) -> Result<Option<(StoredRecord, Option<String>)>, StoreError> {
        on_backend!(&self.0, r => r.event(id).await)
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
        let by_sid = on_backend!(&self.0, r => r.session_logout(iss, sid).await)?;
        let by_sub = match subject_since {
            Some((sub, since)) => {
                on_backend!(&self.0, r => r.subject_logout(iss, sub, since).await)?
            }
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
        on_backend!(&self.0, r => r.summary(filter, group_by).await)
    }

    /// `EXPLAIN QUERY PLAN` of the page query for a filter, one line per step (index checks).
    pub async fn query_plan(&self, filter: &EventFilter) -> Result<Vec<String>, StoreError> {
        on_backend!(&self.0, r => r.query_plan(filter).await)
    }

    /// `EXPLAIN QUERY PLAN` of the session-status queries (index checks).
    pub async fn session_plans(&self) -> Result<Vec<String>, StoreError> {
        on_backend!(&self.0, r => r.session_plans().await)
    }

    /// Up to `limit` chained rows after id `after`, in id order.
    pub async fn chain_rows(&self, after: i64, limit: u32) -> Result<Vec<ChainRow>, StoreError> {
        on_backend!(&self.0, r => r.chain_rows(after, limit).await)
    }

    /// Up to `limit` rows after id `after` as content digests (the verifier's fast path); a
    /// row holding a value of the wrong type is an `Err((id, why))`.
    pub async fn chain_digests(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Result<ChainDigest, (i64, String)>>, StoreError> {
        on_backend!(&self.0, r => r.chain_digests(after, limit).await)
    }

    /// Up to `limit` entry hashes of records removed by retention, after id `after`.
    pub async fn purged_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        on_backend!(&self.0, r => r.purged_hashes(after, limit).await)
    }

    /// Up to `limit` entry hashes (purged or stored) after id `after`: the Merkle leaves.
    pub async fn entry_hashes(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        on_backend!(&self.0, r => r.entry_hashes(after, limit).await)
    }

    /// The retention anchor, if a retention run removed a prefix.
    pub async fn anchor(&self) -> Result<Option<(i64, [u8; 32])>, StoreError> {
        on_backend!(&self.0, r => r.anchor().await)
    }

    /// Every stored checkpoint.
    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        on_backend!(&self.0, r => r.checkpoints().await)
    }

    /// Names of the triggers in place.
    pub async fn guards(&self) -> Result<Vec<String>, StoreError> {
        on_backend!(&self.0, r => r.guards().await)
    }

    /// An archived key set: issuer and document.
    pub async fn key_set(&self, digest: &[u8]) -> Result<Option<(String, String)>, StoreError> {
        on_backend!(&self.0, r => r.key_set(digest).await)
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
