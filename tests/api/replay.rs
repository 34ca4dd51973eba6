//! Replay and re-delivery: the identical token again is a 200 `duplicate` pointing at the
//! original (even after its `exp`); another token reusing the `(iss, jti)` is a 400 `replay`.

use serde_json::json;

use crate::helpers::{both_backends, spawn_app};

both_backends!(an_identical_redelivery_is_a_duplicate_not_a_second_acceptance);
async fn an_identical_redelivery_is_a_duplicate_not_a_second_acceptance() {
    let app = spawn_app().await;
    let token = app.valid_token();
    assert_eq!(app.post_token(&token).await.status, 200);
    let again = app.post_token(&token).await;
    assert_eq!(again.status, 200);
    let records = app.records().await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].outcome.as_deref(), Some("accepted"));
    assert_eq!(records[1].outcome.as_deref(), Some("duplicate"));
    assert_eq!(records[1].duplicate_of, Some(records[0].id));
    assert_eq!(
        records
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("accepted"))
            .count(),
        1
    );
}

both_backends!(another_token_with_the_same_jti_is_a_replay);
async fn another_token_with_the_same_jti_is_a_replay() {
    let app = spawn_app().await;
    let first = app.claims();
    assert_eq!(app.post_token(&app.sign(&first)).await.status, 200);
    let mut second = app.claims();
    second.insert("jti".into(), first["jti"].clone());
    let a = app.post_token(&app.sign(&second)).await;
    assert_eq!((a.status, a.code()), (400, "replay"));
    // The same jti from another issuer would be a different (iss, jti): covered by unknown_issuer here.
    let r = app.last_record().await;
    assert_eq!(r.reason.as_deref(), Some("replay"));
    assert_eq!(r.claims_verified, Some(false));
}

both_backends!(a_duplicate_is_recognised_even_after_expiry_and_restart);
async fn a_duplicate_is_recognised_even_after_expiry_and_restart() {
    let app = spawn_app().await;
    let now = logout_ledger::clock::Clock::now_secs(&logout_ledger::clock::SystemClock);
    let mut c = app.claims();
    c.insert("iat".into(), json!(now - 100));
    c.insert("exp".into(), json!(now - 30)); // expired, but within the 60 s leeway
    let token = app.sign(&c);
    assert_eq!(app.post_token(&token).await.status, 200);
    let original = app.last_record().await.id;
    // Restart with no leeway: the token is now expired by the rules, yet it is the same token.
    let app = app.restart(|s| s.issuers[0].leeway_secs = 0).await;
    let a = app.post_token(&token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let r = app.last_record().await;
    assert_eq!(
        (r.outcome.as_deref(), r.duplicate_of),
        (Some("duplicate"), Some(original))
    );
}

both_backends!(concurrent_identical_deliveries_accept_exactly_once);
async fn concurrent_identical_deliveries_accept_exactly_once() {
    let app = spawn_app().await;
    let token = app.valid_token();
    let answers = app.post_concurrently(vec![token; 20]).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let records = app.records().await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("accepted"))
            .count(),
        1
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("duplicate"))
            .count(),
        19
    );
}
