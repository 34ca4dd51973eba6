//! Following one logout through the logs: the real binary with JSON logs on stderr, where the
//! request id of the handler's span is on the handler's line and on the writer's commit line.

use std::process::Stdio;
use std::time::Duration;

use logout_ledger::local_issuer::LocalIssuer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{AUDIENCE, TempDir, TestDb, both_backends, spawn_replica_with, urlencode};

/// The log message of a JSON line, and the line.
fn message(line: &Value) -> Option<&str> {
    line.pointer("/fields/message").and_then(Value::as_str)
}

both_backends!(one_logout_s_request_id_is_on_its_handler_line_and_its_commit_line);
async fn one_logout_s_request_id_is_on_its_handler_line_and_its_commit_line() {
    let op = LocalIssuer::start().await.expect("issuer");
    let dir = TempDir::new();
    let db = TestDb::new(&dir).await;
    let mut replica = spawn_replica_with(&op, &db.url, &["--log-format", "json"], |c| {
        c.env("RUST_LOG", "info").stderr(Stdio::piped());
    })
    .await;
    let stderr = replica.child.stderr.take().expect("stderr piped");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let token = op
        .sign("rsa-1", "RS256", &op.claims(AUDIENCE))
        .expect("sign");
    let r = reqwest::Client::new()
        .post(format!("{}/backchannel-logout", replica.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={}", urlencode(&token)))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);

    let (mut handler, mut commits, mut seen) = (None::<Value>, Vec::<Value>::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handler.is_none() || commits.is_empty() {
        let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await else {
            break;
        };
        let json: Value = serde_json::from_str(&line).expect("every log line is JSON");
        match message(&json) {
            Some("logout recorded") => handler = Some(json),
            Some("audit batch committed") => commits.push(json),
            _ => {}
        }
        seen.push(line);
    }
    let handler = handler.unwrap_or_else(|| panic!("no handler line in {seen:#?}"));
    assert_eq!(
        handler.pointer("/fields/outcome").and_then(Value::as_str),
        Some("accepted"),
        "{handler}"
    );
    let id = handler
        .pointer("/span/request_id")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the handler's line carries no request id: {handler}"));
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let named = commits.iter().any(|c| {
        c.pointer("/fields/request_ids")
            .and_then(Value::as_str)
            .is_some_and(|ids| ids.split(',').any(|x| x == id))
    });
    assert!(named, "no commit line names {id}: {commits:#?}\n{seen:#?}");
}
