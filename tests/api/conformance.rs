//! The OpenID conformance suite's RP back-channel logout cases: exact 200 or 400.

use serde_json::{Value, json};

use crate::helpers::{TestApp, both_backends, spawn_app, urlencode};

/// The suite's baseline: no `typ`, an extra claim, an extra form parameter.
fn baseline(app: &TestApp) -> serde_json::Map<String, Value> {
    let mut c = app.claims();
    c.insert("ignored_claim".into(), json!("ignore me"));
    c
}

async fn post_with_extra_param(app: &TestApp, token: &str) -> crate::helpers::Answer {
    let body = format!("ignored_parameter=x&logout_token={}", urlencode(token));
    app.post_raw("application/x-www-form-urlencoded", body)
        .await
}

fn sign_no_typ(app: &TestApp, claims: &serde_json::Map<String, Value>) -> String {
    app.op
        .sign_with_header("rsa-1", &json!({"alg": "RS256", "kid": "rsa-1"}), claims)
        .expect("sign")
}

both_backends!(rpinitlogout_valid_token_is_exactly_200_with_no_store);
async fn rpinitlogout_valid_token_is_exactly_200_with_no_store() {
    let app = spawn_app().await;
    let a = post_with_extra_param(&app, &sign_no_typ(&app, &baseline(&app))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let r = app.last_record().await;
    assert_eq!(r.outcome.as_deref(), Some("accepted"));
    assert_eq!(r.claims_verified, Some(true));
}

both_backends!(alg_none_is_400);
async fn alg_none_is_400() {
    let app = spawn_app().await;
    let c = baseline(&app);
    let unsigned = format!(
        "{}.",
        logout_ledger::local_issuer::signing_input(&json!({"alg": "none"}), &c)
    );
    let a = post_with_extra_param(&app, &unsigned).await;
    assert_eq!((a.status, a.code()), (400, "unsupported_alg"));
}

both_backends!(no_event_is_400);
async fn no_event_is_400() {
    let app = spawn_app().await;
    let mut c = baseline(&app);
    c.remove("events");
    let a = post_with_extra_param(&app, &sign_no_typ(&app, &c)).await;
    assert_eq!((a.status, a.code()), (400, "missing_claim"));
}

both_backends!(with_nonce_is_400);
async fn with_nonce_is_400() {
    let app = spawn_app().await;
    let mut c = baseline(&app);
    c.insert("nonce".into(), json!("n-0S6_WzA2Mj"));
    let a = post_with_extra_param(&app, &sign_no_typ(&app, &c)).await;
    assert_eq!((a.status, a.code()), (400, "nonce_present"));
}

both_backends!(wrong_alg_with_a_real_key_of_the_set_is_400);
async fn wrong_alg_with_a_real_key_of_the_set_is_400() {
    // ES256 with the issuer's published EC key while only RS256 is configured.
    let app = spawn_app().await;
    let token = app
        .op
        .sign_with_header(
            "ec-p256",
            &json!({"alg": "ES256", "kid": "ec-p256"}),
            &baseline(&app),
        )
        .expect("sign");
    let a = post_with_extra_param(&app, &token).await;
    assert_eq!((a.status, a.code()), (400, "unsupported_alg"));
}

both_backends!(wrong_aud_is_400);
async fn wrong_aud_is_400() {
    let app = spawn_app().await;
    let mut c = baseline(&app);
    c.insert(
        "aud".into(),
        json!(format!("{}INVALID", crate::helpers::AUDIENCE)),
    );
    let a = post_with_extra_param(&app, &sign_no_typ(&app, &c)).await;
    assert_eq!((a.status, a.code()), (400, "wrong_audience"));
}

both_backends!(wrong_event_is_400);
async fn wrong_event_is_400() {
    let app = spawn_app().await;
    let mut c = baseline(&app);
    c.insert(
        "events".into(),
        json!({"http://schemas.openid.net/event/foobar": {}}),
    );
    let a = post_with_extra_param(&app, &sign_no_typ(&app, &c)).await;
    assert_eq!((a.status, a.code()), (400, "bad_events"));
}

both_backends!(wrong_iss_is_400);
async fn wrong_iss_is_400() {
    let app = spawn_app().await;
    let mut c = baseline(&app);
    c.insert("iss".into(), json!(format!("{}INVALID", app.op.issuer())));
    let a = post_with_extra_param(&app, &sign_no_typ(&app, &c)).await;
    assert_eq!((a.status, a.code()), (400, "unknown_issuer"));
    assert_eq!(
        app.last_record().await.reason.as_deref(),
        Some("unknown_issuer")
    );
}
