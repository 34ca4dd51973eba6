//! The group-commit writer: one task owns the write connection, gathers whatever jobs are
//! waiting into one transaction, and answers each only after that transaction commits.
//!
//! Each batch starts with `BEGIN IMMEDIATE` and re-reads the chain's last entry, so records
//! appended by another process (a CLI query's access record, a retention run) are chained
//! after, never beside. A batch that one record can fail (a constraint, a value the database
//! refuses) is retried job by job, so that record cannot fail its neighbours; any other failure
//! fails the whole batch at once. One that says the database cannot be reached (I/O, pool
//! timeout, server shutdown, a lock held beyond the timeout) also marks the store down: jobs
//! are then answered at once, unwritten, until a probe gets through.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::backend::{ChainOps, WriteDb};
use super::chain::EventRow;
use super::entry::{Committed, Note, NoteKind, Outcome, logout_row, note_row, resolve};
use super::health::{Health, PROBE_INTERVAL};
use super::{Job, StoreError, StoredCheckpoint};
use crate::keys::FetchedKeySet;
use crate::keys::jwks::hex;
use crate::tlog::merkle::{Accumulator, leaf_hash};
use crate::tlog::{Checkpoint, NoteSigner};

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Longest the start-up read of the chain's head may take (a store of many millions of records).
const WARM_UP_LIMIT: Duration = Duration::from_secs(600);
/// Entry hashes read per query when rebuilding the Merkle accumulator.
const REBUILD_PAGE: u32 = 50_000;

/// The end of the chain: the next sequence number, the last entry hash, and the Merkle tree
/// over every entry hash so far.
#[derive(Debug, Clone)]
struct Head {
    next_id: i64,
    prev_hash: [u8; 32],
    tree: Accumulator,
}

/// A request to sign a checkpoint over everything committed so far.
#[derive(Debug, Clone)]
pub struct CheckpointRequest {
    /// The log's key (its name is the checkpoint origin).
    pub signer: Arc<NoteSigner>,
    /// When (ms since epoch).
    pub at: i64,
}

enum Done {
    Logout(Committed),
    Id(i64),
    KeySet(Option<i64>),
    Checkpoint(StoredCheckpoint),
}

/// Loads the chain's head first (see [`warm_up`]), says so on `ready`, then runs as [`run`].
pub(super) async fn start<W: WriteDb>(
    mut db: W,
    rx: mpsc::Receiver<Job>,
    timeout: Duration,
    health: Arc<Health>,
    ready: oneshot::Sender<()>,
) {
    let head = warm_up(&mut db, timeout).await;
    let _ = ready.send(());
    run(head, db, rx, timeout, health).await;
}

/// Runs until every sender is dropped, then commits what is left and returns. While the store
/// is down, whatever arrives is answered [`StoreError::Unavailable`] at once and a probe runs
/// every [`PROBE_INTERVAL`] until one gets through. `head` is the chain's end if known.
async fn run<W: WriteDb>(
    mut head: Option<Head>,
    mut db: W,
    mut rx: mpsc::Receiver<Job>,
    timeout: Duration,
    health: Arc<Health>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    loop {
        if health.is_down() {
            if wait_for_store(&mut db, &mut rx, &mut batch, timeout, &health).await {
                continue;
            }
            break;
        }
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        // A request that gave up waiting was answered 503: its record is not written.
        batch.retain(|job| !job.is_abandoned());
        if !batch.is_empty() {
            process(&mut db, &mut head, &mut batch, timeout, &health).await;
        }
    }
    tracing::info!("audit writer stopped");
}

/// Reads the chain's end and rebuilds the Merkle accumulator before the first batch, without
/// the store timeout: on a store of millions of records that takes seconds, which no request
/// should wait for (nor fail on, again and again). `None` when the store cannot be read now; the
/// first batch then does it.
async fn warm_up<W: WriteDb>(db: &mut W, timeout: Duration) -> Option<Head> {
    let started = Instant::now();
    let result = async {
        let mut tx = tokio::time::timeout(timeout, db.begin())
            .await
            .unwrap_or(Err(StoreError::Timeout(timeout)))?;
        tokio::time::timeout(WARM_UP_LIMIT, sync_head(&mut *tx, None))
            .await
            .unwrap_or(Err(StoreError::Timeout(WARM_UP_LIMIT)))
    }
    .await;
    match result {
        Ok(head) => {
            tracing::debug!(
                records = head.next_id - 1,
                elapsed = ?started.elapsed(),
                "audit chain head loaded"
            );
            Some(head)
        }
        Err(e) => {
            tracing::warn!("audit chain head not loaded at start: {e}");
            None
        }
    }
}

/// While the store is down: answers every job that arrives `Unavailable` and probes every
/// [`PROBE_INTERVAL`]. Returns true once a probe gets through, false when the queue closes.
async fn wait_for_store<W: WriteDb>(
    db: &mut W,
    rx: &mut mpsc::Receiver<Job>,
    batch: &mut Vec<Job>,
    timeout: Duration,
    health: &Health,
) -> bool {
    let mut next_probe = Instant::now() + PROBE_INTERVAL;
    loop {
        tokio::select! {
            n = rx.recv_many(batch, MAX_BATCH) => {
                if n == 0 {
                    return false;
                }
                fail(batch.drain(..), || StoreError::Unavailable);
            }
            () = tokio::time::sleep_until(next_probe) => match probe(db, timeout).await {
                Ok(()) => {
                    if health.mark_up() {
                        tracing::warn!("the audit store answers again");
                    }
                    return true;
                }
                Err(e) => {
                    tracing::debug!("audit store probe: {e}");
                    next_probe = Instant::now() + PROBE_INTERVAL;
                }
            },
        }
    }
}

/// Whether a batch could begin now: its transaction (holding the chain lock) is opened and
/// rolled back, within the store timeout.
async fn probe<W: WriteDb>(db: &mut W, timeout: Duration) -> Result<(), StoreError> {
    tokio::time::timeout(timeout, async { db.begin().await.map(drop) })
        .await
        .unwrap_or(Err(StoreError::Timeout(timeout)))
}

/// Commits a batch and answers its jobs. A failure one record can cause is retried job by job,
/// so that record fails alone; any other fails the whole batch at once, and one that says the
/// store cannot be reached marks it down.
async fn process<W: WriteDb>(
    db: &mut W,
    head: &mut Option<Head>,
    batch: &mut Vec<Job>,
    timeout: Duration,
    health: &Health,
) {
    let error = match commit(db, head, batch, timeout).await {
        Ok(done) => {
            log_commit(batch);
            for (job, done) in batch.drain(..).zip(done) {
                answer(job, Ok(done));
            }
            return;
        }
        Err(e) => e,
    };
    if !(error.is_record() && batch.len() > 1) {
        tracing::error!(jobs = batch.len(), "audit batch not committed: {error}");
        give_up(batch.drain(..), error, health);
        return;
    }
    tracing::warn!(
        jobs = batch.len(),
        "audit batch failed ({error}); retrying job by job"
    );
    let mut jobs = batch.drain(..);
    while let Some(job) = jobs.next() {
        if job.is_abandoned() {
            continue;
        }
        let one = [job];
        let result = commit(db, head, &one, timeout).await;
        let [job] = one;
        match result {
            Ok(done) => {
                log_commit(&[&job]);
                answer(job, done.into_iter().next().ok_or(StoreError::WrongResult));
            }
            Err(e) if e.is_record() => {
                tracing::error!("audit record not committed: {e}");
                answer(job, Err(StoreError::NotCommitted(Arc::new(e))));
            }
            Err(e) => {
                // Not this record's fault: the ones after it would fail alike.
                tracing::error!("audit batch not committed: {e}");
                give_up(std::iter::once(job).chain(jobs), e, health);
                return;
            }
        }
    }
}

/// Names the requests whose records a batch committed, so one logout can be followed from its
/// handler's log lines (its span's `request_id`) to the commit.
fn log_commit<J: std::borrow::Borrow<Job>>(jobs: &[J]) {
    let ids: Vec<String> = (jobs.iter())
        .filter_map(|j| match j.borrow() {
            Job::Logout(r, _) => r.request_id.map(|id| id.to_string()),
            _ => None,
        })
        .collect();
    if !ids.is_empty() {
        tracing::info!(records = jobs.len(), request_ids = %ids.join(","), "audit batch committed");
    }
}

/// Answers every job with the shared cause, marking the store down when it cannot be reached.
fn give_up(jobs: impl Iterator<Item = Job>, cause: StoreError, health: &Health) {
    if cause.is_connection() && health.mark_down() {
        tracing::warn!(
            "the audit store cannot be reached: requests are answered 503 at once until a \
             probe gets through"
        );
    }
    let cause = Arc::new(cause);
    fail(jobs, || StoreError::NotCommitted(Arc::clone(&cause)));
}

/// Answers every job with an error.
fn fail(jobs: impl Iterator<Item = Job>, error: impl Fn() -> StoreError) {
    for job in jobs {
        answer(job, Err(error()));
    }
}

/// Sends one job its answer (nobody may be waiting any more: that is fine).
fn answer(job: Job, result: Result<Done, StoreError>) {
    fn send<T>(tx: oneshot::Sender<Result<T, StoreError>>, r: Result<Option<T>, StoreError>) {
        let _ = tx.send(r.and_then(|v| v.ok_or(StoreError::WrongResult)));
    }
    match job {
        Job::Logout(_, tx) => send(
            tx,
            result.map(|d| match d {
                Done::Logout(c) => Some(c),
                _ => None,
            }),
        ),
        Job::Note(_, tx) => send(
            tx,
            result.map(|d| match d {
                Done::Id(id) => Some(id),
                _ => None,
            }),
        ),
        Job::KeySet(_, _, tx) => send(
            tx,
            result.map(|d| match d {
                Done::KeySet(id) => Some(id),
                _ => None,
            }),
        ),
        Job::Checkpoint(_, tx) => send(
            tx,
            result.map(|d| match d {
                Done::Checkpoint(c) => Some(c),
                _ => None,
            }),
        ),
    }
}

/// Brings the cached head up to the stored chain: catches up on records appended by another
/// process, or rebuilds from scratch when the cache cannot be trusted.
async fn sync_head<C: ChainOps>(tx: &mut C, cached: Option<Head>) -> Result<Head, StoreError> {
    let (last_id, last_hash) = tx.last_entry().await?;
    let mut head = match cached {
        Some(h) if h.next_id - 1 == last_id && h.prev_hash == last_hash => return Ok(h),
        Some(h) if h.next_id - 1 < last_id => h,
        _ => Head {
            next_id: 1,
            prev_hash: crate::store::chain::GENESIS,
            tree: Accumulator::new(),
        },
    };
    while head.next_id <= last_id {
        let page = tx.leaf_hashes(head.next_id, last_id, REBUILD_PAGE).await?;
        let Some(&(page_last, _)) = page.last() else {
            break;
        };
        for (_, h) in &page {
            head.tree.push(leaf_hash(h));
        }
        head.next_id = page_last + 1;
    }
    head.next_id = last_id + 1;
    head.prev_hash = last_hash;
    Ok(head)
}

/// Commits `jobs` in one transaction within the timeout; the cached head moves only on commit.
async fn commit<W: WriteDb>(
    db: &mut W,
    head: &mut Option<Head>,
    jobs: &[Job],
    timeout: Duration,
) -> Result<Vec<Done>, StoreError> {
    let cached = head.clone();
    let result = tokio::time::timeout(timeout, async {
        let mut tx = db.begin().await?;
        let mut cursor = sync_head(&mut *tx, cached).await?;
        let done = write_jobs(&mut *tx, jobs, &mut cursor).await?;
        W::commit(tx).await?;
        Ok::<_, StoreError>((done, cursor))
    })
    .await
    .unwrap_or(Err(StoreError::Timeout(timeout)));
    match result {
        Ok((done, cursor)) => {
            *head = Some(cursor);
            Ok(done)
        }
        // The head still describes what was committed before this batch; the next batch checks
        // it against the stored chain's end (and catches up) rather than rebuilding the tree.
        Err(e) => Err(e),
    }
}

/// Rows and index entries computed in memory and written with a few multi-row statements.
#[derive(Default)]
struct Pending {
    rows: Vec<(EventRow, [u8; 32])>,
    accepted: Vec<(String, String, [u8; 32], i64)>,
    pairs: Vec<(String, String, i64)>,
}

impl Pending {
    /// Chains `row` onto the head (hash, sequence, Merkle leaf) and queues it.
    fn chain(&mut self, row: EventRow, head: &mut Head, scratch: &mut Vec<u8>) {
        #[cfg(not(feature = "bench-unchained"))]
        let hash = {
            let hash = row.entry_hash(&head.prev_hash, scratch);
            head.tree.push(leaf_hash(&hash));
            hash
        };
        // Only to measure what the chain costs (docs/performance.md): no hash, no Merkle leaf.
        #[cfg(feature = "bench-unchained")]
        let hash = {
            let _ = scratch;
            [0; 32]
        };
        head.prev_hash = hash;
        head.next_id += 1;
        self.rows.push((row, hash));
    }

    /// Writes everything queued, in order.
    async fn flush<C: ChainOps>(&mut self, tx: &mut C) -> Result<(), StoreError> {
        tx.insert_rows(&self.rows).await?;
        tx.insert_accepted(&self.accepted).await?;
        tx.insert_pairs(&self.pairs).await?;
        self.rows.clear();
        self.accepted.clear();
        self.pairs.clear();
        Ok(())
    }
}

/// Appends one row right away (rare records: key sets, checkpoints).
async fn append<C: ChainOps>(
    tx: &mut C,
    row: EventRow,
    head: &mut Head,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let mut one = Pending::default();
    one.chain(row, head, scratch);
    one.flush(tx).await
}

type TokenKey = (String, String);

async fn write_jobs<C: ChainOps>(
    tx: &mut C,
    jobs: &[Job],
    head: &mut Head,
) -> Result<Vec<Done>, StoreError> {
    let mut scratch = Vec::with_capacity(4096);
    let mut done = Vec::with_capacity(jobs.len());
    // One look-up for every (iss, jti) in the batch; acceptances within it are added as we go.
    let keys: Vec<TokenKey> = jobs
        .iter()
        .filter_map(|j| match j {
            Job::Logout(r, _) if r.token_sha256.is_some() => {
                Some((r.facts.iss.clone()?, r.facts.jti.clone()?))
            }
            _ => None,
        })
        .collect();
    let mut known: HashMap<TokenKey, (i64, [u8; 32])> =
        tx.accepted_tokens(&keys).await?.into_iter().collect();
    let mut pending = Pending::default();
    for job in jobs {
        let id = head.next_id;
        match job {
            Job::Logout(record, _) => {
                let key = match (&record.facts.iss, &record.facts.jti, record.token_sha256) {
                    (Some(iss), Some(jti), Some(_)) => Some((iss.clone(), jti.clone())),
                    _ => None,
                };
                let existing = key.as_ref().and_then(|k| known.get(k).copied());
                let (outcome, rejection, duplicate_of) = resolve(record, existing);
                let committed = Committed {
                    id,
                    outcome,
                    rejection,
                    duplicate_of,
                };
                pending.chain(logout_row(id, record, &committed), head, &mut scratch);
                if let (Outcome::Accepted, Some(k), Some(sha)) = (outcome, key, record.token_sha256)
                {
                    known.insert(k.clone(), (id, sha));
                    pending.accepted.push((k.0, k.1, sha, id));
                }
                if let Some(meta) = &record.facts.metadata
                    && committed.signature_verified()
                {
                    pending
                        .pairs
                        .extend(meta.pairs.iter().map(|(k, v)| (k.clone(), v.clone(), id)));
                }
                done.push(Done::Logout(committed));
            }
            Job::Note(note, _) => {
                pending.chain(note_row(id, note), head, &mut scratch);
                done.push(Done::Id(id));
            }
            Job::KeySet(set, seen_at, _) => {
                pending.flush(tx).await?;
                done.push(Done::KeySet(
                    archive_key_set(tx, set, *seen_at, head, &mut scratch).await?,
                ));
            }
            Job::Checkpoint(req, _) => {
                pending.flush(tx).await?;
                done.push(Done::Checkpoint(
                    checkpoint(tx, req, head, &mut scratch).await?,
                ));
            }
        }
    }
    pending.flush(tx).await?;
    Ok(done)
}

async fn checkpoint<C: ChainOps>(
    tx: &mut C,
    req: &CheckpointRequest,
    head: &mut Head,
    scratch: &mut Vec<u8>,
) -> Result<StoredCheckpoint, StoreError> {
    let size = head.next_id - 1;
    let root = head.tree.root();
    let body = Checkpoint::new(req.signer.name().to_owned(), head.tree.size(), root).body();
    let note = req.signer.sign(&body).map_err(StoreError::Sign)?;
    tx.insert_checkpoint(size, &root, &note, req.at).await?;
    let record = Note {
        kind: NoteKind::System,
        action: "checkpoint".into(),
        details: json!({ "tree_size": size, "root": hex(&root), "origin": req.signer.name() }),
        at: req.at,
    };
    let id = head.next_id;
    append(tx, note_row(id, &record), head, scratch).await?;
    Ok(StoredCheckpoint {
        tree_size: size,
        root,
        note,
        created_at: req.at,
    })
}

async fn archive_key_set<C: ChainOps>(
    tx: &mut C,
    set: &FetchedKeySet,
    seen_at: i64,
    head: &mut Head,
    scratch: &mut Vec<u8>,
) -> Result<Option<i64>, StoreError> {
    if tx.touch_key_set(&set.digest, seen_at).await? {
        return Ok(None);
    }
    let previous = tx.latest_key_set(&set.issuer).await?;
    tx.insert_key_set(set, seen_at).await?;
    let (prev_digest, prev_kids) = match previous {
        Some((d, kids)) => (Some(hex(&d)), kids),
        None => (None, Vec::new()),
    };
    let added: Vec<&String> = set.kids.iter().filter(|k| !prev_kids.contains(k)).collect();
    let removed: Vec<&String> = prev_kids.iter().filter(|k| !set.kids.contains(k)).collect();
    let note = Note {
        kind: NoteKind::System,
        action: "keyset_change".into(),
        details: json!({
            "issuer": set.issuer,
            "digest": hex(&set.digest),
            "previous_digest": prev_digest,
            "kids": set.kids,
            "added": added,
            "removed": removed,
        }),
        at: seen_at,
    };
    let id = head.next_id;
    append(tx, note_row(id, &note), head, scratch).await?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    //! The writer's batch handling against a scripted database: what it commits, how often it
    //! begins a transaction, and what every job is answered.

    use std::ops::{Deref, DerefMut};
    use std::sync::Mutex;

    use super::*;
    use crate::logout_token::TokenFacts;
    use crate::store::backend::{AcceptedToken, ArchivedKeySet};
    use crate::store::chain::GENESIS;
    use crate::store::{NewRecord, PurgePlan};

    /// How the scripted database behaves.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// Everything works.
        Healthy,
        /// A row with this `jti` violates a constraint.
        Poison(&'static str),
        /// The connection drops at the batch's first insert; then the server is gone.
        Lost,
        /// The server refuses connections.
        Down,
        /// `begin` never returns.
        Hang,
    }

    #[derive(Debug)]
    struct State {
        mode: Mode,
        begins: usize,
        committed: Vec<(EventRow, [u8; 32])>,
    }

    /// The scripted database; clones share one state.
    #[derive(Debug, Clone)]
    struct Fake(Arc<Mutex<State>>);

    impl Fake {
        fn new(mode: Mode) -> Self {
            Self(Arc::new(Mutex::new(State {
                mode,
                begins: 0,
                committed: Vec::new(),
            })))
        }

        fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
            f(&mut self.0.lock().expect("fake state"))
        }

        fn begins(&self) -> usize {
            self.with(|s| s.begins)
        }

        fn committed_jtis(&self) -> Vec<String> {
            self.with(|s| {
                s.committed
                    .iter()
                    .filter_map(|(r, _)| r.jti.clone())
                    .collect()
            })
        }
    }

    fn lost() -> StoreError {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        StoreError::Database(sqlx::Error::Io(reset))
    }

    fn refused() -> StoreError {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        StoreError::Database(sqlx::Error::Io(refused))
    }

    fn constraint() -> StoreError {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_CHECK),
            None,
        ))
    }

    /// A batch's statements: rows wait in `pending` until the commit.
    #[derive(Debug)]
    struct FakeConn {
        db: Fake,
        pending: Vec<(EventRow, [u8; 32])>,
    }

    #[derive(Debug)]
    struct FakeTx(FakeConn);

    impl Deref for FakeTx {
        type Target = FakeConn;
        fn deref(&self) -> &FakeConn {
            &self.0
        }
    }

    impl DerefMut for FakeTx {
        fn deref_mut(&mut self) -> &mut FakeConn {
            &mut self.0
        }
    }

    impl WriteDb for Fake {
        type Conn = FakeConn;
        type Tx<'a> = FakeTx;

        async fn begin(&mut self) -> Result<FakeTx, StoreError> {
            let mode = self.with(|s| {
                s.begins += 1;
                s.mode
            });
            match mode {
                Mode::Hang => std::future::pending().await,
                Mode::Down => Err(refused()),
                _ => Ok(FakeTx(FakeConn {
                    db: self.clone(),
                    pending: Vec::new(),
                })),
            }
        }

        async fn commit<'a>(tx: FakeTx) -> Result<(), StoreError> {
            let FakeTx(conn) = tx;
            conn.db.with(|s| s.committed.extend(conn.pending));
            Ok(())
        }
    }

    impl ChainOps for FakeConn {
        async fn last_entry(&mut self) -> Result<(i64, [u8; 32]), StoreError> {
            Ok(self
                .db
                .with(|s| s.committed.last().map_or((0, GENESIS), |(r, h)| (r.id, *h))))
        }

        async fn leaf_hashes(
            &mut self,
            from: i64,
            to: i64,
            _limit: u32,
        ) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
            Ok(self.db.with(|s| {
                s.committed
                    .iter()
                    .filter(|(r, _)| (from..=to).contains(&r.id))
                    .map(|(r, h)| (r.id, *h))
                    .collect()
            }))
        }

        async fn accepted_tokens(
            &mut self,
            _keys: &[(String, String)],
        ) -> Result<Vec<AcceptedToken>, StoreError> {
            Ok(Vec::new())
        }

        async fn insert_rows(&mut self, rows: &[(EventRow, [u8; 32])]) -> Result<(), StoreError> {
            match self.db.with(|s| s.mode) {
                Mode::Lost => {
                    self.db.with(|s| s.mode = Mode::Down);
                    return Err(lost());
                }
                Mode::Poison(jti) if rows.iter().any(|(r, _)| r.jti.as_deref() == Some(jti)) => {
                    return Err(constraint());
                }
                _ => {}
            }
            self.pending.extend(rows.iter().cloned());
            Ok(())
        }

        async fn insert_accepted(
            &mut self,
            _accepted: &[(String, String, [u8; 32], i64)],
        ) -> Result<(), StoreError> {
            Ok(())
        }

        async fn insert_pairs(
            &mut self,
            _pairs: &[(String, String, i64)],
        ) -> Result<(), StoreError> {
            Ok(())
        }

        async fn insert_checkpoint(
            &mut self,
            _size: i64,
            _root: &[u8; 32],
            _note: &str,
            _at: i64,
        ) -> Result<(), StoreError> {
            Ok(())
        }

        async fn touch_key_set(
            &mut self,
            _digest: &[u8; 32],
            _seen_at: i64,
        ) -> Result<bool, StoreError> {
            Ok(true)
        }

        async fn latest_key_set(
            &mut self,
            _issuer: &str,
        ) -> Result<Option<ArchivedKeySet>, StoreError> {
            Ok(None)
        }

        async fn insert_key_set(
            &mut self,
            _set: &FetchedKeySet,
            _seen_at: i64,
        ) -> Result<(), StoreError> {
            Ok(())
        }

        async fn purge_plan(&mut self, _before: i64) -> Result<PurgePlan, StoreError> {
            Err(StoreError::WrongResult)
        }

        async fn remove_through(&mut self, _through: i64) -> Result<([u8; 32], u64), StoreError> {
            Err(StoreError::WrongResult)
        }
    }

    const TIMEOUT: Duration = Duration::from_millis(300);

    type Answer = oneshot::Receiver<Result<Committed, StoreError>>;

    /// A valid logout with its own `jti`.
    fn logout(jti: &str) -> (Job, Answer) {
        let record = NewRecord {
            received_at: 1,
            verdict: Ok(()),
            facts: TokenFacts {
                iss: Some("https://op.example/".into()),
                jti: Some(jti.into()),
                ..TokenFacts::default()
            },
            token: Some(format!("token-{jti}")),
            token_sha256: Some(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jti.as_bytes())
                    .as_ref()
                    .try_into()
                    .expect("32 bytes"),
            ),
            token_bytes: Some(8),
            source_ip: None,
            user_agent: None,
            request_id: None,
        };
        let (tx, rx) = oneshot::channel();
        (Job::Logout(Box::new(record), tx), rx)
    }

    /// A writer on `db`, on a thread of its own as in the service, with the given jobs already
    /// queued (so they form one batch).
    fn writer_with(
        db: &Fake,
        jobs: Vec<Job>,
    ) -> (mpsc::Sender<Job>, Arc<Health>, oneshot::Receiver<()>) {
        let (tx, rx) = mpsc::channel(64);
        for job in jobs {
            tx.try_send(job).expect("queue has room");
        }
        let health = Arc::new(Health::default());
        let (db, writer_health) = (db.clone(), Arc::clone(&health));
        let task = crate::store::own_thread("test-writer", move || {
            run(None, db, rx, TIMEOUT, writer_health)
        })
        .expect("writer thread");
        (tx, health, task)
    }

    fn jobs(jtis: &[&str]) -> (Vec<Job>, Vec<Answer>) {
        jtis.iter().map(|j| logout(j)).unzip()
    }

    async fn answers(rxs: Vec<Answer>) -> Vec<Result<Committed, StoreError>> {
        let mut out = Vec::new();
        for rx in rxs {
            out.push(rx.await.expect("every job is answered"));
        }
        out
    }

    #[tokio::test]
    async fn a_batch_that_one_row_fails_commits_the_others_job_by_job() {
        let db = Fake::new(Mode::Poison("c"));
        let (jobs, rxs) = jobs(&["a", "b", "c", "d", "e"]);
        let (tx, health, task) = writer_with(&db, jobs);
        let got = answers(rxs).await;
        drop(tx);
        task.await.expect("writer ends");

        let ids: Vec<Option<i64>> = got.iter().map(|r| r.as_ref().ok().map(|c| c.id)).collect();
        assert_eq!(ids, [Some(1), Some(2), None, Some(3), Some(4)], "gapless");
        assert!(got[2].as_ref().is_err_and(StoreError::is_record));
        assert_eq!(db.committed_jtis(), ["a", "b", "d", "e"]);
        assert_eq!(db.begins(), 1 + 5, "the batch, then each job alone");
        assert!(
            !health.is_down(),
            "one bad record says nothing about the store"
        );
    }

    #[tokio::test]
    async fn a_lost_connection_fails_the_batch_at_once_and_a_probe_brings_it_back() {
        let db = Fake::new(Mode::Lost);
        let (jobs, rxs) = jobs(&["a", "b", "c", "d", "e"]);
        let (tx, health, task) = writer_with(&db, jobs);
        let got = answers(rxs).await;
        assert!(
            got.iter()
                .all(|r| r.as_ref().is_err_and(StoreError::is_connection))
        );
        assert_eq!(db.begins(), 1, "no job-by-job retries on a lost connection");
        assert!(health.is_down());

        // While down, a job that still reaches the queue is answered at once, untried.
        let begins = db.begins();
        let (job, rx) = logout("f");
        let asked = Instant::now();
        tx.send(job).await.expect("queue");
        let r = rx.await.expect("answered");
        assert!(matches!(r, Err(StoreError::Unavailable)), "{r:?}");
        assert!(asked.elapsed() < PROBE_INTERVAL, "{:?}", asked.elapsed());
        assert!(db.begins() <= begins + 1, "at most a probe ran meanwhile");

        // The server returns: a probe gets through and the next job commits.
        db.with(|s| s.mode = Mode::Healthy);
        let back = Instant::now();
        while health.is_down() {
            assert!(
                back.elapsed() < 4 * PROBE_INTERVAL,
                "a probe brings it back"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (job, rx) = logout("g");
        tx.send(job).await.expect("queue");
        let committed = rx.await.expect("answered").expect("committed");
        assert_eq!(committed.id, 1, "nothing of the failed batch was kept");
        assert_eq!(db.committed_jtis(), ["g"]);
        drop(tx);
        task.await.expect("writer ends");
    }

    #[tokio::test]
    async fn a_timeout_answers_every_job() {
        let db = Fake::new(Mode::Hang);
        let (jobs, rxs) = jobs(&["a", "b", "c"]);
        let started = Instant::now();
        let (tx, health, task) = writer_with(&db, jobs);
        let got = answers(rxs).await;
        let waited = started.elapsed();
        assert!(
            got.iter().all(|r| matches!(
                r,
                Err(StoreError::NotCommitted(e)) if matches!(**e, StoreError::Timeout(_))
            )),
            "{got:?}"
        );
        assert!(waited >= TIMEOUT && waited < TIMEOUT * 2, "{waited:?}");
        assert_eq!(db.begins(), 1);
        assert!(health.is_down(), "a database that does not answer is down");
        drop(tx);
        task.await.expect("writer ends");
    }

    #[tokio::test]
    async fn a_job_given_up_on_is_not_written() {
        let db = Fake::new(Mode::Healthy);
        let (jobs, mut rxs) = jobs(&["a", "b", "c"]);
        drop(rxs.remove(1)); // the request for "b" answered 503 before the writer got to it
        let (tx, _health, task) = writer_with(&db, jobs);
        let got = answers(rxs).await;
        let ids: Vec<i64> = got.into_iter().map(|r| r.expect("committed").id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(db.committed_jtis(), ["a", "c"]);
        drop(tx);
        task.await.expect("writer ends");
    }
}
