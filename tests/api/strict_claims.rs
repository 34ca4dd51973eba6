//! Strict claim rules (issue 10): `nbf`, empty `sub`/`sid`, `key_ops`, repeated JSON member
//! names, over-long identifying claims, the refresh cooldown floor and the `Ed25519` alg name.

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use logout_ledger::clock::{Clock, SystemClock};

use std::sync::Arc;
use std::time::Duration;

use logout_ledger::local_issuer::LocalIssuer;

use crate::helpers::{
    TempDir, TestApp, TestDb, both_backends, settings, spawn_app, spawn_app_with, start, with_api,
};

fn now() -> i64 {
    SystemClock.now_secs()
}

fn with(app: &TestApp, f: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut c = app.claims();
    f(&mut c);
    app.sign(&c)
}

async fn assert_code(app: &TestApp, token: &str, code: &str) {
    let a = app.post_token(token).await;
    assert_eq!((a.status, a.code()), (400, code), "{:?}", a.body);
    let r = app.last_record().await;
    assert_eq!(r.reason.as_deref(), Some(code), "{:?}", r.reason_detail);
    assert_eq!(r.claims_verified, Some(false));
}

async fn assert_accepted(app: &TestApp, token: &str) {
    let a = app.post_token(token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = app.last_record().await;
    assert_eq!(r.outcome.as_deref(), Some("accepted"));
    assert_eq!(r.claims_verified, Some(true));
}

both_backends!(strict_nbf_is_honoured_with_the_leeway);
async fn strict_nbf_is_honoured_with_the_leeway() {
    let app = spawn_app_with(with_api).await; // /metrics lives on the API listener
    let t = now();
    let early = with(&app, |c| {
        c.insert("nbf".into(), json!(t + 120));
    });
    assert_code(&app, &early, "not_yet_valid").await;
    let detail = app.last_record().await.reason_detail.unwrap_or_default();
    assert!(detail.contains("nbf"), "{detail}");
    let within = with(&app, |c| {
        c.insert("nbf".into(), json!(t + 30));
    });
    assert_accepted(&app, &within).await;
    let mistyped = with(&app, |c| {
        c.insert("nbf".into(), json!("soon"));
    });
    assert_code(&app, &mistyped, "malformed_token").await;
    let text = app.metrics().await;
    assert!(
        text.lines()
            .any(|l| l == r#"logout_ledger_rejections_total{reason="not_yet_valid"} 1"#),
        "not_yet_valid counted once:\n{text}"
    );
}

both_backends!(strict_empty_sub_or_sid_counts_as_absent);
async fn strict_empty_sub_or_sid_counts_as_absent() {
    let app = spawn_app().await;
    let empty_sub = with(&app, |c| {
        c.insert("sub".into(), json!(""));
        c.remove("sid");
    });
    assert_code(&app, &empty_sub, "missing_sub_and_sid").await;
    let both_empty = with(&app, |c| {
        c.insert("sub".into(), json!(""));
        c.insert("sid".into(), json!(""));
    });
    assert_code(&app, &both_empty, "missing_sub_and_sid").await;
    let empty_sid = with(&app, |c| {
        c.insert("sid".into(), json!(""));
    });
    assert_accepted(&app, &empty_sid).await;
    let r = app.last_record().await;
    assert_eq!(r.sid, None, "an empty sid is not stored");
    assert_eq!(r.sub.as_deref(), Some("auth0|user-1"));
    let empty_sub_with_sid = with(&app, |c| {
        c.insert("sub".into(), json!(""));
        c.insert("sid".into(), json!("sid-kept"));
    });
    assert_accepted(&app, &empty_sub_with_sid).await;
    let r = app.last_record().await;
    assert_eq!((r.sub, r.sid.as_deref()), (None, Some("sid-kept")));
}

/// A receiver whose issuer publishes `rsa-1` with this `key_ops` from the first fetch on.
async fn spawn_with_key_ops(ops: &[&str]) -> TestApp {
    let op = Arc::new(LocalIssuer::start().await.expect("issuer starts"));
    op.set_key_ops("rsa-1", Some(ops)).expect("key_ops");
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::new(&dir).await);
    let mut s = settings(&op, &db);
    s.keys.refresh_cooldown = Duration::from_secs(1);
    start(op, dir, db, s, true).await
}

both_backends!(strict_a_key_whose_key_ops_lack_verify_is_not_used);
async fn strict_a_key_whose_key_ops_lack_verify_is_not_used() {
    let app = spawn_with_key_ops(&["sign"]).await;
    assert!(
        app.op.jwks().to_string().contains(r#""key_ops":["sign"]"#),
        "the key set says so"
    );
    // Past the cooldown, so the unknown kid makes a fresh fetch that still lacks the key.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_code(&app, &app.valid_token(), "unknown_key").await;

    let app = spawn_with_key_ops(&["sign", "verify"]).await;
    assert_accepted(&app, &app.valid_token()).await;
}

both_backends!(strict_repeated_member_names_are_malformed);
async fn strict_repeated_member_names_are_malformed() {
    let app = spawn_app().await;
    let claims = Value::Object(app.claims()).to_string();
    // The signature is a valid RS256 one: only the repeated name can refuse it.
    let control = app
        .op
        .sign_raw_json(
            "rsa-1",
            "RS256",
            r#"{"alg":"RS256","kid":"rsa-1"}"#,
            &claims,
        )
        .expect("sign");
    assert_accepted(&app, &control).await;
    let claims = Value::Object(app.claims()).to_string();
    let header = r#"{"alg":"none","alg":"RS256","kid":"rsa-1"}"#;
    let token = app
        .op
        .sign_raw_json("rsa-1", "RS256", header, &claims)
        .expect("sign");
    assert_code(&app, &token, "malformed_token").await;
    let detail = app.last_record().await.reason_detail.unwrap_or_default();
    assert!(detail.contains("\"alg\""), "{detail}");

    let mut c = app.claims();
    c.remove("jti");
    let body = Value::Object(c).to_string();
    let doubled = format!(r#"{{"jti":"first","jti":"second",{}"#, &body[1..]);
    let token = app
        .op
        .sign_raw_json(
            "rsa-1",
            "RS256",
            r#"{"alg":"RS256","kid":"rsa-1"}"#,
            &doubled,
        )
        .expect("sign");
    assert_code(&app, &token, "malformed_token").await;
    assert_eq!(
        app.last_record().await.jti,
        None,
        "no claim of a malformed token"
    );
}

both_backends!(strict_over_long_identifiers_are_refused_not_cut);
async fn strict_over_long_identifiers_are_refused_not_cut() {
    let app = spawn_app().await;
    let longest = "j".repeat(1024);
    let token = with(&app, |c| {
        c.insert("jti".into(), json!(longest));
    });
    assert_accepted(&app, &token).await;
    assert_eq!(app.last_record().await.jti.map(|j| j.len()), Some(1024));
    // Two jtis equal in their first 1024 bytes: neither is accepted, neither is a replay.
    for tail in ["a", "b"] {
        let token = with(&app, |c| {
            c.insert("jti".into(), json!(format!("{longest}{tail}")));
        });
        assert_code(&app, &token, "malformed_token").await;
    }
    for name in ["sub", "sid"] {
        let token = with(&app, |c| {
            c.insert(name.into(), json!("s".repeat(1025)));
        });
        assert_code(&app, &token, "malformed_token").await;
        let detail = app.last_record().await.reason_detail.unwrap_or_default();
        assert!(detail.starts_with(name), "{detail}");
    }
    let fetches = app.op.jwks_fetches() + app.op.discovery_fetches();
    let iss = format!("{}{}", app.op.issuer(), "x".repeat(1100));
    let token = with(&app, |c| {
        c.insert("iss".into(), json!(iss));
    });
    assert_code(&app, &token, "malformed_token").await;
    let r = app.last_record().await;
    assert!(
        r.reason_detail.unwrap_or_default().starts_with("iss"),
        "refused for its length, not as an unknown issuer"
    );
    assert_eq!(
        app.op.jwks_fetches() + app.op.discovery_fetches(),
        fetches,
        "no key fetch for an over-long iss"
    );
}

both_backends!(strict_ed25519_is_accepted_beside_eddsa);
async fn strict_ed25519_is_accepted_beside_eddsa() {
    let app = spawn_app_with(|s| s.issuers[0].algorithms = vec![Algorithm::EdDSA]).await;
    for alg in ["Ed25519", "EdDSA"] {
        let token = app.op.sign("ed-1", alg, &app.claims()).expect("sign");
        assert_accepted(&app, &token).await;
        assert_eq!(app.last_record().await.alg.as_deref(), Some(alg));
    }
    // The fully-specified name still needs an Ed25519 key.
    let token = app
        .op
        .sign("rsa-1", "Ed25519", &app.claims())
        .expect("sign");
    assert_code(&app, &token, "unsupported_alg").await;
    let app = spawn_app().await;
    let token = app.op.sign("ed-1", "Ed25519", &app.claims()).expect("sign");
    assert_code(&app, &token, "unsupported_alg").await;
}

#[test]
fn strict_a_zero_refresh_cooldown_is_refused_naming_the_flag() {
    let dir = TempDir::new();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logout-ledger"))
        .args([
            "serve",
            "--issuer",
            "https://op.example/",
            "--audience",
            "app",
            "--jwks-refresh-cooldown",
            "0",
            "--database",
            &format!("sqlite://{}", dir.0.join("never.db").display()),
        ])
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--jwks-refresh-cooldown"), "{err}");
    assert!(err.contains("at least 1"), "{err}");
    assert!(
        !dir.0.join("never.db").exists(),
        "refused before opening the store"
    );
}

#[test]
fn strict_the_ed25519_name_is_a_valid_algorithm_setting() {
    let algs = logout_ledger::config::parse_algorithms("--algorithms", &["Ed25519".into()])
        .expect("Ed25519 is accepted");
    assert_eq!(algs, vec![Algorithm::EdDSA]);
}
