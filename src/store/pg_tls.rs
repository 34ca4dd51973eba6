//! TLS to PostgreSQL: which `sslmode` a database URL gets, and the rule that keeps audit rows,
//! tokens and the login off the wire in clear text. A server that is not on this machine is
//! reached over TLS, its certificate checked against public CAs and `sslrootcert`, unless the URL
//! says `sslmode=disable` in so many words.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::StoreError;
use crate::util::redact_url;

/// The `sslmode` and `sslrootcert` a URL (or libpq's `PGSSLMODE` / `PGSSLROOTCERT`) writes out.
#[derive(Debug, Default, PartialEq, Eq)]
struct Written {
    mode: Option<String>,
    root_cert: Option<PathBuf>,
}

impl Written {
    /// Reads them from the URL's query, falling back on the environment as libpq does.
    fn read(url: &str) -> Self {
        let mut written = Self::default();
        if let Some((_, query)) = url.split_once('?') {
            for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                match &*key {
                    "sslmode" | "ssl-mode" => written.mode = Some(value.into_owned()),
                    "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                        written.root_cert = Some(PathBuf::from(value.into_owned()));
                    }
                    _ => {}
                }
            }
        }
        let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        written.mode = written.mode.or_else(|| env("PGSSLMODE"));
        written.root_cert = written
            .root_cert
            .or_else(|| env("PGSSLROOTCERT").map(PathBuf::from));
        written
    }
}

/// Whether the options name this machine: a Unix socket, `localhost` or a loopback address.
/// Only there may the connection fall back to clear text without being told to.
pub(super) fn is_local(options: &PgConnectOptions) -> bool {
    if options.get_socket().is_some() {
        return true;
    }
    let host = options.get_host();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with('/')
        || bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Applies the TLS policy to options parsed from `url`.
///
/// - No `sslmode` written: `prefer` on this machine, `verify-full` anywhere else.
/// - `prefer` or `allow` for another machine: refused, since either may fall back to clear text.
/// - `require` with an `sslrootcert`: checked as `verify-ca`, as libpq does.
/// - An `sslrootcert` must be a readable file holding at least one PEM certificate.
pub(super) fn apply(url: &str, options: PgConnectOptions) -> Result<PgConnectOptions, StoreError> {
    let written = Written::read(url);
    let local = is_local(&options);
    let mode = match &written.mode {
        Some(_) => options.get_ssl_mode(),
        None if local => PgSslMode::Prefer,
        None => PgSslMode::VerifyFull,
    };
    if !local && matches!(mode, PgSslMode::Prefer | PgSslMode::Allow) {
        return Err(StoreError::InsecureDatabase(format!(
            "{}: sslmode={} may send audit records to {} in clear text; use sslmode=verify-full \
             (or require, verify-ca), or write sslmode=disable to accept clear text",
            redact_url(url),
            mode_name(mode),
            options.get_host()
        )));
    }
    let mode = match (mode, &written.root_cert) {
        (PgSslMode::Require, Some(_)) => PgSslMode::VerifyCa,
        (mode, _) => mode,
    };
    let mut options = options.ssl_mode(mode);
    if let Some(path) = &written.root_cert {
        check_root_cert(path)?;
        options = options.ssl_root_cert(path);
    }
    Ok(options)
}

/// Refuses a missing, unreadable or empty CA file now, with its name, rather than at the first
/// connection with a TLS library's words.
fn check_root_cert(path: &Path) -> Result<(), StoreError> {
    let bad = |why: String| {
        StoreError::InsecureDatabase(format!("sslrootcert {}: {why}", path.display()))
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(())
}

/// The mode as libpq spells it.
pub(super) fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// Maps a connection error, explaining it when it is a failed TLS handshake.
pub(super) fn explained(options: &PgConnectOptions) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| explain(&e, options).unwrap_or(StoreError::Database(e))
}

/// Turns a failed TLS handshake into words an operator can act on; `None` if `error` is not one.
pub(super) fn explain(error: &sqlx::Error, options: &PgConnectOptions) -> Option<StoreError> {
    // A refused certificate surfaces from inside the handshake's I/O, other TLS faults as `Tls`.
    let (cause, rustls) = match error {
        sqlx::Error::Tls(cause) => (Some(&**cause), cause.downcast_ref::<rustls::Error>()),
        sqlx::Error::Io(io) => (None, io.get_ref().and_then(|e| e.downcast_ref())),
        _ => return None,
    };
    let host = options.get_host();
    let detail = match (rustls, cause) {
        (None, None) => return None,
        (Some(rustls), _) => rustls_detail(rustls, host),
        (None, Some(cause)) if cause.to_string().contains("does not support TLS") => {
            "the server does not offer TLS (ssl = off): turn it on, or write sslmode=disable \
             to connect in clear text"
                .to_owned()
        }
        (None, Some(cause)) => format!("the TLS handshake failed: {cause}"),
    };
    Some(StoreError::Tls {
        target: format!(
            "{host}:{} (sslmode={})",
            options.get_port(),
            mode_name(options.get_ssl_mode())
        ),
        detail,
    })
}

/// What a TLS library error means for the operator.
fn rustls_detail(error: &rustls::Error, host: &str) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
                "the server's certificate is not signed by a CA this service trusts: give the CA \
                 that signed it as sslrootcert (without one, only public CAs are trusted)"
                    .to_owned()
            }
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. } => format!(
                "the server's certificate does not name the host {host}: connect by a name the \
                 certificate carries, or use sslmode=verify-ca to check the CA alone"
            ),
            rustls::CertificateError::Expired
            | rustls::CertificateError::ExpiredContext { .. }
            | rustls::CertificateError::NotValidYet
            | rustls::CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is outside its validity period".to_owned()
            }
            other => format!("the server's certificate was refused: {other:?}"),
        },
        other => format!("the TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn applied(url: &str) -> Result<PgConnectOptions, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::Database)?;
        apply(url, options)
    }

    fn mode(url: &str) -> PgSslMode {
        match applied(url) {
            Ok(o) => o.get_ssl_mode(),
            Err(e) => panic!("{url}: {e}"),
        }
    }

    #[test]
    fn a_remote_host_gets_verify_full_unless_told_otherwise() {
        assert!(matches!(
            mode("postgres://u@db.example.com/audit"),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode("postgres://u@10.0.0.7:5433/audit?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@db.example.com/audit?sslmode=verify-ca"),
            PgSslMode::VerifyCa
        ));
        assert!(matches!(
            mode("postgres://u@db.example.com/audit?sslmode=disable"),
            PgSslMode::Disable
        ));
    }

    #[test]
    fn a_remote_host_may_not_fall_back_to_clear_text() {
        for m in ["prefer", "allow"] {
            let url = format!("postgres://u:hunter2@db.example.com/audit?sslmode={m}");
            let e = applied(&url)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(&format!("sslmode={m}")), "{e}");
            assert!(e.contains("sslmode=disable"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn this_machine_prefers_tls_and_may_use_any_mode() {
        for host in ["localhost", "127.0.0.1", "127.8.9.10", "[::1]"] {
            let url = format!("postgres://u@{host}:5432/audit");
            assert!(matches!(mode(&url), PgSslMode::Prefer), "{url}");
            assert!(matches!(
                mode(&format!("{url}?sslmode=allow")),
                PgSslMode::Allow
            ));
        }
    }

    #[test]
    fn require_with_a_root_certificate_checks_the_ca() {
        let dir = std::env::temp_dir().join(format!("ll-pgtls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let url = format!(
            "postgres://u@db.example.com/audit?sslmode=require&sslrootcert={}",
            ca.display()
        );
        assert!(matches!(mode(&url), PgSslMode::VerifyCa));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_or_empty_root_certificate_is_named() {
        let e = applied("postgres://u@db.example.com/a?sslrootcert=/nonexistent/ca.pem")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let empty = std::env::temp_dir().join(format!("ll-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate").expect("write");
        let url = format!(
            "postgres://u@db.example.com/a?sslrootcert={}",
            empty.display()
        );
        let e = applied(&url)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no PEM certificate"), "{e}");
        let _ = std::fs::remove_file(&empty);
    }
}
