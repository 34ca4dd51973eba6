//! What a failed write says about the store: that it cannot be reached (every record of the
//! batch fails alike, and the next ones would too), that one record was at fault (the others may
//! be committed without it), or neither. The writer retries job by job only for the second.

use rusqlite::ErrorCode;

use super::StoreError;

/// The class of a store failure, which decides how the writer treats its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached or does not answer in time (I/O error, pool timeout or
    /// closed, server shutting down, a lost connection, a lock held beyond the timeout, a store
    /// file that cannot be created): the whole batch fails at once and the store is marked down
    /// until a probe succeeds.
    Connection,
    /// One record can cause it (a constraint violation, a value the database refuses): the
    /// batch is retried job by job so the others still commit.
    Record,
    /// Anything else (corrupt stored data, a schema problem): the batch fails at once.
    Other,
}

impl StoreError {
    /// The class of this failure (see [`Failure`]).
    pub fn failure(&self) -> Failure {
        match self {
            StoreError::Database(e) => classify_sqlx(e),
            StoreError::Sqlite(e) => classify_sqlite(e),
            StoreError::Io(_)
            | StoreError::Timeout(_)
            | StoreError::Unavailable
            | StoreError::Tls { .. } => Failure::Connection,
            StoreError::NotCommitted(cause) => cause.failure(),
            StoreError::Sign(_) => Failure::Record,
            StoreError::UnsupportedUrl(_)
            | StoreError::InsecureDatabase(_)
            | StoreError::Migrate(_)
            | StoreError::WriterStart(_)
            | StoreError::WriterGone
            | StoreError::Corrupt { .. } => Failure::Other,
        }
    }

    /// Whether the store could not be reached (or did not answer in time).
    pub fn is_connection(&self) -> bool {
        self.failure() == Failure::Connection
    }

    /// Whether one record can have caused this, so its batch neighbours may still commit.
    pub fn is_record(&self) -> bool {
        self.failure() == Failure::Record
    }
}

/// sqlx errors (PostgreSQL, and SQLite through sqlx): SQLSTATE classes for the database's own.
fn classify_sqlx(e: &sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => Failure::Connection,
        sqlx::Error::Encode(_) => Failure::Record,
        sqlx::Error::Database(db) => match db.kind() {
            sqlx::error::ErrorKind::Other => db.code().map_or(Failure::Other, |c| sqlstate(&c)),
            _ => Failure::Record,
        },
        _ => Failure::Other,
    }
}

/// A PostgreSQL SQLSTATE (SQLite codes through sqlx are numbers: neither class matches them).
fn sqlstate(code: &str) -> Failure {
    match code.get(..2) {
        // connection_exception, insufficient_resources, system_error
        Some("08" | "53" | "58") => Failure::Connection,
        // operator_intervention: query_canceled (the statement timeout), admin_shutdown,
        // crash_shutdown, cannot_connect_now, database_dropped, idle_session_timeout
        Some("57") => Failure::Connection,
        // lock_not_available
        Some("55") if code == "55P03" => Failure::Connection,
        // data_exception, integrity_constraint_violation
        Some("22" | "23") => Failure::Record,
        _ => Failure::Other,
    }
}

/// The writer's own SQLite handle.
fn classify_sqlite(e: &rusqlite::Error) -> Failure {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory => Failure::Connection,
            ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch => {
                Failure::Record
            }
            _ => Failure::Other,
        },
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::NulError(_) => Failure::Record,
        _ => Failure::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn sqlite(code: std::ffi::c_int) -> StoreError {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    /// A database error with a given SQLSTATE, as PostgreSQL reports it.
    #[derive(Debug)]
    struct Pg(&'static str);

    impl std::fmt::Display for Pg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Pg {}

    impl sqlx::error::DatabaseError for Pg {
        fn message(&self) -> &str {
            self.0
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            match self.0 {
                "23505" => sqlx::error::ErrorKind::UniqueViolation,
                _ => sqlx::error::ErrorKind::Other,
            }
        }
    }

    fn pg(code: &'static str) -> StoreError {
        StoreError::Database(sqlx::Error::Database(Box::new(Pg(code))))
    }

    #[test]
    fn an_unreachable_database_is_a_connection_failure() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        for e in [
            StoreError::Database(sqlx::Error::Io(reset)),
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Database(sqlx::Error::PoolClosed),
            StoreError::Timeout(Duration::from_secs(1)),
            StoreError::Io(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
            pg("57P01"), // admin_shutdown: the server is stopping
            pg("57014"), // query_canceled: the statement timeout (a held chain lock)
            pg("08006"), // connection_failure
            sqlite(rusqlite::ffi::SQLITE_BUSY),
            sqlite(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        ] {
            assert_eq!(e.failure(), Failure::Connection, "{e}");
        }
    }

    #[test]
    fn what_one_record_can_cause_is_a_record_failure() {
        for e in [
            pg("23505"),
            pg("22021"), // character_not_in_repertoire
            sqlite(rusqlite::ffi::SQLITE_CONSTRAINT_CHECK),
            sqlite(rusqlite::ffi::SQLITE_TOOBIG),
        ] {
            assert!(e.is_record(), "{e}");
            assert!(!e.is_connection(), "{e}");
        }
    }

    #[test]
    fn other_failures_are_neither() {
        for e in [
            pg("42P01"), // undefined_table
            StoreError::Corrupt {
                id: 1,
                message: "x".into(),
            },
            sqlite(rusqlite::ffi::SQLITE_CORRUPT),
        ] {
            assert_eq!(e.failure(), Failure::Other, "{e}");
        }
    }

    #[test]
    fn a_shared_batch_failure_keeps_its_cause_class() {
        let cause = Arc::new(sqlite(rusqlite::ffi::SQLITE_BUSY));
        assert!(StoreError::NotCommitted(cause).is_connection());
    }
}
