//! Which database a URL names: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use super::{StoreError, sqlite};
use crate::util::redact_url;

/// The environment variable holding the PostgreSQL password (read instead of the URL's).
pub const PASSWORD_ENV: &str = "LOGOUT_LEDGER_DATABASE_PASSWORD";

/// A parsed database location.
#[derive(Debug, Clone)]
pub(super) enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (boxed: the options are large).
    Postgres(Box<PgConnectOptions>),
}

impl Location {
    /// Parses a database URL; the PostgreSQL password comes from [`PASSWORD_ENV`] when set.
    pub(super) fn parse(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut options = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::UnsupportedUrl(format!("{}: {e}", redact_url(url))))?;
            if options.get_database().is_none() {
                return Err(StoreError::UnsupportedUrl(format!(
                    "{}: names no database",
                    redact_url(url)
                )));
            }
            if let Ok(password) = std::env::var(PASSWORD_ENV) {
                options = options.password(&password);
            }
            return Ok(Self::Postgres(Box::new(
                options.application_name("logout-ledger"),
            )));
        }
        sqlite::path_from_url(url).map(Self::Sqlite)
    }
}

/// Checks that a database URL names a supported backend (configuration time).
pub fn check_url(url: &str) -> Result<(), StoreError> {
    Location::parse(url).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends() {
        assert!(matches!(
            Location::parse("sqlite://a.db"),
            Ok(Location::Sqlite(_))
        ));
        let pg = Location::parse("postgres://ledger@db.internal:5433/audit");
        match pg {
            Ok(Location::Postgres(o)) => {
                assert_eq!(o.get_host(), "db.internal");
                assert_eq!(o.get_port(), 5433);
                assert_eq!(o.get_database(), Some("audit"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Location::parse("postgres://ledger@host/").is_err());
        assert!(Location::parse("mysql://x/y").is_err());
    }

    #[test]
    fn a_bad_url_message_never_carries_the_password() {
        let e = Location::parse("postgres://u:hunter2@h:notaport/db")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
