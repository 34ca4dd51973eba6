//! One test per rejection code: the exact status, the code first in `error_description`, and
//! an audit row naming the same code with the claims marked unverified.

use serde_json::{Map, Value, json};

use crate::helpers::{AUDIENCE, TestApp, both_backends, spawn_app, spawn_app_with};

async fn assert_rejected(app: &TestApp, token: &str, code: &str) {
    let a = app.post_token(token).await;
    assert_eq!(a.status, 400, "{code}: {:?}", a.body);
    assert_eq!(a.code(), code, "{:?}", a.body);
    assert_eq!(a.body["error"], "invalid_request");
    assert_eq!(a.header("cache-control"), Some("no-store"));
    let r = app.last_record().await;
    assert_eq!(r.outcome.as_deref(), Some("rejected"));
    assert_eq!(r.reason.as_deref(), Some(code));
    assert_eq!(r.claims_verified, Some(false));
    assert!(r.token_sha256.is_some());
}

fn with(app: &TestApp, f: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut c = app.claims();
    f(&mut c);
    app.sign(&c)
}

both_backends!(malformed_request_when_the_form_has_no_token);
async fn malformed_request_when_the_form_has_no_token() {
    let app = spawn_app().await;
    let a = app
        .post_raw("application/x-www-form-urlencoded", "token=abc")
        .await;
    assert_eq!((a.status, a.code()), (400, "malformed_request"));
    let r = app.last_record().await;
    assert_eq!(r.reason.as_deref(), Some("malformed_request"));
    assert!(r.token_sha256.is_none());
}

both_backends!(malformed_token_for_garbage_and_crit);
async fn malformed_token_for_garbage_and_crit() {
    let app = spawn_app().await;
    assert_rejected(&app, "not-a-jwt", "malformed_token").await;
    let crit = app
        .op
        .sign_with_header(
            "rsa-1",
            &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}),
            &app.claims(),
        )
        .expect("sign");
    assert_rejected(&app, &crit, "malformed_token").await;
}

both_backends!(unknown_issuer_is_rejected_without_any_fetch);
async fn unknown_issuer_is_rejected_without_any_fetch() {
    let app = spawn_app().await;
    let stranger = logout_ledger::local_issuer::LocalIssuer::start()
        .await
        .expect("second issuer");
    let token = stranger
        .sign("rsa-1", "RS256", &stranger.claims(AUDIENCE))
        .expect("sign");
    assert_rejected(&app, &token, "unknown_issuer").await;
    assert_eq!(
        stranger.discovery_fetches() + stranger.jwks_fetches(),
        0,
        "no request to an unconfigured issuer"
    );
}

both_backends!(unsupported_alg_for_an_algorithm_outside_the_allow_list);
async fn unsupported_alg_for_an_algorithm_outside_the_allow_list() {
    let app = spawn_app().await;
    let token = app.op.sign("rsa-1", "PS256", &app.claims()).expect("sign");
    assert_rejected(&app, &token, "unsupported_alg").await;
}

both_backends!(bad_typ);
async fn bad_typ() {
    let app = spawn_app().await;
    let token = app
        .op
        .sign_with_header(
            "rsa-1",
            &json!({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"}),
            &app.claims(),
        )
        .expect("sign");
    assert_rejected(&app, &token, "bad_typ").await;
    let ok = app
        .op
        .sign_with_header(
            "rsa-1",
            &json!({"alg": "RS256", "kid": "rsa-1", "typ": "logout+jwt"}),
            &app.claims(),
        )
        .expect("sign");
    assert_eq!(app.post_token(&ok).await.status, 200);
}

both_backends!(unknown_key_after_a_fresh_fetch);
async fn unknown_key_after_a_fresh_fetch() {
    let app = spawn_app_with(|s| s.keys.refresh_cooldown = std::time::Duration::ZERO).await;
    app.op
        .add_unpublished_rsa("never-published")
        .await
        .expect("key");
    let token = app
        .op
        .sign("never-published", "RS256", &app.claims())
        .expect("sign");
    assert_rejected(&app, &token, "unknown_key").await;
}

both_backends!(bad_signature_for_a_forgery_under_a_real_kid);
async fn bad_signature_for_a_forgery_under_a_real_kid() {
    let app = spawn_app().await;
    app.op.add_unpublished_rsa("forger").await.expect("key");
    let token = app
        .op
        .sign_with_header(
            "forger",
            &json!({"alg": "RS256", "kid": "rsa-1"}),
            &app.claims(),
        )
        .expect("sign");
    assert_rejected(&app, &token, "bad_signature").await;
    // A valid token with one altered claim: the signature no longer covers it.
    let valid = app.valid_token();
    let parts: Vec<&str> = valid.split('.').collect();
    let mut c = app.claims();
    c.insert("sub".into(), json!("auth0|someone-else"));
    let tampered_claims = logout_ledger::local_issuer::signing_input(&json!({}), &c);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        tampered_claims.split('.').nth(1).unwrap_or(""),
        parts[2]
    );
    assert_rejected(&app, &tampered, "bad_signature").await;
}

both_backends!(wrong_audience_including_untrusted_extra_audiences);
async fn wrong_audience_including_untrusted_extra_audiences() {
    let app = spawn_app().await;
    assert_rejected(
        &app,
        &with(&app, |c| {
            c.insert("aud".into(), json!("other-app"));
        }),
        "wrong_audience",
    )
    .await;
    assert_rejected(
        &app,
        &with(&app, |c| {
            c.insert("aud".into(), json!([AUDIENCE, "other-app"]));
        }),
        "wrong_audience",
    )
    .await;
    let ok = with(&app, |c| {
        c.insert("aud".into(), json!([AUDIENCE]));
    });
    assert_eq!(app.post_token(&ok).await.status, 200);
}

fn now() -> i64 {
    logout_ledger::clock::Clock::now_secs(&logout_ledger::clock::SystemClock)
}

both_backends!(expired_beyond_the_leeway);
async fn expired_beyond_the_leeway() {
    let app = spawn_app().await;
    let t = now();
    let token = with(&app, |c| {
        c.insert("iat".into(), json!(t - 200));
        c.insert("exp".into(), json!(t - 80));
    });
    assert_rejected(&app, &token, "expired").await;
}

both_backends!(issued_in_future_beyond_the_leeway);
async fn issued_in_future_beyond_the_leeway() {
    let app = spawn_app().await;
    let t = now();
    let token = with(&app, |c| {
        c.insert("iat".into(), json!(t + 120));
        c.insert("exp".into(), json!(t + 240));
    });
    assert_rejected(&app, &token, "issued_in_future").await;
}

both_backends!(not_yet_valid_beyond_the_leeway_and_after_issued_in_future);
async fn not_yet_valid_beyond_the_leeway_and_after_issued_in_future() {
    let app = spawn_app().await;
    let t = now();
    let token = with(&app, |c| {
        c.insert("nbf".into(), json!(t + 120));
    });
    assert_rejected(&app, &token, "not_yet_valid").await;
    // Rule order: iat in the future is named first, and nbf before an old iat.
    let token = with(&app, |c| {
        c.insert("iat".into(), json!(t + 120));
        c.insert("nbf".into(), json!(t + 120));
        c.insert("exp".into(), json!(t + 240));
    });
    assert_rejected(&app, &token, "issued_in_future").await;
    let token = with(&app, |c| {
        c.insert("iat".into(), json!(t - 400));
        c.insert("nbf".into(), json!(t + 120));
    });
    assert_rejected(&app, &token, "not_yet_valid").await;
}

both_backends!(too_old_beyond_max_age_and_leeway);
async fn too_old_beyond_max_age_and_leeway() {
    let app = spawn_app().await;
    let t = now();
    let token = with(&app, |c| {
        c.insert("iat".into(), json!(t - 300 - 60 - 5));
        c.insert("exp".into(), json!(t + 100));
    });
    assert_rejected(&app, &token, "too_old").await;
}

both_backends!(missing_claim_for_each_required_claim);
async fn missing_claim_for_each_required_claim() {
    let app = spawn_app().await;
    for claim in ["iss", "aud", "iat", "exp", "jti", "events"] {
        let token = with(&app, |c| {
            c.remove(claim);
        });
        // Without iss no issuer's key can check the signature: refused as unverified.
        let code = if claim == "iss" {
            "unknown_issuer"
        } else {
            "missing_claim"
        };
        assert_rejected(&app, &token, code).await;
        let r = app.last_record().await;
        assert!(
            r.reason_detail
                .as_deref()
                .is_some_and(|d| d.contains(claim)),
            "{claim}: {:?}",
            r.reason_detail
        );
    }
}

both_backends!(bad_events_when_the_member_is_not_an_object);
async fn bad_events_when_the_member_is_not_an_object() {
    let app = spawn_app().await;
    let token = with(&app, |c| {
        c.insert(
            "events".into(),
            json!({"http://schemas.openid.net/event/backchannel-logout": "yes"}),
        );
    });
    assert_rejected(&app, &token, "bad_events").await;
}

both_backends!(nonce_present);
async fn nonce_present() {
    let app = spawn_app().await;
    assert_rejected(
        &app,
        &with(&app, |c| {
            c.insert("nonce".into(), json!("abc"));
        }),
        "nonce_present",
    )
    .await;
}

both_backends!(missing_sub_and_sid);
async fn missing_sub_and_sid() {
    let app = spawn_app().await;
    let token = with(&app, |c| {
        c.remove("sub");
        c.remove("sid");
    });
    assert_rejected(&app, &token, "missing_sub_and_sid").await;
    // Either alone is enough.
    for keep in ["sub", "sid"] {
        let token = with(&app, |c| {
            c.remove(if keep == "sub" { "sid" } else { "sub" });
        });
        assert_eq!(app.post_token(&token).await.status, 200, "only {keep}");
    }
}

both_backends!(the_first_failing_rule_names_the_rejection);
async fn the_first_failing_rule_names_the_rejection() {
    let app = spawn_app().await;
    let t = now();
    // Expired, nonce present and no sub/sid: exp comes first in §2.6 order.
    let token = with(&app, |c| {
        c.insert("exp".into(), json!(t - 1000));
        c.insert("nonce".into(), json!("n"));
        c.remove("sub");
        c.remove("sid");
    });
    assert_rejected(&app, &token, "expired").await;
    // A bad signature comes before every claim rule.
    let mut c = app.claims();
    c.insert("nonce".into(), json!("n"));
    let good = app.sign(&c);
    let forged = format!("{}AAAA", &good[..good.len() - 4]);
    assert_rejected(&app, &forged, "bad_signature").await;
}

both_backends!(hs256_signed_with_the_rsa_public_key_is_refused);
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // Algorithm confusion: HS256 keyed with the issuer's RSA public key.
    let app = spawn_app().await;
    let public = app.op.rsa_public_key_der("rsa-1").expect("public key");
    let header = json!({"alg": "HS256", "kid": "rsa-1"});
    let token = logout_ledger::local_issuer::sign_hs256(&public, &header, &app.claims());
    assert_rejected(&app, &token, "unsupported_alg").await;

    // Even with HS256 allowed, only the configured client secret verifies.
    let app = spawn_app_with(crate::helpers::all_algorithms).await;
    let token = logout_ledger::local_issuer::sign_hs256(&public, &header, &app.claims());
    assert_rejected(&app, &token, "bad_signature").await;
}
