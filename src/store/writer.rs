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
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backend::{AcceptedSince, ChainOps, CheckpointRow, WriteDb};
use super::chain::EventRow;
use super::entry::{Committed, Note, NoteKind, Outcome, logout_row, note_row, resolve};
use super::health::{Health, PROBE_INTERVAL};
use super::replay::{Key, ReplayWindow, Seen};
use super::{Job, NewRecord, StoreError, StoredCheckpoint};
use crate::keys::FetchedKeySet;
use crate::tlog::merkle::{Accumulator, leaf_hash};
use crate::tlog::{Checkpoint, NoteSigner};
use crate::util::hex;

/// Most jobs committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Longest the start-up read of the chain's head may take (a store of many millions of records).
const WARM_UP_LIMIT: Duration = Duration::from_secs(600);
/// Entry hashes read per query when rebuilding the Merkle accumulator.
const REBUILD_PAGE: u32 = 50_000;
/// Records another writer appended beyond which the replay window is read back whole (by time)
/// rather than by id.
const CATCH_UP_BY_ID: i64 = 10_000;

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

/// Where one job's answer goes, typed by what the job produces. The code that computes the
/// answer stages it here while the batch's transaction is open; it is sent once that commits,
/// and replaced by the batch's error if it does not.
pub(super) struct Reply<T> {
    tx: oneshot::Sender<Result<T, StoreError>>,
    staged: Option<T>,
}

impl<T> Reply<T> {
    /// A reply and the receiver its caller waits on.
    pub(super) fn new() -> (Self, oneshot::Receiver<Result<T, StoreError>>) {
        let (tx, rx) = oneshot::channel();
        (Self { tx, staged: None }, rx)
    }

    /// Holds this job's answer until its transaction commits (a retry replaces it).
    fn stage(&mut self, answer: T) {
        self.staged = Some(answer);
    }

    /// The transaction commits: sends the staged answer (nobody may be waiting any more).
    fn committed(self) {
        // A batch commits only after every one of its jobs staged its answer; were one missing,
        // its caller would see the reply dropped (`WriterGone`), never another job's result.
        debug_assert!(self.staged.is_some(), "a committed job without an answer");
        if let Some(answer) = self.staged {
            let _ = self.tx.send(Ok(answer));
        }
    }

    /// The job's record was not written: sends why.
    fn fail(self, error: StoreError) {
        let _ = self.tx.send(Err(error));
    }

    /// Whether the caller has stopped waiting.
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl Job {
    /// Whether the one waiting for this job's answer has given up (its deadline passed): the
    /// request was answered 503, so its record must not be written now.
    fn is_abandoned(&self) -> bool {
        match self {
            Job::Logout(_, reply) => reply.is_closed(),
            Job::Note(_, reply) => reply.is_closed(),
            Job::KeySet(_, _, reply) => reply.is_closed(),
            Job::Checkpoint(_, reply) => reply.is_closed(),
            Job::Deliveries(_, reply) => reply.is_closed(),
        }
    }

    /// Its batch committed: sends the answer it staged.
    fn committed(self) {
        match self {
            Job::Logout(_, reply) => reply.committed(),
            Job::Note(_, reply) => reply.committed(),
            Job::KeySet(_, _, reply) => reply.committed(),
            Job::Checkpoint(_, reply) => reply.committed(),
            Job::Deliveries(_, reply) => reply.committed(),
        }
    }

    /// Its record was not written: answers with the error.
    fn fail(self, error: StoreError) {
        match self {
            Job::Logout(_, reply) => reply.fail(error),
            Job::Note(_, reply) => reply.fail(error),
            Job::KeySet(_, _, reply) => reply.fail(error),
            Job::Checkpoint(_, reply) => reply.fail(error),
            Job::Deliveries(_, reply) => reply.fail(error),
        }
    }
}

/// Loads the chain's head first (see [`warm_up`]), says so on `ready`, then runs as [`run`].
pub(super) async fn start<W: WriteDb>(
    mut db: W,
    rx: mpsc::Receiver<Job>,
    settings: super::WriterSettings,
    health: Arc<Health>,
    ready: oneshot::Sender<()>,
    committed: watch::Sender<i64>,
) {
    let mut window = ReplayWindow::new(settings.replay_validity);
    let head = warm_up(&mut db, &mut window, settings.timeout).await;
    if let Some(h) = &head {
        committed.send_replace(h.next_id - 1);
    }
    let _ = ready.send(());
    run(head, window, db, rx, settings.timeout, health, committed).await;
}

/// Runs until every sender is dropped, then commits what is left and returns. While the store
/// is down, whatever arrives is answered [`StoreError::Unavailable`] at once and a probe runs
/// every [`PROBE_INTERVAL`] until one gets through. `head` is the chain's end if known.
async fn run<W: WriteDb>(
    mut head: Option<Head>,
    mut window: ReplayWindow,
    mut db: W,
    mut rx: mpsc::Receiver<Job>,
    timeout: Duration,
    health: Arc<Health>,
    committed: watch::Sender<i64>,
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
            let mut chain = Chain {
                head: &mut head,
                window: &mut window,
            };
            process(&mut db, &mut chain, &mut batch, timeout, &health).await;
            // Whoever follows the log (delivery) learns of the new records at once.
            if let Some(last) = head.as_ref().map(|h| h.next_id - 1) {
                committed.send_if_modified(|c| std::mem::replace(c, last) != last);
            }
        }
    }
    tracing::info!("audit writer stopped");
}

/// Reads the chain's end and rebuilds the Merkle accumulator before the first batch, without
/// the store timeout: on a store of millions of records that takes seconds, which no request
/// should wait for (nor fail on, again and again). `None` when the store cannot be read now; the
/// first batch then does it.
async fn warm_up<W: WriteDb>(
    db: &mut W,
    window: &mut ReplayWindow,
    timeout: Duration,
) -> Option<Head> {
    let started = Instant::now();
    let result = async {
        let mut tx = tokio::time::timeout(timeout, db.begin())
            .await
            .unwrap_or(Err(StoreError::Timeout(timeout)))?;
        tokio::time::timeout(WARM_UP_LIMIT, sync_head(&mut *tx, None, window))
            .await
            .unwrap_or(Err(StoreError::Timeout(WARM_UP_LIMIT)))
    }
    .await;
    match result {
        Ok(head) => {
            tracing::debug!(
                records = head.next_id - 1,
                replay_window = window.len(),
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
    chain: &mut Chain<'_>,
    batch: &mut Vec<Job>,
    timeout: Duration,
    health: &Health,
) {
    let error = match commit(db, chain, batch, timeout).await {
        Ok(()) => {
            log_commit(batch);
            batch.drain(..).for_each(Job::committed);
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
        let mut one = [job];
        let result = commit(db, chain, &mut one, timeout).await;
        let [job] = one;
        match result {
            Ok(()) => {
                log_commit(std::slice::from_ref(&job));
                job.committed();
            }
            Err(e) if e.is_record() => {
                tracing::error!("audit record not committed: {e}");
                job.fail(StoreError::NotCommitted(Arc::new(e)));
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
/// Written once per batch into one string, and only when the line will be logged.
fn log_commit(jobs: &[Job]) {
    use std::fmt::Write;
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let mut ids = String::new();
    for id in jobs.iter().filter_map(|j| match j {
        Job::Logout(r, _) => r.request_id,
        _ => None,
    }) {
        let sep = if ids.is_empty() { "" } else { "," };
        let _ = write!(ids, "{sep}{id}");
    }
    if !ids.is_empty() {
        tracing::info!(records = jobs.len(), request_ids = %ids, "audit batch committed");
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
        job.fail(error());
    }
}

/// Brings the cached head up to the stored chain: catches up on records appended by another
/// process, or rebuilds from scratch when the cache cannot be trusted.
async fn sync_head<C: ChainOps>(
    tx: &mut C,
    cached: Option<Head>,
    window: &mut ReplayWindow,
) -> Result<Head, StoreError> {
    let (last_id, last_hash) = tx.last_entry().await?;
    let mut head = match cached {
        Some(h) if h.next_id - 1 == last_id && h.prev_hash == last_hash => return Ok(h),
        // Another writer appended: its acceptances join the window before this batch decides.
        Some(h) if h.next_id - 1 < last_id && last_id - h.next_id < CATCH_UP_BY_ID => {
            window.extend(tx.accepted(AcceptedSince::Ids(h.next_id..=last_id)).await?);
            h
        }
        Some(h) if h.next_id - 1 < last_id => {
            reload_window(tx, window).await?;
            h
        }
        _ => {
            reload_window(tx, window).await?;
            Head {
                next_id: 1,
                prev_hash: crate::tlog::entry::GENESIS,
                tree: Accumulator::new(),
            }
        }
    };
    while head.next_id <= last_id {
        let page = tx.leaves(head.next_id..=last_id, REBUILD_PAGE).await?;
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

/// Reads the whole replay window back from the stored records.
async fn reload_window<C: ChainOps>(
    tx: &mut C,
    window: &mut ReplayWindow,
) -> Result<(), StoreError> {
    window.clear();
    window.extend(tx.accepted(AcceptedSince::Within(window.span_ms())).await?);
    Ok(())
}

/// What the writer knows of the committed chain: its end, and the acceptances of the replay
/// window.
struct Chain<'a> {
    head: &'a mut Option<Head>,
    window: &'a mut ReplayWindow,
}

/// Commits `jobs` in one transaction within the timeout; the cached head moves, and the batch's
/// acceptances join the replay window, only on commit.
async fn commit<W: WriteDb>(
    db: &mut W,
    chain: &mut Chain<'_>,
    jobs: &mut [Job],
    timeout: Duration,
) -> Result<(), StoreError> {
    let cached = chain.head.clone();
    let window = &mut *chain.window;
    let (cursor, accepted) = tokio::time::timeout(timeout, async {
        let mut tx = db.begin().await?;
        let mut cursor = sync_head(&mut *tx, cached, window).await?;
        let accepted = write_jobs(&mut *tx, jobs, &mut cursor, window).await?;
        W::commit(tx).await?;
        Ok::<_, StoreError>((cursor, accepted))
    })
    .await
    .unwrap_or(Err(StoreError::Timeout(timeout)))?;
    // Only now: after a failure the head still describes what was committed before this batch,
    // so the next batch checks it against the stored chain's end rather than rebuilding the tree.
    *chain.head = Some(cursor);
    let latest = accepted.iter().map(|a| a.2).max();
    for (key, seen, at) in accepted {
        chain.window.insert(key, seen, at);
    }
    if let Some(now) = latest {
        chain.window.prune(now);
    }
    Ok(())
}

/// Rows and index entries computed in memory and written with a few multi-row statements.
#[derive(Default)]
struct Pending {
    rows: Vec<(EventRow, [u8; 32])>,
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
        tx.insert_batch(&self.rows, &self.pairs).await?;
        self.rows.clear();
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

/// The replay decisions of one batch: the committed window, and this batch's acceptances on top
/// of it (they join the window only if the batch commits).
struct BatchReplay<'a> {
    window: &'a ReplayWindow,
    staged: HashMap<Key, Seen>,
    accepted: Vec<(Key, Seen, i64)>,
}

impl BatchReplay<'_> {
    /// The record that accepted a token under `key`, and whether it is this very token.
    fn get(&self, key: &Key, token_sha256: &[u8; 32]) -> Option<(i64, bool)> {
        match self.staged.get(key) {
            Some(s) => Some((s.id, s.token_sha256 == *token_sha256)),
            None => self.window.get(key, token_sha256),
        }
    }

    fn accept(&mut self, key: Key, seen: Seen, received_at: i64) {
        self.staged.insert(key, seen);
        self.accepted.push((key, seen, received_at));
    }
}

/// Writes `jobs` in the open transaction, each staging its own answer for when it commits.
/// Returns the batch's acceptances `(key, record, received_at)`.
async fn write_jobs<C: ChainOps>(
    tx: &mut C,
    jobs: &mut [Job],
    head: &mut Head,
    window: &ReplayWindow,
) -> Result<Vec<(Key, Seen, i64)>, StoreError> {
    let mut scratch = Vec::with_capacity(4096);
    let mut known = BatchReplay {
        window,
        staged: HashMap::new(),
        accepted: Vec::new(),
    };
    let mut pending = Pending::default();
    for job in jobs {
        match job {
            Job::Logout(record, reply) => {
                reply.stage(chain_logout(
                    record,
                    &mut known,
                    &mut pending,
                    head,
                    &mut scratch,
                ));
            }
            Job::Note(note, reply) => {
                let id = head.next_id;
                pending.chain(note_row(id, note), head, &mut scratch);
                reply.stage(id);
            }
            Job::KeySet(set, seen_at, reply) => {
                pending.flush(tx).await?;
                reply.stage(archive_key_set(tx, set, *seen_at, head, &mut scratch).await?);
            }
            Job::Checkpoint(req, reply) => {
                pending.flush(tx).await?;
                reply.stage(checkpoint(tx, req, head, &mut scratch).await?);
            }
            // Not chained: delivery state shares the batch's commit, nothing more.
            Job::Deliveries(ops, reply) => reply.stage(tx.deliveries(ops).await?),
        }
    }
    pending.flush(tx).await?;
    Ok(known.accepted)
}

/// Decides a logout's outcome against the tokens accepted so far and chains its row.
fn chain_logout(
    record: &NewRecord,
    known: &mut BatchReplay<'_>,
    pending: &mut Pending,
    head: &mut Head,
    scratch: &mut Vec<u8>,
) -> Committed {
    let id = head.next_id;
    let key = match (&record.facts.iss, &record.facts.jti, record.token_sha256) {
        (Some(iss), Some(jti), Some(_)) => Some(ReplayWindow::key(iss, jti)),
        _ => None,
    };
    let existing = key
        .zip(record.token_sha256)
        .and_then(|(k, sha)| known.get(&k, &sha));
    let (outcome, rejection, duplicate_of) = resolve(record, existing);
    let committed = Committed {
        id,
        outcome,
        rejection,
        duplicate_of,
    };
    pending.chain(logout_row(id, record, &committed), head, scratch);
    if let (Outcome::Accepted, Some(k), Some(sha)) = (outcome, key, record.token_sha256) {
        let seen = Seen {
            id,
            token_sha256: sha,
        };
        known.accept(k, seen, record.received_at);
    }
    if let Some(meta) = &record.facts.metadata
        && committed.signature_verified()
    {
        pending
            .pairs
            .extend(meta.pairs.iter().map(|(k, v)| (k.clone(), v.clone(), id)));
    }
    committed
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
    let row = CheckpointRow {
        size,
        root: &root,
        note: &note,
        at: req.at,
    };
    tx.insert_checkpoint(&row).await?;
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
mod tests;
