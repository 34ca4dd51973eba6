//! Bounded trust in cached keys: past `max_key_age` since the last successful fetch a key set
//! no longer verifies tokens, `/readyz` is 503 and the age gauge shows why.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::{TempDir, TestApp, both_backends, spawn_app_with, with_api};

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

/// Small enough for a fast test, large enough for a young-set request to land inside it.
const MAX_AGE: Duration = Duration::from_secs(2);

/// `GET /readyz`: status and body.
async fn readyz(app: &TestApp) -> (u16, String) {
    let r = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.text().await.expect("text"))
}

/// The key-set age gauge of the test issuer, in seconds (`None`: no line for it).
async fn key_set_age(app: &TestApp) -> Option<f64> {
    let text = app.metrics().await;
    let prefix = format!(
        "logout_ledger_key_set_age_seconds{{issuer=\"{}\"}} ",
        app.op.issuer()
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().expect("a number"))
}

/// Polls `/readyz` until it answers `want`, for at most `within`.
async fn wait_readyz(app: &TestApp, want: u16, within: Duration) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let got = readyz(app).await;
        if got.0 == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

both_backends!(a_key_set_older_than_the_max_age_is_refused_until_the_issuer_answers);
async fn a_key_set_older_than_the_max_age_is_refused_until_the_issuer_answers() {
    let app = spawn_app_with(|s| {
        s.keys.max_key_age = MAX_AGE;
        s.keys.refresh_cooldown = Duration::ZERO;
        with_api(s); // /metrics lives on the API listener
    })
    .await;
    // The set was fetched before the app was ready, so it is at most this old from here on.
    let loaded_by = Instant::now();
    app.op.set_available(false);

    // Young: the cached set keeps serving through the outage.
    let a = app.post_token(&app.valid_token()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let young = key_set_age(&app).await.expect("age line");
    assert!(young < MAX_AGE.as_secs_f64(), "young set, age {young}");

    // Past the max age: refused with a record, not ready, the gauge shows the age.
    tokio::time::sleep_until(loaded_by + MAX_AGE + Duration::from_millis(200)).await;
    let a = app.post_token(&app.valid_token()).await;
    assert_eq!(
        (a.status, a.code()),
        (503, "keys_unavailable"),
        "{:?}",
        a.body
    );
    assert!(a.header("retry-after").is_some());
    let record = app.last_record().await;
    assert_eq!(record.reason.as_deref(), Some("keys_unavailable"));
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("keys: unavailable"), "{body}");
    let old = key_set_age(&app).await.expect("age line");
    assert!(old >= MAX_AGE.as_secs_f64(), "stale set, age {old}");

    // The issuer answers again: the background refresh brings readiness back, tokens verify.
    app.op.set_available(true);
    let (status, body) = wait_readyz(&app, 200, Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{body}");
    let a = app.post_token(&app.valid_token()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let fresh = key_set_age(&app).await.expect("age line");
    assert!(fresh < MAX_AGE.as_secs_f64(), "refetched set, age {fresh}");
}

both_backends!(a_stale_set_is_refetched_by_the_token_that_needs_it);
async fn a_stale_set_is_refetched_by_the_token_that_needs_it() {
    let app = spawn_app_with(|s| {
        s.keys.max_key_age = MAX_AGE;
        s.keys.refresh_cooldown = Duration::ZERO;
    })
    .await;
    let loaded_by = Instant::now();
    app.op.set_available(false);
    tokio::time::sleep_until(loaded_by + MAX_AGE + Duration::from_millis(200)).await;
    let a = app.post_token(&app.valid_token()).await;
    assert_eq!(a.code(), "keys_unavailable", "{:?}", a.body);
    // Back, and before the background loop's next try: the lookup itself refetches.
    app.op.set_available(true);
    let a = app.post_token(&app.valid_token()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(app.last_record().await.reason, None);
}

both_backends!(a_reachable_issuer_s_set_never_ages_out);
async fn a_reachable_issuer_s_set_never_ages_out() {
    let app = spawn_app_with(|s| {
        s.keys.max_key_age = MAX_AGE;
        // The cooldown must stay under half the max age (else a refresh waits for it).
        s.keys.refresh_cooldown = Duration::from_millis(500);
    })
    .await;
    // Longer than the max age: refreshes scheduled by half of it keep the set young.
    tokio::time::sleep(MAX_AGE + Duration::from_millis(700)).await;
    let a = app.post_token(&app.valid_token()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(readyz(&app).await.0, 200);
}

#[test]
fn a_zero_max_key_age_is_refused() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.0.join("x.db").display());
    let toml = dir.0.join("c.toml");
    std::fs::write(
        &toml,
        "max_key_age = \"0\"\n[[issuers]]\nissuer = \"https://op.example/\"\naudiences = [\"a\"]\n",
    )
    .expect("write config");
    let toml = toml.display().to_string();
    let issuer = ["--issuer", "https://op.example/", "--audience", "a"];
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["--max-key-age", "0"], None),
        (&["--max-key-age", "0h"], None),
        (&[], Some("0s")),
        (&["--config", &toml], None),
    ];
    for (args, env) in cases {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve");
        if !args.contains(&"--config") {
            cmd.args(issuer);
        }
        cmd.args(args)
            .args(["--database", &db, "--listen", "127.0.0.1:0"])
            .env_remove("LOGOUT_LEDGER_CLIENT_SECRET")
            .env_remove("LOGOUT_LEDGER_MAX_KEY_AGE");
        if let Some(v) = env {
            cmd.env("LOGOUT_LEDGER_MAX_KEY_AGE", v);
        }
        let out = run_bounded(cmd);
        assert!(!out.status.success(), "{args:?} {env:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid configuration: --max-key-age"),
            "{args:?} {env:?}: {stderr}"
        );
    }
}

/// Runs `cmd` for at most 10 s (a wrongly accepted setting would start the server).
fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().expect("output")
}
