//! The audit store: every request becomes one record in an append-only, hash-chained sequence,
//! written through a single group-commit writer and acknowledged only after its transaction
//! commits. No SQL lives outside this module.

mod backend;
mod cells;
pub mod chain;
mod entry;
mod filter;
mod location;
mod postgres;
mod record;
mod report;
mod sqlite;
mod writer;

pub use entry::{Committed, NewRecord, Note, NoteKind, Outcome, resolve};
pub use filter::{
    Cursor, EventFilter, KindFilter, MAX_LIMIT, Order, parse_meta, parse_meta_key,
    parse_metadata_status, parse_outcome, parse_reason,
};
pub use record::StoredRecord;
pub use report::{GroupBy, MAX_GROUP_BY, MAX_GROUPS, Summary, SummaryGroup};
pub use writer::CheckpointRequest;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use self::backend::{ChainOps, append_after_last};
use self::location::Location;
use crate::keys::{FetchedKeySet, KeyArchive};

pub use location::{PASSWORD_ENV, check_url};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one we support.
    #[error(
        "unsupported database URL {0:?} (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)"
    )]
    UnsupportedUrl(String),
    /// Opening, migrating or querying failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The write did not commit within the store timeout.
    #[error("the store did not commit within {0:?}")]
    Timeout(Duration),
    /// The batch this write belonged to failed.
    #[error("the audit batch was not committed: {0}")]
    BatchFailed(String),
    /// The writer's thread or runtime could not be started.
    #[error("cannot start the audit writer: {0}")]
    WriterStart(std::io::Error),
    /// The writer has stopped (shutdown).
    #[error("the audit writer has stopped")]
    WriterGone,
    /// A stored value could not be decoded.
    #[error("stored record {id} is corrupt: {message}")]
    Corrupt {
        /// Record id.
        id: i64,
        /// What is wrong.
        message: String,
    },
    /// Reading the chain through the verifier's own SQLite handle failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// One unit of work for the writer, with where to send its answer.
enum Job {
    Logout(
        Box<NewRecord>,
        oneshot::Sender<Result<Committed, StoreError>>,
    ),
    Note(Note, oneshot::Sender<Result<i64, StoreError>>),
    KeySet(
        FetchedKeySet,
        i64,
        oneshot::Sender<Result<Option<i64>, StoreError>>,
    ),
    Checkpoint(
        CheckpointRequest,
        oneshot::Sender<Result<StoredCheckpoint, StoreError>>,
    ),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

/// The audit store handle: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct AuditStore {
    writer: mpsc::Sender<Job>,
    reader: Reader,
}

/// The read side of either backend.
#[derive(Debug, Clone)]
enum Reader {
    Sqlite(sqlite::Reader),
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

/// Handle to wait for the writer's last batch at shutdown.
#[derive(Debug)]
pub struct WriterTask(oneshot::Receiver<()>);

impl WriterTask {
    /// Waits until the writer has committed everything queued and stopped.
    pub async fn finished(self) {
        let _ = self.0.await;
    }
}

/// Runs the writer on a thread of its own with its own single-threaded runtime. Every batch
/// awaits the database several times; on the shared runtime each wake-up would queue behind
/// the request handlers (JWS verification, HTTP), and that wait is added to every batch that
/// all waiting requests depend on.
fn spawn_writer<W: backend::WriteDb + 'static>(
    db: W,
    rx: mpsc::Receiver<Job>,
    timeout: Duration,
) -> Result<WriterTask, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StoreError::WriterStart)?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || {
            runtime.block_on(writer::run(db, rx, timeout));
            let _ = done.send(());
        })
        .map_err(StoreError::WriterStart)?;
    Ok(WriterTask(finished))
}

async fn submit<T>(
    writer: &mpsc::Sender<Job>,
    job: Job,
    rx: oneshot::Receiver<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    writer.send(job).await.map_err(|_| StoreError::WriterGone)?;
    rx.await.map_err(|_| StoreError::WriterGone)?
}

impl AuditStore {
    /// Opens (creating if missing) and migrates the store, and starts its writer.
    pub async fn open(
        url: &str,
        write_timeout: Duration,
    ) -> Result<(Self, WriterTask), StoreError> {
        let (tx, rx) = mpsc::channel(4096);
        let (handle, reader) = match Location::parse(url)? {
            Location::Sqlite(path) => {
                let (db, reader) = sqlite::open(&path, write_timeout).await?;
                (db, Reader::Sqlite(reader))
            }
            Location::Postgres(options) => {
                let (db, reader) = postgres::open(*options, write_timeout).await?;
                let task = spawn_writer(db, rx, write_timeout)?;
                return Ok((
                    Self {
                        writer: tx,
                        reader: Reader::Postgres(reader),
                    },
                    task,
                ));
            }
        };
        let task = spawn_writer(handle, rx, write_timeout)?;
        Ok((Self { writer: tx, reader }, task))
    }

    /// Opens an existing store for reading only (CLI queries).
    pub async fn open_reader(url: &str) -> Result<StoreReader, StoreError> {
        Ok(StoreReader(match Location::parse(url)? {
            Location::Sqlite(path) => Reader::Sqlite(sqlite::Reader::open_existing(&path).await?),
            Location::Postgres(options) => {
                Reader::Postgres(postgres::Reader::open_existing(*options).await?)
            }
        }))
    }

    /// Records one logout request and returns its final outcome once committed.
    pub async fn append(&self, record: NewRecord) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        submit(&self.writer, Job::Logout(Box::new(record), reply), rx).await
    }

    /// Records an access or system event; returns its sequence number once committed.
    pub async fn note(&self, note: Note) -> Result<i64, StoreError> {
        let (reply, rx) = oneshot::channel();
        submit(&self.writer, Job::Note(note, reply), rx).await
    }

    /// Archives a fetched key set (first/last seen); a new set for an issuer is also recorded
    /// as a `keyset_change` system record, whose id is returned.
    pub async fn archive_key_set(
        &self,
        set: FetchedKeySet,
        seen_at: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (reply, rx) = oneshot::channel();
        submit(&self.writer, Job::KeySet(set, seen_at, reply), rx).await
    }

    /// Signs and stores a checkpoint over every record committed so far, followed by a
    /// `checkpoint` system record.
    pub async fn checkpoint(
        &self,
        request: CheckpointRequest,
    ) -> Result<StoredCheckpoint, StoreError> {
        let (reply, rx) = oneshot::channel();
        submit(&self.writer, Job::Checkpoint(request, reply), rx).await
    }

    /// The read side alone (holds no writer handle, so it never delays shutdown).
    pub fn reader(&self) -> StoreReader {
        StoreReader(self.reader.clone())
    }

    /// Reads records matching a filter.
    pub async fn query(&self, filter: &EventFilter) -> Result<Vec<StoredRecord>, StoreError> {
        on_backend!(&self.reader, r => r.query(filter).await)
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> bool {
        on_backend!(&self.reader, r => r.ping().await)
    }
}

impl KeyArchive for AuditStore {
    fn archive(&self, set: FetchedKeySet) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let now = crate::clock::Clock::now_millis(&crate::clock::SystemClock);
            if let Err(e) = self.archive_key_set(set, now).await {
                tracing::error!("key set not archived: {e}");
            }
        })
    }
}

/// One stored row with the entry hash stored beside it (as stored: its length unchecked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    /// The row.
    pub row: chain::EventRow,
    /// The stored entry hash.
    pub entry_hash: Vec<u8>,
}

/// A stored row reduced to what the chain check needs.
#[derive(Clone)]
pub struct ChainDigest {
    /// Sequence number.
    pub id: i64,
    /// The stored entry hash (its length unchecked).
    pub stored: Vec<u8>,
    /// SHA-256 over the domain prefix and the row's canonical encoding, open for the previous hash.
    pub content: aws_lc_rs::digest::Context,
}

impl std::fmt::Debug for ChainDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainDigest")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Number of records it covers (ids 1..=tree_size).
    pub tree_size: i64,
    /// Merkle root over their entry hashes.
    pub root: [u8; 32],
    /// The signed note.
    pub note: String,
    /// When it was written (ms since epoch).
    pub created_at: i64,
}

/// What a retention run removes (or would remove).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePlan {
    /// The first record stored now.
    pub first_id: i64,
    /// The last record to remove (a checkpoint's tree size), if any.
    pub through: Option<i64>,
    /// How many records that is.
    pub records: i64,
}

/// A retention run's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// What was planned (and done, unless a dry run).
    pub plan: PurgePlan,
    /// The retention record, when records were removed.
    pub record_id: Option<i64>,
    /// The last removed entry hash (the new chain anchor).
    pub anchor: Option<[u8; 32]>,
}

/// How long a CLI writer (access record, retention) waits for the service's write lock.
const CLI_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends an access or system record from a process other than the service (the CLI),
/// chained after whatever the store holds now. Safe while the service runs.
pub async fn append_note(url: &str, note: &Note) -> Result<i64, StoreError> {
    match Location::parse(url)? {
        Location::Sqlite(path) => {
            let note = note.clone();
            sqlite::on_own_thread(move || async move {
                let mut chain = sqlite::SqliteChain::open(&path, CLI_BUSY_TIMEOUT)?;
                let mut tx = chain.begin()?;
                let id = append_after_last(&mut *tx, &note).await?;
                tx.commit()?;
                Ok(id)
            })
            .await
        }
        Location::Postgres(options) => {
            let mut conn = postgres::open_writer(*options).await?;
            let mut tx = postgres::begin_locked(&mut conn).await?;
            let id = append_after_last(&mut *tx, note).await?;
            tx.commit().await?;
            Ok(id)
        }
    }
}

/// Removes the records received before `before` (ms since epoch), whole checkpointed ranges
/// only, and chains a retention record carrying the last removed entry's hash. Safe while the
/// service runs; `dry_run` only reports.
pub async fn purge(url: &str, before: i64, dry_run: bool, at: i64) -> Result<Purged, StoreError> {
    let purged = match Location::parse(url)? {
        Location::Sqlite(path) => {
            sqlite::on_own_thread(move || async move {
                let mut chain = sqlite::SqliteChain::open(&path, CLI_BUSY_TIMEOUT)?;
                let mut tx = chain.begin()?;
                let purged = purge_in(&mut *tx, before, dry_run, at).await?;
                tx.commit()?;
                Ok(purged)
            })
            .await?
        }
        Location::Postgres(options) => {
            let mut conn = postgres::open_writer(*options).await?;
            let mut tx = postgres::begin_locked(&mut conn).await?;
            let purged = purge_in(&mut *tx, before, dry_run, at).await?;
            tx.commit().await?;
            purged
        }
    };
    if let Some(through) = purged.plan.through.filter(|_| purged.record_id.is_some()) {
        tracing::info!(
            through,
            records = purged.plan.records,
            "retention removed records"
        );
    }
    Ok(purged)
}

/// A retention run inside a transaction that holds the chain lock.
async fn purge_in<C: ChainOps>(
    tx: &mut C,
    before: i64,
    dry_run: bool,
    at: i64,
) -> Result<Purged, StoreError> {
    let plan = tx.purge_plan(before).await?;
    let Some(through) = plan.through.filter(|_| !dry_run) else {
        return Ok(Purged {
            plan,
            record_id: None,
            anchor: None,
        });
    };
    let (anchor, removed) = tx.remove_through(through).await?;
    let note = Note {
        kind: NoteKind::System,
        action: "retention".into(),
        details: serde_json::json!({
            "before": crate::clock::format_millis(before),
            "removed_from": plan.first_id,
            "removed_through": through,
            "removed_records": removed,
            "anchor_entry_hash": crate::keys::jwks::hex(&anchor),
        }),
        at,
    };
    let id = append_after_last(tx, &note).await?;
    Ok(Purged {
        plan,
        record_id: Some(id),
        anchor: Some(anchor),
    })
}

/// A read-only handle on a store, for the CLI and the verifier.
#[derive(Debug, Clone)]
pub struct StoreReader(Reader);

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
