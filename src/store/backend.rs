//! The seam between the store's logic and its databases: what the group-commit writer, the
//! CLI's access records and retention need, implemented once for SQLite and once for
//! PostgreSQL. Everything above this trait (chaining, replay decisions, checkpoints) is shared.

use std::borrow::Cow;
use std::future::Future;

use std::ops::{DerefMut, RangeInclusive};

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

use super::chain::EventRow;
use super::deliveries::DeliveryOp;
use super::entry::{Note, note_row};
use super::replay::Key;
use super::{PurgePlan, StoreError};
use crate::keys::FetchedKeySet;

/// An accepted record as the replay window remembers it (`replay.rs`).
#[derive(Debug, Clone)]
pub(super) struct AcceptedToken {
    /// The accepting record's id.
    pub id: i64,
    /// The replay key of its `(iss, jti)` (`ReplayWindow::key`): 16 bytes, so reading a
    /// window of many thousands of records back at start-up holds no strings.
    pub key: Key,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
    /// When it was received (ms since the epoch).
    pub received_at: i64,
}

/// Which accepted records to read back into the replay window.
#[derive(Debug, Clone)]
pub(super) enum AcceptedSince {
    /// Those with ids in this range (another writer appended them).
    Ids(RangeInclusive<i64>),
    /// Those received within this many ms of the latest record: the whole window, at start-up.
    Within(i64),
}

/// An archived key set: its digest and the ids of its usable keys.
pub(super) type ArchivedKeySet = ([u8; 32], Vec<String>);

/// A database the writer can open batch transactions on.
pub(super) trait WriteDb: Send {
    /// What a batch runs its statements on.
    type Conn: ChainOps;
    /// A batch's open transaction (rolled back if dropped uncommitted).
    type Tx<'a>: DerefMut<Target = Self::Conn> + Send
    where
        Self: 'a;

    /// Begins a batch: a transaction that holds the chain lock (the single sequencer) until it
    /// commits or rolls back, so no other writer can append meanwhile.
    fn begin(&mut self) -> impl Future<Output = Result<Self::Tx<'_>, StoreError>> + Send;

    /// Commits a batch: durable when this returns.
    fn commit<'a>(tx: Self::Tx<'a>) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;
}

/// The statements of the chain's writers, run inside a transaction that holds the chain lock.
pub(super) trait ChainOps: Send {
    /// The last chained entry's id and hash; on an empty store, the retention anchor's
    /// predecessor, or `(0, GENESIS)`.
    fn last_entry(&mut self) -> impl Future<Output = Result<(i64, [u8; 32]), StoreError>> + Send;

    /// Entry hashes with ids in `ids`, purged ones included, in id order (at most `limit`).
    fn leaves(
        &mut self,
        ids: RangeInclusive<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Leaves, StoreError>> + Send;

    /// The accepted logout records `which` selects, in id order.
    fn accepted(
        &mut self,
        which: AcceptedSince,
    ) -> impl Future<Output = Result<Vec<AcceptedToken>, StoreError>> + Send;

    /// Inserts chained rows, in order.
    fn insert_rows(
        &mut self,
        rows: &[(EventRow, [u8; 32])],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Inserts chained rows, in order, and indexes their valid metadata pairs
    /// (`(key, value, record id)`).
    fn insert_batch(
        &mut self,
        rows: &[(EventRow, [u8; 32])],
        pairs: &[(String, String, i64)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a signed checkpoint.
    fn insert_checkpoint(
        &mut self,
        row: &CheckpointRow<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves `last_seen` of an archived key set forward; false when the digest is new.
    fn touch_key_set(
        &mut self,
        digest: &[u8; 32],
        seen_at: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The most recently archived key set of an issuer: digest and kids.
    fn latest_key_set(
        &mut self,
        issuer: &str,
    ) -> impl Future<Output = Result<Option<ArchivedKeySet>, StoreError>> + Send;

    /// Archives a new key set.
    fn insert_key_set(
        &mut self,
        set: &FetchedKeySet,
        seen_at: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Runs the delivery side's writes in order; answers how many rows each changed.
    fn deliveries(
        &mut self,
        ops: &[DeliveryOp],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;

    /// What a retention run would remove: the largest checkpointed prefix older than `before`.
    fn purge_plan(
        &mut self,
        before: i64,
    ) -> impl Future<Output = Result<PurgePlan, StoreError>> + Send;

    /// Removes records `..=through` (keeping their entry hashes), moves the chain anchor to
    /// the last removed hash and returns it with the number of records removed.
    fn remove_through(
        &mut self,
        through: i64,
    ) -> impl Future<Output = Result<([u8; 32], u64), StoreError>> + Send;
}

/// Appends one record after whatever the chain ends with now, inside a transaction holding
/// the chain lock. Returns its id.
pub(super) async fn append_after_last<C: ChainOps>(
    conn: &mut C,
    note: &Note,
) -> Result<i64, StoreError> {
    let (last_id, last_hash) = conn.last_entry().await?;
    let row = note_row(last_id + 1, note);
    let hash = row.entry_hash(&last_hash, &mut Vec::new());
    let id = row.id;
    conn.insert_rows(&[(row, hash)]).await?;
    Ok(id)
}

/// The last record older than a retention cut-off: before the first record received at or after
/// it (`newer`), else the last record (`last`), else none (0).
pub(super) fn older_through(newer: Option<i64>, last: Option<i64>) -> i64 {
    match (newer, last) {
        (Some(n), _) => n - 1,
        (None, Some(l)) => l,
        (None, None) => 0,
    }
}

/// A retention plan from the first stored record and the largest checkpoint among the old
/// records: whole checkpointed ranges only, nothing when that checkpoint is already removed.
pub(super) fn purge_plan(first: Option<i64>, checkpoint: Option<i64>) -> PurgePlan {
    let first = first.unwrap_or(1);
    let through = checkpoint.filter(|t| *t >= first);
    PurgePlan {
        first_id: first,
        through,
        records: through.map_or(0, |t| t - first + 1),
    }
}

/// Parses the JSON array of kids stored beside an archived key set.
pub(super) fn parse_kids(kids: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(kids).map_err(|e| StoreError::Corrupt {
        id: 0,
        message: format!("key set kids: {e}"),
    })
}

/// A page of `(id, entry_hash)` pairs in id order, for rebuilding the Merkle tree.
pub(crate) type Leaves = Vec<(i64, [u8; 32])>;

/// One signed checkpoint as the `checkpoints` table stores it.
pub(crate) struct CheckpointRow<'a> {
    /// The tree size the checkpoint commits to (the last record id).
    pub size: i64,
    /// The Merkle root of the first `size` records.
    pub root: &'a [u8; 32],
    /// The signed note, as `verify` and the proof API hand it out.
    pub note: &'a str,
    /// When it was signed (Unix seconds).
    pub at: i64,
}

/// The migration list, written once: both backends share versions and names, and each has
/// its own SQL file per version under `migrations/<backend>/`.
macro_rules! migrations {
    ($dir:literal) => {
        [
            (
                1,
                "audit events",
                include_str!(concat!("../../migrations/", $dir, "/0001_audit_events.sql")),
            ),
            (
                2,
                "query indexes",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0002_query_indexes.sql"
                )),
            ),
            (
                3,
                "unverified records",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0003_unverified_records.sql"
                )),
            ),
            (
                4,
                "replay window in memory",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0004_replay_window.sql"
                )),
            ),
            (
                5,
                "deliveries",
                include_str!(concat!("../../migrations/", $dir, "/0005_deliveries.sql")),
            ),
            (
                6,
                "summary index",
                include_str!(concat!(
                    "../../migrations/",
                    $dir,
                    "/0006_summary_index.sql"
                )),
            ),
        ]
    };
}

/// The SQLite migrations, embedded in the binary so a fresh machine needs nothing else.
pub(super) fn sqlite_migrator() -> Migrator {
    embedded_migrator(migrations!("sqlite"))
}

/// The PostgreSQL migrations. sqlx holds an advisory lock while it applies them, so replicas
/// starting together apply each migration once.
pub(super) fn postgres_migrator() -> Migrator {
    embedded_migrator(migrations!("postgres"))
}

/// A migrator over migrations embedded in the binary (`(version, description, sql)`), so a
/// fresh machine needs nothing beside it.
fn embedded_migrator<const N: usize>(sql: [(i64, &'static str, &'static str); N]) -> Migrator {
    let migrations = sql
        .into_iter()
        .map(|(v, d, s)| {
            Migration::new(
                v,
                Cow::Borrowed(d),
                MigrationType::Simple,
                SqlStr::from_static(s),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}
