//! The console's server side (issue 14): its files served under `/console/` with a strict
//! Content-Security-Policy and nothing inline, and the API it reads beside the records: the
//! ledger's state, a record's proof as the store holds it (an altered record's proof fails when
//! checked elsewhere), and delivery retries.

use std::sync::Arc;
use std::time::Duration;

use logout_ledger::ledger::checkpoint::CheckpointSettings;
use logout_ledger::ledger::prove::verify_proof_json;
use logout_ledger::tlog::NoteSigner;
use logout_ledger::tlog::note::generate_pkcs8;
use serde_json::{Value, json};

use crate::helpers::{API_TOKEN, TestApp, both_backends, spawn_app_with, with_api};
use crate::ledger::tamper;

/// A receiver with the query API and a checkpoint signer held in memory.
pub(crate) async fn app_with_checkpoints() -> (TestApp, Arc<NoteSigner>) {
    app_with_checkpoints_and(|_| {}).await
}

/// [`app_with_checkpoints`], its settings changed by `change` first.
pub(crate) async fn app_with_checkpoints_and(
    change: impl FnOnce(&mut logout_ledger::config::Settings),
) -> (TestApp, Arc<NoteSigner>) {
    let signer = Arc::new(
        NoteSigner::new(
            "console.logout-ledger.test",
            &generate_pkcs8().expect("key"),
        )
        .expect("signer"),
    );
    let s = Arc::clone(&signer);
    let app = spawn_app_with(move |settings| {
        with_api(settings);
        settings.checkpoints = Some(CheckpointSettings {
            signer: s,
            interval: Duration::from_secs(3600),
            dir: None,
        });
        change(settings);
    })
    .await;
    (app, signer)
}

both_backends!(the_console_reads_the_ledger_and_a_proof_as_stored);

async fn the_console_reads_the_ledger_and_a_proof_as_stored() {
    let (app, signer) = app_with_checkpoints().await;
    for _ in 0..3 {
        assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    }
    let id = app.last_record().await.id;
    let ledger = app.api_get("/api/v1/ledger").await;
    assert_eq!(ledger.status, 200, "{:?}", ledger.body);
    assert_eq!(ledger.body["checkpoint"], Value::Null);
    assert_eq!(ledger.body["log_key"], json!(signer.verifier_key()));
    assert!(ledger.body["head"]["id"].as_i64() >= Some(id));
    assert_eq!(
        ledger.body["head"]["entry_hash"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(ledger.body["delivery_targets"], json!([]));
    assert_eq!(app.api_get_as("/api/v1/ledger", None).await.status, 401);
    let early = app.api_get(&format!("/api/v1/events/{id}/proof")).await;
    assert_eq!(early.status, 409);
    assert_eq!(early.body["error"], "not_checkpointed");

    // A clean stop signs a checkpoint over everything.
    let app = app.restart(|_| {}).await;
    let ledger = app.api_get("/api/v1/ledger").await;
    let checkpoint = &ledger.body["checkpoint"];
    assert!(checkpoint["tree_size"].as_i64() > Some(id), "{checkpoint}");
    assert!(
        checkpoint["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("console.logout-ledger.test\n"))
    );
    assert!(checkpoint["age_seconds"].as_i64().is_some());
    let proof = proof_text(&app, id).await;
    let checked = verify_proof_json(&proof, &signer.verifier());
    assert!(
        checked.is_ok(),
        "a genuine record's proof holds: {checked:?}"
    );
    assert_eq!(app.api_get("/api/v1/events/999999/proof").await.status, 409);

    // Someone with database access rewrites the record: the proof is still handed out, as
    // stored, and fails wherever it is checked.
    tamper(
        &app.db,
        &[
            "DROP TRIGGER audit_events_no_update",
            &format!("UPDATE audit_events SET sub = 'auth0|mallory' WHERE id = {id}"),
        ],
    )
    .await;
    let altered = proof_text(&app, id).await;
    let failure = verify_proof_json(&altered, &signer.verifier()).expect_err("altered");
    assert!(failure.to_string().contains("altered"), "{failure}");
    app.stop().await;
}

async fn proof_text(app: &TestApp, id: i64) -> String {
    let r = app
        .client
        .get(app.api_url(&format!("/api/v1/events/{id}/proof")))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("proof");
    assert_eq!(r.status(), 200);
    r.text().await.expect("body")
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_nothing_inline() {
    let app = spawn_app_with(with_api).await;
    let page = app
        .client
        .get(app.api_url("/console/"))
        .send()
        .await
        .expect("console");
    assert_eq!(page.status(), 200);
    let h = |n: &str| {
        page.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    assert!(h("content-type").starts_with("text/html"));
    let csp = h("content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(h("x-frame-options"), "DENY");
    assert_eq!(h("x-content-type-options"), "nosniff");
    let html = page.text().await.expect("html");
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(app.api_url("/console"))
        .send()
        .await
        .expect("redirect");
    assert_eq!(redirect.status(), 308);
    let missing = app
        .client
        .get(app.api_url("/console/no-such-file.js"))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), 404);

    // Every file the binary serves, checked for what the policy would block anyway.
    let mut total = 0;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    for path in files(&root) {
        let rel = path.strip_prefix(&root).expect("under console");
        let url = app.api_url(&format!("/console/{}", rel.display()));
        let r = app.client.get(&url).send().await.expect("file");
        assert_eq!(r.status(), 200, "{url}");
        let bytes = r.bytes().await.expect("bytes");
        assert_eq!(
            bytes.len() as u64,
            std::fs::metadata(&path).expect("meta").len()
        );
        total += bytes.len();
        let is_html = rel.extension().is_some_and(|e| e == "html");
        if is_html {
            let text = String::from_utf8_lossy(&bytes).to_lowercase();
            assert!(!text.contains(" style="), "{}: inline style", rel.display());
            assert!(!text.contains(" onclick=") && !text.contains(" onload="));
            for tag in text.split("<script").skip(1) {
                let head = tag.split('>').next().unwrap_or("");
                assert!(head.contains("src="), "{}: inline script", rel.display());
            }
        }
    }
    assert!(total < 300 * 1024, "the console's files are {total} bytes");
    assert!(html.contains("<html"), "an HTML page");
    app.stop().await;
}

/// Every file under `dir` the binary embeds (not the console's own tests).
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "test" || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn a_retry_through_the_api_is_refused_without_a_token_or_a_match() {
    let app = spawn_app_with(with_api).await;
    let post = |body: Value, token: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.api_url("/api/v1/deliveries/retry"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let r = post(json!({"target": "web-app", "dead": true}), None)
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = post(json!({"target": "web-app"}), Some(API_TOKEN))
        .await
        .expect("post");
    assert_eq!(r.status(), 400, "neither event_id nor dead");
    let r = post(
        json!({"target": "web-app", "dead": true, "extra": 1}),
        Some(API_TOKEN),
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 400, "unknown member");
    let r = post(json!({"target": "web-app", "dead": true}), Some(API_TOKEN))
        .await
        .expect("post");
    assert_eq!(r.status(), 404, "nothing to retry");
    let records = app.all_records().await;
    assert!(
        records
            .iter()
            .any(|r| r.action.as_deref() == Some("delivery_retry")),
        "the request is chained, naming who asked"
    );
    app.stop().await;
}

/// The in-browser proof checker (`console/js/proof.js`) against real `prove` documents and
/// altered ones, under Node's test runner; skipped without Node unless the browser tests are
/// required (`LOGOUT_LEDGER_REQUIRE_BROWSER`, set by `.ci/run`).
#[tokio::test]
async fn the_console_proof_checker_passes_its_node_tests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = tokio::process::Command::new("node")
        .args(["--test", "console/test/"])
        .current_dir(root)
        .output()
        .await;
    let required =
        std::env::var("LOGOUT_LEDGER_REQUIRE_BROWSER").is_ok_and(|v| !v.is_empty() && v != "0");
    match run {
        Err(e) if !required => {
            eprintln!("NOTE: node not found ({e}): the proof checker's tests did not run")
        }
        Err(e) => panic!("node is required for the console's tests: {e}"),
        Ok(out) => assert!(
            out.status.success(),
            "node --test console/test/ failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
