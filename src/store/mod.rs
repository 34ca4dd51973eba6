//! The audit store: every request becomes one record, written through a single group-commit
//! writer and acknowledged only after its transaction commits. No SQL lives outside this module.

mod filter;
mod record;
mod sqlite;
mod writer;

pub use filter::{EventFilter, MAX_LIMIT, Order, parse_meta, parse_outcome, parse_reason};
pub use record::StoredRecord;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::logout_token::{Reason, Rejection, TokenFacts};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one we support.
    #[error("unsupported database URL {0:?} (expected sqlite://PATH)")]
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
}

/// What happened to a request, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A valid logout, recorded once.
    Accepted,
    /// The identical token again (the issuer retrying): answered 200, points at the original.
    Duplicate,
    /// Refused; the reason says why.
    Rejected,
}

impl Outcome {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        [Outcome::Accepted, Outcome::Duplicate, Outcome::Rejected]
            .into_iter()
            .find(|o| o.code() == code)
    }
}

/// A request to record, as the endpoint saw it. The store decides `duplicate` and `replay`.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Milliseconds since the epoch when the request arrived.
    pub received_at: i64,
    /// The validator's verdict (`Ok` = every rule but replay held).
    pub verdict: Result<(), Rejection>,
    /// What the token says.
    pub facts: TokenFacts,
    /// The token itself; stored only if the record ends up accepted.
    pub token: Option<String>,
    /// SHA-256 of the token as received.
    pub token_sha256: Option<[u8; 32]>,
    /// Peer address.
    pub source_ip: Option<String>,
    /// `User-Agent` header (bounded).
    pub user_agent: Option<String>,
}

/// The committed record's identity and final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Sequence number of the record.
    pub id: i64,
    /// Final outcome.
    pub outcome: Outcome,
    /// The rejection, when rejected.
    pub rejection: Option<Rejection>,
    /// For a duplicate, the original record.
    pub duplicate_of: Option<i64>,
}

impl Committed {
    /// The HTTP status this record answers with: 200, 400, or 503 for transient failures.
    pub fn http_status(&self) -> u16 {
        match (&self.outcome, &self.rejection) {
            (Outcome::Accepted | Outcome::Duplicate, _) => 200,
            (Outcome::Rejected, Some(r)) if r.reason.is_transient() => 503,
            (Outcome::Rejected, _) => 400,
        }
    }
}

/// Decides the final outcome of a record given the accepted token already holding its
/// `(iss, jti)`, if any. Shared by every backend so they agree to the letter.
pub fn resolve(
    record: &NewRecord,
    existing: Option<(i64, [u8; 32])>,
) -> (Outcome, Option<Rejection>, Option<i64>) {
    if let (Some((original, hash)), Some(ours)) = (existing, record.token_sha256) {
        if hash == ours {
            return (Outcome::Duplicate, None, Some(original));
        }
        if record.verdict.is_ok() {
            let detail =
                format!("jti already accepted in record {original} with a different token");
            return (
                Outcome::Rejected,
                Some(Rejection::new(Reason::Replay, detail)),
                None,
            );
        }
    }
    match &record.verdict {
        Ok(()) => (Outcome::Accepted, None, None),
        Err(r) => (Outcome::Rejected, Some(r.clone()), None),
    }
}

struct Job {
    record: NewRecord,
    reply: oneshot::Sender<Result<Committed, StoreError>>,
}

/// The audit store handle: cheap to clone, shared by every request.
#[derive(Debug, Clone)]
pub struct AuditStore {
    writer: mpsc::Sender<Job>,
    reader: sqlite::Reader,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

/// Handle to wait for the writer's last batch at shutdown.
#[derive(Debug)]
pub struct WriterTask(tokio::task::JoinHandle<()>);

impl WriterTask {
    /// Waits until the writer has committed everything queued and stopped.
    pub async fn finished(self) {
        let _ = self.0.await;
    }
}

impl AuditStore {
    /// Opens (creating if missing) and migrates the store, and starts its writer.
    pub async fn open(
        url: &str,
        write_timeout: Duration,
    ) -> Result<(Self, WriterTask), StoreError> {
        let path = sqlite::path_from_url(url)?;
        let (conn, reader) = sqlite::open(&path, write_timeout).await?;
        let (tx, rx) = mpsc::channel(4096);
        let handle = tokio::spawn(writer::run(conn, rx, write_timeout));
        Ok((Self { writer: tx, reader }, WriterTask(handle)))
    }

    /// Opens an existing store for reading only (CLI queries).
    pub async fn open_reader(url: &str) -> Result<StoreReader, StoreError> {
        let path = sqlite::path_from_url(url)?;
        Ok(StoreReader(sqlite::Reader::open_existing(&path).await?))
    }

    /// Records one request and returns its final outcome once committed.
    pub async fn append(&self, record: NewRecord) -> Result<Committed, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Job { record, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Reads records matching a filter.
    pub async fn query(&self, filter: &EventFilter) -> Result<Vec<StoredRecord>, StoreError> {
        self.reader.query(filter).await
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> bool {
        self.reader.ping().await
    }

    /// Closes the writer's queue; the writer commits what is queued and stops.
    pub fn close(self) {
        drop(self.writer);
    }
}

/// A read-only handle on a store, for the CLI.
#[derive(Debug, Clone)]
pub struct StoreReader(sqlite::Reader);

impl StoreReader {
    /// Reads records matching a filter.
    pub async fn query(&self, filter: &EventFilter) -> Result<Vec<StoredRecord>, StoreError> {
        self.0.query(filter).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ok: bool, hash: u8) -> NewRecord {
        NewRecord {
            received_at: 0,
            verdict: if ok {
                Ok(())
            } else {
                Err(Rejection::new(Reason::Expired, "old"))
            },
            facts: TokenFacts::default(),
            token: None,
            token_sha256: Some([hash; 32]),
            source_ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn identical_tokens_are_duplicates_even_when_expired() {
        assert_eq!(
            resolve(&record(true, 1), Some((7, [1; 32]))).0,
            Outcome::Duplicate
        );
        let (outcome, rejection, dup) = resolve(&record(false, 1), Some((7, [1; 32])));
        assert_eq!(
            (outcome, rejection, dup),
            (Outcome::Duplicate, None, Some(7))
        );
    }

    #[test]
    fn another_token_with_the_same_jti_is_a_replay() {
        let (outcome, rejection, _) = resolve(&record(true, 2), Some((7, [1; 32])));
        assert_eq!(outcome, Outcome::Rejected);
        assert_eq!(rejection.map(|r| r.reason), Some(Reason::Replay));
        // An invalid token keeps its own reason.
        let (_, rejection, _) = resolve(&record(false, 2), Some((7, [1; 32])));
        assert_eq!(rejection.map(|r| r.reason), Some(Reason::Expired));
    }

    #[test]
    fn first_valid_token_is_accepted() {
        assert_eq!(resolve(&record(true, 2), None).0, Outcome::Accepted);
    }
}
