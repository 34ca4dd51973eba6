//! The writer's batch handling against a scripted database: what it commits, how often it
//! begins a transaction, and what every job is answered.

use std::ops::RangeInclusive;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use super::*;
use crate::logout_token::TokenFacts;
use crate::store::Failure;
use crate::store::PurgePlan;
use crate::store::backend::{AcceptedSince, AcceptedToken, ArchivedKeySet, CheckpointRow, Leaves};
use crate::tlog::entry::GENESIS;

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
    /// How often the writer read stored entry hashes (to rebuild or catch up its Merkle tree).
    leaf_reads: usize,
    committed: Vec<(EventRow, [u8; 32])>,
    key_sets: Vec<[u8; 32]>,
}

/// The scripted database; clones share one state.
#[derive(Debug, Clone)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn new(mode: Mode) -> Self {
        Self(Arc::new(Mutex::new(State {
            mode,
            begins: 0,
            leaf_reads: 0,
            committed: Vec::new(),
            key_sets: Vec::new(),
        })))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().expect("fake state"))
    }

    fn begins(&self) -> usize {
        self.with(|s| s.begins)
    }

    fn leaf_reads(&self) -> usize {
        self.with(|s| s.leaf_reads)
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

    async fn leaves(
        &mut self,
        ids: RangeInclusive<i64>,
        _limit: u32,
    ) -> Result<Leaves, StoreError> {
        Ok(self.db.with(|s| {
            s.leaf_reads += 1;
            s.committed
                .iter()
                .filter(|(r, _)| ids.contains(&r.id))
                .map(|(r, h)| (r.id, *h))
                .collect()
        }))
    }

    async fn accepted(&mut self, which: AcceptedSince) -> Result<Vec<AcceptedToken>, StoreError> {
        Ok(self.db.with(|s| {
            let latest = s.committed.iter().map(|(r, _)| r.received_at).max();
            s.committed
                .iter()
                .filter(|(r, _)| match &which {
                    AcceptedSince::Ids(ids) => ids.contains(&r.id),
                    AcceptedSince::Within(span) => Some(r.received_at + span) >= latest,
                })
                .filter(|(r, _)| r.outcome.as_deref() == Some("accepted"))
                .filter_map(|(r, _)| {
                    Some(AcceptedToken {
                        id: r.id,
                        key: ReplayWindow::key(r.iss.as_deref()?, r.jti.as_deref()?),
                        token_sha256: r.token_sha256.as_deref()?.try_into().ok()?,
                        received_at: r.received_at,
                    })
                })
                .collect()
        }))
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

    async fn insert_batch(
        &mut self,
        rows: &[(EventRow, [u8; 32])],
        _pairs: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        self.insert_rows(rows).await
    }

    async fn insert_checkpoint(&mut self, _c: &CheckpointRow<'_>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn touch_key_set(
        &mut self,
        digest: &[u8; 32],
        _seen_at: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.db.with(|s| s.key_sets.contains(digest)))
    }

    async fn latest_key_set(
        &mut self,
        _issuer: &str,
    ) -> Result<Option<ArchivedKeySet>, StoreError> {
        Ok(None)
    }

    async fn insert_key_set(
        &mut self,
        set: &FetchedKeySet,
        _seen_at: i64,
    ) -> Result<(), StoreError> {
        self.db.with(|s| s.key_sets.push(set.digest));
        Ok(())
    }

    async fn deliveries(
        &mut self,
        ops: &[crate::store::deliveries::DeliveryOp],
    ) -> Result<Vec<u64>, StoreError> {
        Ok(vec![1; ops.len()])
    }

    async fn purge_plan(&mut self, _before: i64) -> Result<PurgePlan, StoreError> {
        unreachable!("the writer never purges")
    }

    async fn remove_through(&mut self, _through: i64) -> Result<([u8; 32], u64), StoreError> {
        unreachable!("the writer never purges")
    }
}

const TIMEOUT: Duration = Duration::from_millis(300);
/// The replay window the test writers keep (plus the window's own margin).
const WINDOW: Duration = Duration::from_secs(60);

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
    let (reply, rx) = Reply::new();
    (Job::Logout(Box::new(record), reply), rx)
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
        run(
            None,
            ReplayWindow::new(WINDOW),
            db,
            rx,
            TIMEOUT,
            writer_health,
            tokio::sync::watch::channel(0).0,
        )
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

/// The class of error each caller got (`None`: committed).
fn classes<T>(got: &[Result<T, StoreError>]) -> Vec<Option<Failure>> {
    got.iter()
        .map(|r| r.as_ref().err().map(StoreError::failure))
        .collect()
}

/// The cause of a write that was tried and not committed.
fn cause<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> &Arc<StoreError> {
    match r {
        Err(StoreError::NotCommitted(cause)) => cause,
        other => panic!("expected a batch that did not commit, got {other:?}"),
    }
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
    assert_eq!(
        classes(&got),
        [None, None, Some(Failure::Record), None, None],
        "only the bad row's caller hears of it, as a record failure"
    );
    assert!(matches!(**cause(&got[2]), StoreError::Sqlite(_)), "{got:?}");
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
    assert_eq!(classes(&got), [Some(Failure::Connection); 5], "{got:?}");
    assert!(
        matches!(**cause(&got[0]), StoreError::Database(sqlx::Error::Io(_))),
        "the original error reaches the caller: {got:?}"
    );
    assert!(
        got.iter().all(|r| Arc::ptr_eq(cause(r), cause(&got[0]))),
        "one cause, shared by every job of the batch"
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
    assert_eq!(classes(&[r]), [Some(Failure::Connection)]);
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
        got.iter()
            .all(|r| matches!(**cause(r), StoreError::Timeout(TIMEOUT))),
        "{got:?}"
    );
    assert_eq!(classes(&got), [Some(Failure::Connection); 3]);
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

#[tokio::test]
async fn the_head_is_kept_across_a_failed_batch() {
    let db = Fake::new(Mode::Healthy);
    let (jobs, rxs) = jobs(&["a", "b"]);
    let (tx, _health, task) = writer_with(&db, jobs);
    let first = answers(rxs).await;
    assert_eq!(classes(&first), [None, None]);
    assert_eq!(db.leaf_reads(), 0, "an empty store has no tree to read");

    db.with(|s| s.mode = Mode::Poison("x"));
    let (job, rx) = logout("x");
    tx.send(job).await.expect("queue");
    let failed = rx.await.expect("answered");
    assert_eq!(classes(&[failed]), [Some(Failure::Record)]);

    db.with(|s| s.mode = Mode::Healthy);
    let (job, rx) = logout("c");
    tx.send(job).await.expect("queue");
    let committed = rx.await.expect("answered").expect("committed");
    assert_eq!(committed.id, 3, "right after the last committed record");
    assert_eq!(
        db.leaf_reads(),
        0,
        "the cached tree was used as it was, not rebuilt from the stored hashes"
    );
    let rows = db.with(|s| s.committed.clone());
    let (b, c) = (&rows[1], &rows[2]);
    assert_eq!(
        c.1,
        c.0.entry_hash(&b.1, &mut Vec::new()),
        "chained after b"
    );
    drop(tx);
    task.await.expect("writer ends");
}

#[tokio::test]
async fn every_kind_of_job_gets_its_own_answer_from_one_batch() {
    let db = Fake::new(Mode::Healthy);
    let (logout_a, a) = logout("a");
    let (note_reply, note) = Reply::new();
    let (key_set_reply, key_set) = Reply::new();
    let (checkpoint_reply, checkpoint) = Reply::new();
    let (logout_b, b) = logout("b");
    let signer = NoteSigner::new(
        "log.example/audit",
        &crate::tlog::note::generate_pkcs8().expect("key"),
    )
    .expect("signer");
    let set = FetchedKeySet {
        issuer: "https://op.example/".into(),
        digest: [7; 32],
        document: "{}".into(),
        kids: vec!["k1".into()],
    };
    let batch = vec![
        logout_a,
        Job::Note(
            Note {
                kind: NoteKind::System,
                action: "test".into(),
                details: json!({}),
                at: 1,
            },
            note_reply,
        ),
        Job::KeySet(set, 1, key_set_reply),
        Job::Checkpoint(
            CheckpointRequest {
                signer: Arc::new(signer),
                at: 1,
            },
            checkpoint_reply,
        ),
        logout_b,
    ];
    let (tx, _health, task) = writer_with(&db, batch);

    let a = a.await.expect("answered").expect("committed");
    let note = note.await.expect("answered").expect("committed");
    let key_set = key_set.await.expect("answered").expect("committed");
    let checkpoint = checkpoint.await.expect("answered").expect("committed");
    let b = b.await.expect("answered").expect("committed");
    assert_eq!((a.id, a.outcome), (1, Outcome::Accepted));
    assert_eq!(note, 2);
    assert_eq!(key_set, Some(3), "a new key set is recorded");
    let mut tree = Accumulator::new();
    for (_, hash) in db.with(|s| s.committed.clone()).iter().take(3) {
        tree.push(leaf_hash(hash));
    }
    assert_eq!(
        (checkpoint.tree_size, checkpoint.root),
        (3, tree.root()),
        "the checkpoint covers what came before it in the batch"
    );
    assert_eq!(b.id, 5, "after the checkpoint's own record");
    assert_eq!(db.begins(), 1, "one transaction");
    drop(tx);
    task.await.expect("writer ends");
}

/// Sends one job on a running writer and waits for its answer.
async fn send(tx: &mpsc::Sender<Job>, (job, rx): (Job, Answer)) -> Committed {
    tx.send(job).await.expect("queue");
    rx.await.expect("answered").expect("committed")
}

#[tokio::test]
async fn a_writer_started_on_a_store_knows_the_acceptances_of_the_window() {
    let db = Fake::new(Mode::Healthy);
    let (first, _, task) = writer_with(&db, Vec::new());
    let original = send(&first, logout("a")).await;
    assert_eq!(original.outcome, Outcome::Accepted);
    drop(first);
    task.await.expect("writer ends");

    // A new writer (a restart) reads the window back from the stored records.
    let (tx, _, task) = writer_with(&db, Vec::new());
    let again = send(&tx, logout("a")).await;
    assert_eq!(
        (again.outcome, again.duplicate_of),
        (Outcome::Duplicate, Some(original.id))
    );
    drop(tx);
    task.await.expect("writer ends");
}

#[tokio::test]
async fn an_acceptance_by_another_writer_is_seen_by_the_next_batch() {
    let db = Fake::new(Mode::Healthy);
    let (ours, _, our_task) = writer_with(&db, Vec::new());
    let (theirs, _, their_task) = writer_with(&db, Vec::new());
    assert_eq!(send(&ours, logout("x")).await.id, 1);
    // The other replica appends after our head: our cached head is now behind.
    let accepted = send(&theirs, logout("a")).await;
    assert_eq!((accepted.id, accepted.outcome), (2, Outcome::Accepted));
    let again = send(&ours, logout("a")).await;
    assert_eq!(
        (again.id, again.outcome, again.duplicate_of),
        (3, Outcome::Duplicate, Some(2)),
        "caught up by id before deciding"
    );
    drop((ours, theirs));
    our_task.await.expect("writer ends");
    their_task.await.expect("writer ends");
}

#[tokio::test]
async fn an_acceptance_in_a_batch_that_failed_is_not_remembered() {
    let db = Fake::new(Mode::Poison("b"));
    let (jobs, rxs) = jobs(&["a", "b"]);
    let (tx, _, task) = writer_with(&db, jobs);
    let got = answers(rxs).await;
    assert!(got[0].is_ok() && got[1].is_err(), "{got:?}");
    db.with(|s| s.mode = Mode::Healthy);
    // "b" was chained in the failed batch, then refused alone: a later "b" is its first.
    let b = send(&tx, logout("b")).await;
    assert_eq!((b.outcome, b.duplicate_of), (Outcome::Accepted, None));
    drop(tx);
    task.await.expect("writer ends");
}
