//! The binary: start-up errors name the setting, SIGTERM drains and exits 0, `query` prints.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{AUDIENCE, TempDir, both_backends, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

#[test]
fn invalid_configuration_stops_start_up_naming_the_setting() {
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.0.join("x.db").display());
    let cases: [(&[&str], &str); 6] = [
        (
            &["--issuer", "http://127.0.0.1:9/", "--audience", "a"],
            "issuer",
        ),
        (&["--issuer", "https://op.example/"], "audience"),
        (
            &[
                "--issuer",
                "https://op.example/",
                "--audience",
                "a",
                "--algorithms",
                "RS256,none",
            ],
            "algorithms",
        ),
        (
            &[
                "--issuer",
                "https://op.example/",
                "--audience",
                "a",
                "--algorithms",
                "HS256",
            ],
            "algorithms",
        ),
        (
            &[
                "--issuer",
                "https://op.example/",
                "--audience",
                "a",
                "--retention-days",
                "30",
            ],
            "--retention-days",
        ),
        (
            &[
                "--issuer",
                "https://op.example/",
                "--audience",
                "a",
                "--signing-key-file",
                "/nonexistent.pem",
            ],
            "--signing-key-file",
        ),
    ];
    for (args, setting) in cases {
        let out = Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--database", &db, "--listen", "127.0.0.1:0"])
            .env_remove("LOGOUT_LEDGER_CLIENT_SECRET")
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("invalid configuration: {setting}")),
            "{args:?}: {stderr}"
        );
    }
}

both_backends!(sigterm_drains_and_exits_zero_within_ten_seconds);
async fn sigterm_drains_and_exits_zero_within_ten_seconds() {
    let op = logout_ledger::local_issuer::LocalIssuer::start()
        .await
        .expect("issuer");
    let dir = TempDir::new();
    let db = crate::helpers::TestDb::new(&dir).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--issuer",
            op.issuer(),
            "--audience",
            AUDIENCE,
            "--allow-insecure-http",
        ])
        .args([
            "--database",
            &db.url,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "binary became ready");
    let token = op
        .sign("rsa-1", "RS256", &op.claims(AUDIENCE))
        .expect("sign");
    let r = client
        .post(format!("{base}/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={token}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let pid = child.id().expect("pid");
    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(crate::helpers::records_in(&db.url).await.len(), 1);
}

both_backends!(query_prints_filtered_records_as_json_and_csv);
async fn query_prints_filtered_records_as_json_and_csv() {
    let app = spawn_app().await;
    let mut c = app.claims();
    c.insert("sub".into(), serde_json::json!("auth0|alice"));
    c.insert(
        "session_metadata".into(),
        serde_json::json!({"org_slug": "=cmd|' /C calc'!A0"}),
    );
    assert_eq!(app.post_token(&app.sign(&c)).await.status, 200);
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    assert_eq!(app.post_token("junk").await.status, 400);
    let store = std::sync::Arc::clone(&app.db);
    let db = store.url.clone();
    let _keep_dir = std::sync::Arc::clone(&app.dir);
    app.stop().await;

    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("query")
            .args(["--database", &db])
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let json: serde_json::Value =
        serde_json::from_str(&run(&["--sub", "auth0|alice", "--format", "json"])).expect("json");
    let rows = json.as_array().expect("array");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["sub"], "auth0|alice");
    assert_eq!(rows[0]["outcome"], "accepted");
    assert_eq!(
        rows[0]["session_metadata"]["org_slug"],
        "=cmd|' /C calc'!A0"
    );
    for field in [
        "id",
        "received_at",
        "reason",
        "reason_detail",
        "iss",
        "sid",
        "jti",
        "aud",
        "iat",
        "exp",
        "alg",
        "kid",
        "typ",
        "metadata_status",
        "metadata_error",
        "source_ip",
        "user_agent",
        "token_sha256",
        "duplicate_of",
        "claims_verified",
    ] {
        assert!(rows[0].get(field).is_some(), "field {field}");
    }

    let ndjson = run(&["--outcome", "rejected", "--format", "ndjson"]);
    assert_eq!(ndjson.lines().count(), 1);
    assert!(ndjson.contains("\"reason\":\"malformed_token\""));

    let csv = run(&[
        "--format",
        "csv",
        "--order",
        "asc",
        "--meta",
        "org_slug==cmd|' /C calc'!A0",
    ]);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert!(
        lines[0].starts_with("id,kind,received_at,outcome,"),
        "{csv}"
    );
    assert_eq!(lines.len(), 3, "header, one row, trailing empty: {csv:?}");
    assert!(
        lines[1].contains("'{\"\"org_slug\"\":")
            || lines[1].contains("\"{\"\"org_slug\"\":\"\"=cmd"),
        "{}",
        lines[1]
    );

    let table = run(&["--limit", "2"]);
    assert!(table.contains("(2 records)"), "{table}");

    let bad = Command::new(BIN)
        .args(["query", "--database", &db, "--since", "yesterday"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
}
