//! `GET /api/v1/export`: NDJSON, CSV and OCSF, streamed; more rows than one page.

use serde_json::{Value, json};

use crate::helpers::{TestApp, both_backends, spawn_api_app};
use crate::query_api::logout;

async fn export(app: &TestApp, query: &str) -> String {
    let (status, body) = app.api_text(&format!("/api/v1/export?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Splits one RFC 4180 row into its cells (quoted cells unquoted, `""` as `"`).
fn parse_csv_row(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let (mut quoted, mut chars) = (false, row.chars().peekable());
    while let Some(c) = chars.next() {
        let cell = cells.last_mut().expect("a cell");
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cell.push(c),
        }
    }
    cells
}

both_backends!(csv_quotes_per_rfc_4180_and_neutralises_formulas);
async fn csv_quotes_per_rfc_4180_and_neutralises_formulas() {
    let app = spawn_api_app().await;
    let meta = json!({"org_name": "Acme, \"Inc\"", "note": "=HYPERLINK(\"http://x\")"});
    logout(&app, "@SUM(A1)", Some("-1+2"), Some(meta)).await;
    let csv = export(&app, "format=csv").await;
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines.len(),
        3,
        "header, one row, nothing after the last CRLF: {csv:?}"
    );
    assert!(
        lines[0].starts_with(
            "id,kind,received_at,outcome,http_status,reason,reason_detail,iss,sub,sid,"
        )
    );
    assert_eq!(lines[2], "");
    let cells = parse_csv_row(lines[1]);
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(cells.len(), header.len());
    let cell = |name: &str| {
        let i = header.iter().position(|h| *h == name).expect("column");
        cells[i].as_str()
    };
    assert_eq!((cell("sub"), cell("sid")), ("'@SUM(A1)", "'-1+2"));
    let meta: Value = serde_json::from_str(cell("session_metadata")).expect("one JSON cell");
    assert_eq!(meta["org_name"], "Acme, \"Inc\"");
    assert_eq!(meta["note"], "=HYPERLINK(\"http://x\")");
    assert_eq!(cell("aud"), r#"["test-client"]"#);
    let empty = export(&app, "format=csv&sub=nobody").await;
    assert_eq!(
        empty.split("\r\n").collect::<Vec<_>>().len(),
        2,
        "header only: {empty:?}"
    );
}

both_backends!(ocsf_lines_are_authentication_logoff_events);
async fn ocsf_lines_are_authentication_logoff_events() {
    let app = spawn_api_app().await;
    logout(
        &app,
        "auth0|alice",
        Some("s1"),
        Some(json!({"org_id": "acme"})),
    )
    .await;
    assert_eq!(app.post_token("garbage").await.status, 400);
    let text = export(&app, "format=ocsf").await;
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.len(), 2);
    let ok = &events[0];
    assert_eq!(
        (
            ok["class_uid"].clone(),
            ok["activity_id"].clone(),
            ok["category_uid"].clone()
        ),
        (json!(3002), json!(2), json!(3))
    );
    assert_eq!(ok["type_uid"], 300_202);
    assert_eq!(
        (ok["status_id"].clone(), ok["status"].clone()),
        (json!(1), json!("Success"))
    );
    assert_eq!(ok["user"]["uid"], "auth0|alice");
    assert_eq!(ok["session"]["uid"], "s1");
    assert_eq!(ok["session"]["issuer"], app.op.issuer());
    assert_eq!(ok["src_endpoint"]["ip"], "127.0.0.1");
    assert_eq!(ok["http_request"]["user_agent"], "Auth0/test");
    assert_eq!(ok["metadata"]["product"]["name"], "logout-ledger");
    assert!(ok["metadata"]["version"].is_string());
    assert!(ok["time"].as_i64().is_some_and(|t| t > 1_600_000_000_000));
    assert_eq!(ok["unmapped"]["session_metadata"]["org_id"], "acme");
    assert_eq!(ok["service"]["uid"], crate::helpers::AUDIENCE);
    let bad = &events[1];
    assert_eq!(
        (bad["status_id"].clone(), bad["status_code"].clone()),
        (json!(2), json!("malformed_token"))
    );
    assert!(bad["status_detail"].is_string());
}

both_backends!(an_export_streams_more_records_than_one_page_once_each_in_order);
async fn an_export_streams_more_records_than_one_page_once_each_in_order() {
    // 400 connections at once from one address: above the default per-source cap.
    let app = crate::helpers::spawn_app_with(|s| {
        crate::helpers::with_api(s);
        s.edge.connections.max_connections_per_source = 1_000;
    })
    .await;
    for _ in 0..3 {
        let tokens: Vec<String> = (0..400).map(|_| app.valid_token()).collect();
        assert!(
            app.post_concurrently(tokens)
                .await
                .iter()
                .all(|a| a.status == 200)
        );
    }
    let r = app
        .client
        .get(app.api_url("/api/v1/export?format=ndjson"))
        .bearer_auth(crate::helpers::API_TOKEN)
        .send()
        .await
        .expect("export");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    assert_eq!(r.headers()["x-export-rows"], "1200");
    let text = r.text().await.expect("body");
    let ids: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["id"]
                .as_i64()
                .expect("id")
        })
        .collect();
    let stored: Vec<i64> = app.records().await.iter().map(|r| r.id).collect();
    assert_eq!(ids, stored, "1200 records, ascending, none twice");
    let desc = export(&app, "format=ndjson&order=desc").await;
    let first: Value = serde_json::from_str(desc.lines().next().unwrap_or("{}")).expect("json");
    assert_eq!(first["id"], *stored.last().unwrap_or(&0));
}
