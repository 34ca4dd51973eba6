//! Auth0 session metadata: stored and indexed when valid; breaking a limit keeps the logout
//! valid and marks the metadata invalid with the reason.

use serde_json::{Map, Value, json};

use crate::helpers::{TestApp, both_backends, spawn_app};

fn pairs(n: usize, key_len: usize, value: &str) -> Value {
    let mut m = Map::new();
    for i in 0..n {
        m.insert(format!("{i:0>key_len$}"), json!(value));
    }
    Value::Object(m)
}

async fn send(app: &TestApp, metadata: Value) -> logout_ledger::store::StoredRecord {
    let mut c = app.claims();
    c.insert("session_metadata".into(), metadata);
    let a = app.post_token(&app.sign(&c)).await;
    assert_eq!(
        a.status, 200,
        "metadata never makes a signed logout invalid: {:?}",
        a.body
    );
    app.last_record().await
}

both_backends!(metadata_at_every_limit_is_ok_and_about_18_kb);
async fn metadata_at_every_limit_is_ok_and_about_18_kb() {
    let app = spawn_app().await;
    let full = pairs(25, 255, &"é".repeat(255));
    let mut c = app.claims();
    c.insert("session_metadata".into(), full.clone());
    let token = app.sign(&c);
    assert!(
        token.len() > 17_000,
        "a full token is large: {}",
        token.len()
    );
    assert_eq!(app.post_token(&token).await.status, 200);
    let r = app.last_record().await;
    assert_eq!(r.metadata_status.as_deref(), Some("ok"));
    assert_eq!(r.session_metadata, Some(full));
    assert!(r.metadata_error.is_none());
}

both_backends!(each_limit_broken_is_stored_as_invalid_with_the_reason);
async fn each_limit_broken_is_stored_as_invalid_with_the_reason() {
    let app = spawn_app().await;
    let cases = [
        (pairs(26, 3, "v"), "26 pairs"),
        (pairs(1, 256, "v"), "key"),
        (pairs(1, 3, &"x".repeat(256)), "256 characters"),
        (json!({"org": {"nested": true}}), "not a string"),
        (json!({"bad key!": "v"}), "key"),
        (json!("flat string"), "not a JSON object"),
    ];
    for (metadata, reason) in cases {
        let r = send(&app, metadata.clone()).await;
        assert_eq!(r.outcome.as_deref(), Some("accepted"));
        assert_eq!(r.metadata_status.as_deref(), Some("invalid"), "{metadata}");
        let err = r.metadata_error.unwrap_or_default();
        assert!(err.contains(reason), "{err:?} should mention {reason:?}");
        assert_eq!(r.session_metadata, Some(metadata), "stored as received");
    }
}

both_backends!(absent_metadata_is_absent);
async fn absent_metadata_is_absent() {
    let app = spawn_app().await;
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    let r = app.last_record().await;
    assert_eq!(r.metadata_status.as_deref(), Some("absent"));
    assert!(r.session_metadata.is_none());
}

both_backends!(records_can_be_found_by_metadata_pairs);
async fn records_can_be_found_by_metadata_pairs() {
    let app = spawn_app().await;
    for org in ["acme", "globex", "acme"] {
        send(&app, json!({"org_slug": org, "loginRegion": "DE"})).await;
    }
    send(&app, pairs(26, 3, "v")).await; // invalid metadata is not indexed
    let reader = logout_ledger::store::AuditStore::open_reader(&app.db.url)
        .await
        .expect("reader");
    let find = |meta: Vec<(&str, &str)>| {
        let filter = logout_ledger::store::EventFilter {
            meta: meta
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        };
        let reader = reader.clone();
        async move { reader.query(&filter).await.expect("query").len() }
    };
    assert_eq!(find(vec![("org_slug", "acme")]).await, 2);
    assert_eq!(
        find(vec![("org_slug", "acme"), ("loginRegion", "DE")]).await,
        2
    );
    assert_eq!(
        find(vec![("org_slug", "acme"), ("loginRegion", "FR")]).await,
        0
    );
    assert_eq!(find(vec![("000", "v")]).await, 0);
}

both_backends!(nul_characters_are_stored_the_same_on_both_backends);
async fn nul_characters_are_stored_the_same_on_both_backends() {
    let app = spawn_app().await;
    // PostgreSQL text cannot hold NUL: claim strings keep it as U+FFFD, and a metadata value
    // holding one makes the metadata invalid (jsonb refuses it too). Still a valid logout.
    let mut c = app.claims();
    c.insert("sub".into(), json!("auth0|a\u{0}b"));
    c.insert("session_metadata".into(), json!({"device": "x\u{0}y"}));
    let a = app.post_token(&app.sign(&c)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = app.last_record().await;
    assert_eq!(r.outcome.as_deref(), Some("accepted"));
    assert_eq!(r.sub.as_deref(), Some("auth0|a\u{FFFD}b"));
    assert_eq!(r.metadata_status.as_deref(), Some("invalid"));
    assert!(
        r.metadata_error
            .as_deref()
            .is_some_and(|e| e.contains("NUL")),
        "{:?}",
        r.metadata_error
    );
}
