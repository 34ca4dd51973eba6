//! The audit store: every request becomes one record in an append-only, hash-chained sequence,
//! written through a single group-commit writer and acknowledged only after its transaction
//! commits. No SQL lives outside this module.

mod backend;
mod cells;
pub mod deliveries;
mod dialect;
mod entry;
mod failure;
mod filter;
mod health;
mod layout;
mod location;
mod pg_tls;
mod postgres;
mod read;
mod reader;
mod record;
mod replay;
mod report;
mod select;
mod sqlite;
mod writer;

/// The canonical encoding and entry hash, now in [`crate::tlog::entry`]; kept under this path
/// for callers of the former one.
pub use crate::tlog::entry as chain;
pub use entry::{Committed, NewRecord, Note, NoteKind, Outcome, resolve};
pub use failure::Failure;
pub use filter::{
    Cursor, EventFilter, KindFilter, MAX_LIMIT, Order, parse_meta, parse_meta_key,
    parse_metadata_status, parse_outcome, parse_reason,
};
pub use reader::{NdjsonPage, SessionLogout, StoreReader};
pub use record::StoredRecord;
pub use report::{GroupBy, MAX_GROUP_BY, MAX_GROUPS, Summary, SummaryGroup};
pub use writer::CheckpointRequest;
use writer::Reply;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use self::backend::{ChainOps, append_after_last};
use self::health::Health;
use self::location::Location;
use crate::config::{DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_AGE_SECS};
use crate::keys::{FetchedKeySet, KeyArchive};

pub use location::{PASSWORD_ENV, check_url, with_tls_settings};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one we support.
    #[error(
        "unsupported database URL {0:?} (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)"
    )]
    UnsupportedUrl(String),
    /// The URL would send records in clear text to another machine, or names an unusable CA file.
    #[error("refusing the database URL: {0}")]
    InsecureDatabase(String),
    /// The TLS handshake with PostgreSQL failed; `detail` says what to change.
    #[error("TLS to PostgreSQL at {target} failed: {detail}")]
    Tls {
        /// Host, port and sslmode.
        target: String,
        /// What went wrong, in words an operator can act on.
        detail: String,
    },
    /// Opening, migrating or querying failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The write did not commit within the store timeout.
    #[error("the store did not commit within {0:?}")]
    Timeout(Duration),
    /// The store is known to be unreachable (a batch could not reach it and no probe has got
    /// through since): the write was not tried.
    #[error("the store is unavailable (a recent batch could not reach it)")]
    Unavailable,
    /// The batch this write belonged to was not committed; the cause is shared by its jobs.
    #[error("the audit batch was not committed: {0}")]
    NotCommitted(Arc<StoreError>),
    /// A checkpoint could not be signed.
    #[error("cannot sign the checkpoint: {0}")]
    Sign(crate::tlog::NoteError),
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
    /// A file the store needs could not be created or read.
    #[error("store file error: {0}")]
    Io(#[from] std::io::Error),
}

/// One unit of work for the writer, each with a reply of its own result type.
enum Job {
    Logout(Box<NewRecord>, Reply<Committed>),
    Note(Note, Reply<i64>),
    KeySet(FetchedKeySet, i64, Reply<Option<i64>>),
    Checkpoint(CheckpointRequest, Reply<StoredCheckpoint>),
    Deliveries(Vec<deliveries::DeliveryOp>, Reply<Vec<u64>>),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

/// Most jobs waiting for the writer: four full batches, about 40 ms of commits at full speed.
/// With every job's wait bounded by the store timeout, a longer queue would only hold requests
/// answered 503 anyway. A job holds what will be stored: claims cut to 1 KiB each, metadata to
/// 16 KiB, and the token only when it verified, all from one body of at most 64 KiB; so what
/// anonymous clients can make the queue hold is bounded by about 64 MiB.
const QUEUE_CAPACITY: usize = 4 * writer::MAX_BATCH;

/// The audit store handle: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct AuditStore {
    writer: mpsc::Sender<Job>,
    reader: StoreReader,
    /// Whether the writer last found the store unreachable.
    health: Arc<Health>,
    /// Longest a caller waits, for room in the queue and for the commit together.
    timeout: Duration,
    /// The last record id committed (by this writer, or seen from another at its last batch).
    committed: watch::Receiver<i64>,
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
async fn spawn_writer<W: backend::WriteDb + 'static>(
    db: W,
    rx: mpsc::Receiver<Job>,
    settings: WriterSettings,
    health: Arc<Health>,
    committed: watch::Sender<i64>,
) -> Result<WriterTask, StoreError> {
    let (ready, warmed) = oneshot::channel();
    let task = own_thread("audit-writer", move || {
        writer::start(db, rx, settings, health, ready, committed)
    })
    .map(WriterTask)?;
    // The first batch waits for the chain's head, not the caller's first request.
    let _ = warmed.await;
    Ok(task)
}

/// Runs the future `work` makes on a new thread with a single-threaded runtime of its own;
/// its output arrives on the returned channel. For the writer, and for SQLite work that blocks
/// (the CLI's writers, retention), so the caller's runtime keeps serving.
fn own_thread<F, Fut, T>(name: &str, work: F) -> Result<oneshot::Receiver<T>, StoreError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StoreError::WriterStart)?;
    let (done, output) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = done.send(runtime.block_on(work()));
        })
        .map_err(StoreError::WriterStart)?;
    Ok(output)
}

/// Hands a job to the writer and waits for its answer: not at all while the store is known to
/// be down, and never longer than `timeout` in all (room in the queue, then the commit). A job
/// given up on is dropped by the writer unless its batch has already begun.
async fn submit<T>(
    writer: &mpsc::Sender<Job>,
    health: &Health,
    timeout: Duration,
    job: Job,
    rx: oneshot::Receiver<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if health.is_down() {
        return Err(StoreError::Unavailable);
    }
    tokio::time::timeout(timeout, async {
        writer.send(job).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    })
    .await
    .unwrap_or(Err(StoreError::Timeout(timeout)))
}

/// How the store's writer runs.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// The store timeout: how long a batch may take before its requests are answered 503.
    pub timeout: Duration,
    /// How long after its acceptance a token could still pass validation (the largest
    /// `max_token_age + 2 × leeway` of the issuers): the replay window kept in memory.
    pub replay_validity: Duration,
}

impl WriterSettings {
    /// Settings with this timeout and the replay window of the default issuer settings.
    pub fn with_timeout(timeout: Duration) -> Self {
        let validity = DEFAULT_MAX_TOKEN_AGE_SECS + 2 * DEFAULT_LEEWAY_SECS;
        Self {
            timeout,
            replay_validity: Duration::from_secs(validity.unsigned_abs()),
        }
    }
}

impl AuditStore {
    /// Opens (creating if missing) and migrates the store, and starts its writer.
    pub async fn open(
        url: &str,
        settings: WriterSettings,
    ) -> Result<(Self, WriterTask), StoreError> {
        let write_timeout = settings.timeout;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let health = Arc::new(Health::default());
        let (committed_tx, committed) = watch::channel(0);
        let (reader, task) = match Location::parse(url)? {
            Location::Sqlite(path) => {
                let (db, reader) = sqlite::open(&path, write_timeout).await?;
                let h = Arc::clone(&health);
                let task = spawn_writer(db, rx, settings, h, committed_tx).await?;
                (StoreReader::new(reader), task)
            }
            Location::Postgres(options) => {
                let (db, reader) = postgres::open(*options, write_timeout).await?;
                let h = Arc::clone(&health);
                let task = spawn_writer(db, rx, settings, h, committed_tx).await?;
                (StoreReader::new(reader), task)
            }
        };
        let store = Self {
            writer: tx,
            reader,
            health,
            timeout: write_timeout,
            committed,
        };
        Ok((store, task))
    }

    /// Opens an existing store for reading only (CLI queries).
    pub async fn open_reader(url: &str) -> Result<StoreReader, StoreError> {
        Ok(match Location::parse(url)? {
            Location::Sqlite(path) => StoreReader::new(sqlite::Reader::open_existing(&path).await?),
            Location::Postgres(options) => {
                StoreReader::new(postgres::Reader::open_existing(*options).await?)
            }
        })
    }

    /// Records one logout request and returns its final outcome once committed. Fails at once
    /// while the store is known to be down, and within the store timeout otherwise (waiting for
    /// room in the queue included).
    pub async fn append(&self, record: NewRecord) -> Result<Committed, StoreError> {
        let (reply, rx) = Reply::new();
        self.submit(Job::Logout(Box::new(record), reply), rx).await
    }

    /// Runs delivery-state writes in the next batch's transaction (they share its commit, so
    /// delivery never contends with the audit writer for the database); answers how many rows
    /// each changed.
    pub async fn deliveries(
        &self,
        ops: Vec<deliveries::DeliveryOp>,
    ) -> Result<Vec<u64>, StoreError> {
        let (reply, rx) = Reply::new();
        self.submit(Job::Deliveries(ops, reply), rx).await
    }

    /// Follows the last committed record id: changes after every batch that appended.
    pub fn committed(&self) -> watch::Receiver<i64> {
        self.committed.clone()
    }

    /// Records an access or system event; returns its sequence number once committed.
    pub async fn note(&self, note: Note) -> Result<i64, StoreError> {
        let (reply, rx) = Reply::new();
        self.submit(Job::Note(note, reply), rx).await
    }

    /// Archives a fetched key set (first/last seen); a new set for an issuer is also recorded
    /// as a `keyset_change` system record, whose id is returned.
    pub async fn archive_key_set(
        &self,
        set: FetchedKeySet,
        seen_at: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (reply, rx) = Reply::new();
        self.submit(Job::KeySet(set, seen_at, reply), rx).await
    }

    /// Signs and stores a checkpoint over every record committed so far, followed by a
    /// `checkpoint` system record.
    pub async fn checkpoint(
        &self,
        request: CheckpointRequest,
    ) -> Result<StoredCheckpoint, StoreError> {
        let (reply, rx) = Reply::new();
        self.submit(Job::Checkpoint(request, reply), rx).await
    }

    /// [`submit`] with this store's queue, health and timeout.
    async fn submit<T>(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        submit(&self.writer, &self.health, self.timeout, job, rx).await
    }

    /// The read side alone (holds no writer handle, so it never delays shutdown).
    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    /// Reads records matching a filter.
    pub async fn query(&self, filter: &EventFilter) -> Result<Vec<StoredRecord>, StoreError> {
        self.reader.query(filter).await
    }

    /// Whether the store answers (readiness): not while the writer knows it is down, even if
    /// reads still work (SQLite's write lock held elsewhere).
    pub async fn ping(&self) -> bool {
        !self.health.is_down() && self.reader.ping().await
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
    cli_batch(url, Vec::new(), note).await.map(|(_, id)| id)
}

/// Runs delivery-state writes from outside the service (`deliveries retry`) in one transaction
/// with `note`, which records who asked for what; answers how many rows each write changed. A
/// running service sees the change at its next poll.
pub async fn write_deliveries(
    url: &str,
    ops: Vec<deliveries::DeliveryOp>,
    note: &Note,
) -> Result<Vec<u64>, StoreError> {
    cli_batch(url, ops, note).await.map(|(changed, _)| changed)
}

/// One transaction of a process other than the service, holding the chain lock: the delivery
/// writes `ops`, then `note` chained after whatever the store holds now. Answers the rows each
/// write changed and the note's id.
async fn cli_batch(
    url: &str,
    ops: Vec<deliveries::DeliveryOp>,
    note: &Note,
) -> Result<(Vec<u64>, i64), StoreError> {
    match Location::parse(url)? {
        Location::Sqlite(path) => {
            let note = note.clone();
            sqlite::on_own_thread(move || async move {
                let mut chain = sqlite::SqliteChain::open(&path, CLI_BUSY_TIMEOUT)?;
                let mut tx = chain.begin()?;
                let changed = tx.deliveries(&ops).await?;
                let id = append_after_last(&mut *tx, &note).await?;
                tx.commit()?;
                Ok((changed, id))
            })
            .await
        }
        Location::Postgres(options) => {
            let mut conn = postgres::open_writer(*options).await?;
            let mut tx = postgres::begin_locked(&mut conn).await?;
            let changed = tx.deliveries(&ops).await?;
            let id = append_after_last(&mut *tx, note).await?;
            tx.commit().await?;
            Ok((changed, id))
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
            "anchor_entry_hash": crate::util::hex(&anchor),
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn note() -> Note {
        Note {
            kind: NoteKind::System,
            action: "test".into(),
            details: serde_json::json!({}),
            at: 0,
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_waited_on_no_longer_than_the_store_timeout() {
        // Nobody drains the queue: its one place is taken, so the job waits for room.
        let (writer, _queue) = mpsc::channel(1);
        let (blocker, _) = Reply::new();
        writer
            .try_send(Job::Note(note(), blocker))
            .expect("room for one");
        let timeout = Duration::from_millis(200);
        let (reply, rx) = Reply::new();
        let started = Instant::now();
        let r = submit(
            &writer,
            &Health::default(),
            timeout,
            Job::Note(note(), reply),
            rx,
        )
        .await;
        assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
        let waited = started.elapsed();
        assert!(waited >= timeout && waited < timeout * 2, "{waited:?}");
    }

    #[tokio::test]
    async fn an_unanswered_job_is_waited_on_no_longer_than_the_store_timeout() {
        let (writer, _queue) = mpsc::channel(4);
        let timeout = Duration::from_millis(200);
        let (reply, rx) = Reply::new();
        let started = Instant::now();
        let r = submit(
            &writer,
            &Health::default(),
            timeout,
            Job::Note(note(), reply),
            rx,
        )
        .await;
        assert!(matches!(r, Err(StoreError::Timeout(_))), "{r:?}");
        assert!(started.elapsed() < timeout * 2);
    }

    #[tokio::test]
    async fn a_store_known_down_fails_at_once_and_queues_nothing() {
        let (writer, mut queue) = mpsc::channel(4);
        let health = Health::default();
        health.mark_down();
        let (reply, rx) = Reply::new();
        let started = Instant::now();
        let r = submit(
            &writer,
            &health,
            Duration::from_secs(5),
            Job::Note(note(), reply),
            rx,
        )
        .await;
        assert!(matches!(r, Err(StoreError::Unavailable)), "{r:?}");
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(queue.try_recv().is_err(), "nothing was queued");
    }
}
