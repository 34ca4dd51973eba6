//! Which database a URL names: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

use super::{StoreError, pg_tls, sqlite};
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
            let options = pg_tls::apply(url, options)?;
            return Ok(Self::Postgres(Box::new(
                options.application_name("logout-ledger"),
            )));
        }
        sqlite::path_from_url(url).map(Self::Sqlite)
    }
}

/// Adds the configuration file's `database_sslmode` / `database_sslrootcert` to a PostgreSQL URL
/// that does not already say them (the URL, being more specific, wins).
pub fn with_tls_settings(
    url: &str,
    sslmode: Option<&str>,
    sslrootcert: Option<&str>,
) -> Result<String, StoreError> {
    if sslmode.is_none() && sslrootcert.is_none() {
        return Ok(url.to_owned());
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::UnsupportedUrl(format!(
            "{}: database_sslmode and database_sslrootcert apply to a postgres:// database only",
            redact_url(url)
        )));
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let says = |names: &[&str]| {
        form_urlencoded::parse(query.as_bytes()).any(|(k, _)| names.contains(&&*k))
    };
    let mut extra = form_urlencoded::Serializer::new(String::new());
    if let Some(mode) = sslmode.filter(|_| !says(&["sslmode", "ssl-mode"])) {
        extra.append_pair("sslmode", mode);
    }
    if let Some(root) = sslrootcert.filter(|_| !says(&["sslrootcert", "ssl-root-cert", "ssl-ca"])) {
        extra.append_pair("sslrootcert", root);
    }
    let extra = extra.finish();
    Ok(match (extra.is_empty(), url.contains('?')) {
        (true, _) => url.to_owned(),
        (false, true) => format!("{url}&{extra}"),
        (false, false) => format!("{url}?{extra}"),
    })
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
    fn the_files_tls_settings_fill_what_the_url_does_not_say() {
        let add = |url, mode, root| with_tls_settings(url, mode, root).unwrap_or_default();
        assert_eq!(
            add(
                "postgres://u@db/a",
                Some("verify-full"),
                Some("/etc/ca 1.pem")
            ),
            "postgres://u@db/a?sslmode=verify-full&sslrootcert=%2Fetc%2Fca+1.pem"
        );
        assert_eq!(
            add(
                "postgres://u@db/a?sslmode=require",
                Some("verify-full"),
                None
            ),
            "postgres://u@db/a?sslmode=require"
        );
        assert_eq!(
            add(
                "postgres://u@db/a?application_name=x",
                None,
                Some("/ca.pem")
            ),
            "postgres://u@db/a?application_name=x&sslrootcert=%2Fca.pem"
        );
        assert_eq!(add("sqlite://a.db", None, None), "sqlite://a.db");
        assert!(with_tls_settings("sqlite://a.db", Some("require"), None).is_err());
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
