//! CLI parity: `query` (filters, cursor), `export`, `report summary` and `api-token new`, each
//! read leaving an access record naming the operating-system user.

use std::process::Command;

use logout_ledger::config::ApiToken;
use serde_json::{Value, json};

use crate::helpers::{TestApp, both_backends, spawn_api_app, spawn_app, spawn_app_with};
use crate::query_api::{access_records, logout};

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

/// Runs the binary on the app's store with `USER=tester` (which the access record ignores);
/// stdout and stderr.
fn run(app: &TestApp, args: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--database", &app.db.url])
        .env("USER", "tester")
        .output()
        .expect("run");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

fn ndjson_ids(text: &str) -> Vec<i64> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["id"]
                .as_i64()
                .expect("id")
        })
        .collect()
}

both_backends!(query_pages_with_a_cursor_and_takes_the_api_filters);
async fn query_pages_with_a_cursor_and_takes_the_api_filters() {
    let app = spawn_app().await;
    for i in 0..5 {
        let meta = json!({"org_id": if i < 3 { "acme" } else { "globex" }, "device": "mac"});
        logout(&app, "auth0|alice", Some(&format!("s{i}")), Some(meta)).await;
    }
    let all: Vec<i64> = app.records().await.iter().rev().map(|r| r.id).collect();
    let (page1, stderr) = run(&app, &["query", "--limit", "2", "--format", "ndjson"]);
    assert_eq!(ndjson_ids(&page1), all[..2]);
    let cursor = stderr
        .split("--cursor ")
        .nth(1)
        .map(str::trim)
        .expect("a cursor on stderr");
    let (page2, _) = run(
        &app,
        &[
            "query", "--limit", "2", "--format", "ndjson", "--cursor", cursor,
        ],
    );
    assert_eq!(ndjson_ids(&page2), all[2..4]);
    let (acme, stderr) = run(
        &app,
        &[
            "query",
            "--meta",
            "org_id=acme",
            "--has-meta",
            "device",
            "--verified",
            "--metadata-status",
            "ok",
            "--format",
            "ndjson",
        ],
    );
    assert_eq!(ndjson_ids(&acme).len(), 3);
    assert!(
        !stderr.contains("--cursor"),
        "the last page has no cursor: {stderr}"
    );
    let access = access_records(&app).await;
    assert_eq!(access.len(), 3);
    assert_eq!(
        (
            access[0]["who"].as_str(),
            access[0]["via"].as_str(),
            access[0]["rows"].as_i64()
        ),
        (
            Some(crate::private_files::os_account().as_str()),
            Some("cli"),
            Some(2)
        )
    );
    assert_eq!(access[2]["filters"]["meta.org_id"], "acme");
    assert_eq!(access[2]["action"], "query");
}

both_backends!(export_writes_a_file_and_report_counts_groups);
async fn export_writes_a_file_and_report_counts_groups() {
    let app = spawn_app().await;
    for org in ["acme", "acme", "globex"] {
        logout(&app, "auth0|bob", None, Some(json!({"org_id": org}))).await;
    }
    assert_eq!(app.post_token("garbage").await.status, 400);
    let file = app.dir.0.join("out.csv");
    let file_arg = file.display().to_string();
    run(
        &app,
        &[
            "export",
            "--format",
            "csv",
            "--meta",
            "org_id=acme",
            "--output",
            &file_arg,
        ],
    );
    let csv = std::fs::read_to_string(&file).expect("file");
    assert_eq!(
        csv.split("\r\n").count(),
        4,
        "header, two rows, end: {csv:?}"
    );
    let (ocsf, _) = run(&app, &["export", "--format", "ocsf"]);
    assert_eq!(ocsf.lines().count(), 4);
    let (json_text, _) = run(
        &app,
        &[
            "report",
            "summary",
            "--group-by",
            "outcome",
            "--format",
            "json",
        ],
    );
    let summary: Value = serde_json::from_str(&json_text).expect("json");
    assert_eq!(summary["total"], 4);
    assert_eq!(
        summary["groups"][0],
        json!({"key": {"outcome": "accepted"}, "count": 3})
    );
    let (table, _) = run(
        &app,
        &[
            "report",
            "summary",
            "--group-by",
            "meta:org_id",
            "--verified",
        ],
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["meta:org_id", "count"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["acme", "2"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["globex", "1"]
    );
    assert_eq!(lines[3], "total 3");
    let access = access_records(&app).await;
    let actions: Vec<(&str, i64)> = access
        .iter()
        .map(|d| {
            (
                d["action"].as_str().unwrap_or(""),
                d["rows"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("export", 2), ("export", 4), ("report", 2), ("report", 2)]
    );
    assert_eq!(access[0]["output"], file_arg);
}

both_backends!(a_token_from_api_token_new_opens_the_api);
async fn a_token_from_api_token_new_opens_the_api() {
    let out = Command::new(BIN)
        .args(["api-token", "new", "--label", "ci-bot"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("llq_"))
        .expect("token")
        .to_owned();
    let spec = text
        .split("LOGOUT_LEDGER_API_TOKENS=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("spec")
        .to_owned();
    assert!(spec.starts_with("ci-bot:") && !spec.contains(&token));
    let entry = ApiToken::parse("spec", &spec).expect("parses");
    let app = spawn_app_with(|s| s.api.tokens = vec![entry]).await;
    assert_eq!(
        app.api_get_as("/api/v1/events", Some(&token)).await.status,
        200
    );
    let access = access_records(&app).await;
    assert_eq!(access[0]["who"], "ci-bot");
    let other = spawn_api_app().await;
    assert_eq!(
        other
            .api_get_as("/api/v1/events", Some(&token))
            .await
            .status,
        401
    );
}

both_backends!(an_ndjson_export_is_byte_for_byte_what_query_prints);
async fn an_ndjson_export_is_byte_for_byte_what_query_prints() {
    let app = spawn_app().await;
    let odd = json!({"name": "Zoë \u{7} tab\t \"quoted\" back\\slash </script>", "emoji": "🔐"});
    logout(&app, "auth0|zoë", Some("s1"), Some(odd)).await;
    let dup = app.valid_token();
    for _ in 0..2 {
        assert_eq!(app.post_token(&dup).await.status, 200);
    }
    let mut invalid = app.claims();
    invalid.insert("session_metadata".into(), json!({"n": 1.5, "k": [1, 2]}));
    assert_eq!(app.post_token(&app.sign(&invalid)).await.status, 200);
    assert_eq!(app.post_token("garbage").await.status, 400);
    logout(&app, "auth0|bob", None, None).await;
    for kind in ["logout", "all"] {
        let (export, _) = run(&app, &["export", "--format", "ndjson", "--kind", kind]);
        let (query, _) = run(
            &app,
            &[
                "query", "--format", "ndjson", "--order", "asc", "--limit", "10000", "--kind", kind,
            ],
        );
        // The export's own access record comes after its snapshot; drop the query's extra ones.
        let n = export.lines().count();
        let query: Vec<&str> = query.lines().take(n).collect();
        assert_eq!(export.lines().collect::<Vec<_>>(), query, "--kind {kind}");
        assert!(n >= 6);
    }
}

#[test]
fn malformed_api_settings_stop_start_up_naming_the_setting() {
    let dir = crate::helpers::TempDir::new();
    let db = format!("sqlite://{}", dir.0.join("x.db").display());
    let config = dir.0.join("c.toml");
    std::fs::write(
        &config,
        "api_tokens = [\"auditor:not-a-digest\"]\n[[issuers]]\nissuer = \"https://op.example/\"\naudiences = [\"a\"]\n",
    )
    .expect("config");
    let digest = "0".repeat(64);
    let good = format!("auditor:{digest}");
    let twice = format!("{good},{good}");
    let config_arg = config.display().to_string();
    let issuer: &[&str] = &["--issuer", "https://op.example/", "--audience", "a"];
    let cases: [(Vec<&str>, &str); 4] = [
        (
            [issuer, &["--api-tokens", "auditor"]].concat(),
            "--api-tokens",
        ),
        ([issuer, &["--api-tokens", &twice]].concat(), "--api-tokens"),
        (
            [
                issuer,
                &["--api-tokens", &good, "--api-listen", "127.0.0.1:18099"],
            ]
            .concat(),
            "--api-listen",
        ),
        (vec!["--config", &config_arg], "api_tokens"),
    ];
    for (args, setting) in cases {
        let out = Command::new(BIN)
            .arg("serve")
            .args(&args)
            .args(["--database", &db, "--listen", "127.0.0.1:18099"])
            .env_remove("LOGOUT_LEDGER_API_TOKENS")
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
