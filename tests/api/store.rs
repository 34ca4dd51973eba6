//! The audit store: every request recorded, durable across restarts, and never a 200 without
//! a committed record.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::Connection;

use crate::helpers::{WriteLock, both_backends, spawn_app, spawn_app_with};

both_backends!(two_hundred_concurrent_logouts_are_all_recorded_with_gapless_ids);
async fn two_hundred_concurrent_logouts_are_all_recorded_with_gapless_ids() {
    // 200 connections at once from one address: above the default per-source cap.
    let app = crate::helpers::spawn_app_with(|s| {
        s.edge.connections.max_connections_per_source = 1_000;
    })
    .await;
    let tokens: Vec<String> = (0..200).map(|_| app.valid_token()).collect();
    let answers = app.post_concurrently(tokens).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let records = app.records().await;
    assert_eq!(records.len(), 200);
    let all = app.all_records().await;
    let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        (1..=all.len() as i64).collect::<Vec<_>>(),
        "one gapless sequence"
    );
    assert_eq!(all.len(), 200 + 2, "start, key-set archive and 200 logouts");
    let jtis: HashSet<_> = records.iter().filter_map(|r| r.jti.clone()).collect();
    assert_eq!(jtis.len(), 200);
    assert!(
        records
            .iter()
            .all(|r| r.outcome.as_deref() == Some("accepted"))
    );
}

both_backends!(records_survive_a_restart_and_ids_continue);
async fn records_survive_a_restart_and_ids_continue() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    }
    let before: Vec<i64> = app.records().await.iter().map(|r| r.id).collect();
    let app = app.restart(|_| {}).await;
    assert_eq!(app.records().await.len(), 3);
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    let after: Vec<i64> = app.records().await.iter().map(|r| r.id).collect();
    assert_eq!(after[..3], before[..], "the first three are still there");
    assert!(after[3] > before[2]);
    let kinds: Vec<String> = app
        .all_records()
        .await
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r.kind,
                r.action.as_deref().or(r.outcome.as_deref()).unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "system:start",
            "system:keyset_change",
            "logout:accepted",
            "logout:accepted",
            "logout:accepted",
            "system:stop",
            "system:start",
            "logout:accepted"
        ],
        "the service's own life is on the record; an unchanged key set is no new record"
    );
    let ids: Vec<i64> = app.all_records().await.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_signed_token_is_kept_as_evidence_only_when_accepted() {
    let app = spawn_app().await;
    let token = app.valid_token();
    assert_eq!(app.post_token(&token).await.status, 200);
    assert_eq!(app.post_token("garbage").await.status, 400);
    let mut conn = sqlx::SqliteConnection::connect(&app.db.url)
        .await
        .expect("open");
    let rows: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, token FROM audit_events WHERE kind = 'logout' ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .expect("rows");
    let tokens: Vec<Option<String>> = rows.into_iter().map(|(_, t)| t).collect();
    assert_eq!(tokens, vec![Some(token), None]);
}

both_backends!(a_locked_store_answers_503_never_200_and_recovers);
async fn a_locked_store_answers_503_never_200_and_recovers() {
    let app = spawn_app_with(|s| s.store_timeout = Duration::from_secs(1)).await;
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);

    // Another process holds the write lock (SQLite) or the chain lock (PostgreSQL, where the
    // statement timeout ends the wait): the receiver cannot commit.
    let blocker = WriteLock::hold(&app.db).await;

    let valid = app.valid_token();
    let a = app.post_token(&valid).await;
    assert_eq!(
        (a.status, a.code()),
        (503, "store_unavailable"),
        "{:?}",
        a.body
    );
    assert!(a.header("retry-after").is_some());
    // An invalid token still gets its 400 while the store is down.
    let a = app.post_token("not-a-token").await;
    assert_eq!((a.status, a.code()), (400, "malformed_token"));

    blocker.release().await;

    // The same token is accepted once the store is back (a probe finds it within a few probe
    // intervals; 503 at once until then): nothing was half-written.
    let back = std::time::Instant::now();
    let mut a = app.post_token(&valid).await;
    while a.status == 503 && back.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        a = app.post_token(&valid).await;
    }
    assert_eq!(a.status, 200, "{:?}", a.body);
    let records = app.records().await;
    assert_eq!(records.len(), 2, "the failed attempt left nothing behind");
    assert!(
        records
            .iter()
            .all(|r| r.outcome.as_deref() == Some("accepted"))
    );
    let ids: Vec<i64> = app.all_records().await.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as i64).collect::<Vec<_>>(),
        "no gap where the batch failed"
    );
}
