//! TLS to PostgreSQL, against a real server that takes TLS connections only (a cluster of its
//! own per test, from scripts/pg-tls-cluster.sh: a CA made for the test signs a certificate for
//! `localhost`; clear text over TCP is refused by the server itself).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use logout_ledger::clock::SystemClock;
use logout_ledger::local_issuer::LocalIssuer;
use logout_ledger::startup::Application;
use sqlx::Connection;

use crate::helpers::{
    AUDIENCE, TempDir, TestDb, post_raw, records_in, settings, spawn_replica, start, urlencode,
};

/// A running TLS-only cluster, stopped and removed when dropped.
struct TlsCluster {
    dir: PathBuf,
    port: u16,
}

impl TlsCluster {
    /// Starts one, or says why not: `None` skips the test unless PostgreSQL is required (CI).
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("ll-pgtls-{}-{port}", std::process::id()));
        let out = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/pg-tls-cluster.sh"
        ))
        .args(["start", &dir.to_string_lossy(), &port.to_string()])
        .output()
        .expect("run scripts/pg-tls-cluster.sh");
        if out.status.success() {
            return Some(Self { dir, port });
        }
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var("LOGOUT_LEDGER_REQUIRE_POSTGRES").is_err(),
            "cannot start a TLS PostgreSQL cluster: {why}"
        );
        eprintln!("NOTE: no TLS PostgreSQL cluster ({why}); test skipped");
        None
    }

    fn ca(&self, name: &str) -> String {
        self.dir
            .join("tls")
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    /// A URL on this cluster: `host`, then the query.
    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres{query}", self.port)
    }

    /// A URL on this cluster with `sslmode` and a CA file from the cluster's `tls` directory.
    fn checked(&self, host: &str, mode: &str, ca: &str) -> String {
        self.url(
            host,
            &format!("?sslmode={mode}&sslrootcert={}", self.ca(ca)),
        )
    }

    /// The URL that checks everything: the right name, the right CA.
    fn verify_full(&self) -> String {
        self.checked("localhost", "verify-full", "ca.pem")
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/pg-tls-cluster.sh"
        ))
        .args(["stop", &self.dir.to_string_lossy()])
        .output();
    }
}

/// What `serve` would print when the store cannot be opened at `database`.
async fn startup_error(database: String) -> String {
    let op = LocalIssuer::start().await.expect("issuer starts");
    let dir = TempDir::new();
    let db = TestDb::new(&dir).await;
    let mut s = settings(&op, &db);
    s.database = database;
    match Application::build(s, Arc::new(SystemClock)).await {
        Ok(_) => panic!("the service started"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn verify_full_connects_and_every_connection_is_encrypted() {
    let Some(cluster) = TlsCluster::start() else {
        return;
    };
    let url = cluster.verify_full();
    let op = Arc::new(LocalIssuer::start().await.expect("issuer starts"));
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::new(&dir).await);
    let mut s = settings(&op, &db);
    s.database = url.clone();
    let app = start(op, dir, db, s, true).await;

    let answer = app.post_token(&app.valid_token()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let records = records_in(&url).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome.as_deref(), Some("accepted"));

    let mut admin = sqlx::PgConnection::connect(&url)
        .await
        .expect("admin over TLS");
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'logout-ledger'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("pg_stat_ssl");
    assert!(connections > 0, "the service holds no connection");
    assert_eq!(encrypted, connections, "a connection is in clear text");
    app.stop().await;
}

#[tokio::test]
async fn this_machine_gets_tls_by_default_when_the_server_offers_it() {
    let Some(cluster) = TlsCluster::start() else {
        return;
    };
    // No sslmode: `prefer` on loopback. The server refuses clear text, so a stored record
    // proves the connection was encrypted.
    let url = cluster.url("127.0.0.1", "");
    let op = Arc::new(LocalIssuer::start().await.expect("issuer starts"));
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::new(&dir).await);
    let mut s = settings(&op, &db);
    s.database = url.clone();
    let app = start(op, dir, db, s, true).await;
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    assert_eq!(records_in(&cluster.verify_full()).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_host_name_is_refused_with_a_clear_message() {
    let Some(cluster) = TlsCluster::start() else {
        return;
    };
    // The certificate names `localhost` only.
    let url = cluster.checked("127.0.0.1", "verify-full", "ca.pem");
    let e = startup_error(url).await;
    assert!(e.contains("does not name the host 127.0.0.1"), "{e}");
    assert!(e.contains("sslmode=verify-full"), "{e}");
    assert!(
        e.contains("verify-ca"),
        "the message offers no way out: {e}"
    );

    // verify-ca checks the CA alone, so the same address connects.
    let url = cluster.checked("127.0.0.1", "verify-ca", "ca.pem");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("verify-ca");
    let _ = sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .expect("query");
}

#[tokio::test]
async fn an_unknown_ca_is_refused_with_a_clear_message() {
    let Some(cluster) = TlsCluster::start() else {
        return;
    };
    let url = cluster.checked("localhost", "verify-full", "other-ca.pem");
    let e = startup_error(url).await;
    assert!(e.contains("not signed by a CA this service trusts"), "{e}");
    assert!(e.contains("sslrootcert"), "{e}");
    // Without any sslrootcert only public CAs are trusted: the test CA is not one.
    let e = startup_error(cluster.url("localhost", "?sslmode=verify-full")).await;
    assert!(e.contains("not signed by a CA this service trusts"), "{e}");
}

#[tokio::test]
async fn a_remote_host_that_may_fall_back_to_clear_text_is_refused_before_connecting() {
    // `.invalid` never resolves: the refusal must come before any connection is tried.
    let e = startup_error("postgres://ledger:hunter2@db.invalid/audit?sslmode=prefer".into()).await;
    assert!(e.contains("sslmode=prefer"), "{e}");
    assert!(e.contains("write sslmode=disable"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn the_configuration_file_sets_sslmode_and_sslrootcert() {
    let Some(cluster) = TlsCluster::start() else {
        return;
    };
    let op = LocalIssuer::start().await.expect("issuer starts");
    let dir = TempDir::new();
    let config = dir.0.join("ledger.toml");
    std::fs::write(
        &config,
        format!(
            "database_sslmode = \"verify-full\"\ndatabase_sslrootcert = \"{}\"\n",
            cluster.ca("ca.pem")
        ),
    )
    .expect("write config");
    // The URL says nothing of TLS; the file's settings make it verify-full with the test CA.
    let url = cluster.url("localhost", "");
    let replica = spawn_replica(&op, &url, &["--config", &config.to_string_lossy()]).await;
    let token = op
        .sign("rsa-1", "RS256", &op.claims(AUDIENCE))
        .expect("sign");
    let answer = post_raw(
        &reqwest::Client::new(),
        &format!("{}/backchannel-logout", replica.base),
        "application/x-www-form-urlencoded",
        format!("logout_token={}", urlencode(&token)).into(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(records_in(&cluster.verify_full()).await.len(), 1);
}
