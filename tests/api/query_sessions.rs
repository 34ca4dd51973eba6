//! `GET /api/v1/sessions/{sid}`: a relying party asks whether a local session is still valid.

use serde_json::json;

use crate::helpers::{TestApp, both_backends, spawn_api_app, urlencode};
use crate::query_api::logout;

async fn status(app: &TestApp, sid: &str, query: &str) -> serde_json::Value {
    let a = app
        .api_get(&format!("/api/v1/sessions/{}?{query}", urlencode(sid)))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

both_backends!(a_session_is_logged_out_once_a_verified_logout_names_it);
async fn a_session_is_logged_out_once_a_verified_logout_names_it() {
    let app = spawn_api_app().await;
    let before = status(&app, "s-1", "").await;
    assert_eq!(
        before,
        json!({"sid": "s-1", "iss": app.op.issuer(), "logged_out": false, "logged_out_at": null, "event_id": null})
    );
    let mut forged = app.claims();
    forged.insert("sid".into(), json!("s-1"));
    app.op.add_unpublished_rsa("forger").await.expect("key");
    // Signed with a key the issuer never published, under the issuer's real kid.
    let header = json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"});
    let token = app
        .op
        .sign_with_header("forger", &header, &forged)
        .expect("sign");
    assert_eq!(app.post_token(&token).await.status, 400);
    assert_eq!(
        status(&app, "s-1", "").await["logged_out"],
        false,
        "a forgery never logs out"
    );

    logout(&app, "auth0|alice", Some("s-1"), None).await;
    let record = app.last_record().await;
    let after = status(&app, "s-1", "").await;
    assert_eq!(after["logged_out"], true);
    assert_eq!(after["event_id"], record.id);
    assert_eq!(after["logged_out_at"], record.received_at);
    let iss = urlencode(app.op.issuer());
    assert_eq!(
        status(&app, "s-1", &format!("iss={iss}")).await["logged_out"],
        true
    );
    let other = status(&app, "s-1", "iss=https%3A%2F%2Fother.example%2F").await;
    assert_eq!(other["logged_out"], false, "sid is scoped to its issuer");
    assert_eq!(status(&app, "s-unknown", "").await["logged_out"], false);
}

both_backends!(a_subject_logout_without_sid_ends_every_session_that_began_before_it);
async fn a_subject_logout_without_sid_ends_every_session_that_began_before_it() {
    let app = spawn_api_app().await;
    let earlier = "2000-01-01T00:00:00Z";
    let q = |since: &str| format!("sub=auth0%7Cbob&since={since}");
    assert_eq!(
        status(&app, "s-bob", &q(earlier)).await["logged_out"],
        false
    );
    logout(&app, "auth0|bob", None, None).await;
    let record = app.last_record().await;
    let s = status(&app, "s-bob", &q(earlier)).await;
    assert_eq!(
        (s["logged_out"].clone(), s["event_id"].clone()),
        (json!(true), json!(record.id))
    );
    let later = "2100-01-01T00:00:00Z";
    assert_eq!(
        status(&app, "s-bob", &q(later)).await["logged_out"],
        false,
        "a session that began after the logout is still valid"
    );
    assert_eq!(
        status(&app, "s-bob", "").await["logged_out"],
        false,
        "without sub and since only a logout naming the sid counts"
    );
    assert_eq!(
        status(
            &app,
            "s-carol",
            "sub=auth0%7Ccarol&since=2000-01-01T00:00:00Z"
        )
        .await["logged_out"],
        false
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("logout_ledger_session_checks_total{logged_out=\"false\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("logout_ledger_session_checks_total{logged_out=\"true\"} 1"),
        "{metrics}"
    );
}
