//! Keys and discovery: rotation, outages, the unknown-kid flood, every algorithm family.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    CLIENT_SECRET, all_algorithms, both_backends, spawn_app, spawn_app_with, start,
};

both_backends!(a_rotated_key_is_picked_up_on_first_use);
async fn a_rotated_key_is_picked_up_on_first_use() {
    let app = spawn_app_with(|s| s.keys.refresh_cooldown = Duration::ZERO).await;
    let before = app.op.jwks_fetches();
    app.op.rotate_rsa("rsa-2", true).await.expect("rotate");
    let token = app.op.sign("rsa-2", "RS256", &app.claims()).expect("sign");
    let a = app.post_token(&token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        app.op.jwks_fetches(),
        before + 1,
        "one refresh for the new kid"
    );
    assert_eq!(app.last_record().await.kid.as_deref(), Some("rsa-2"));
}

both_backends!(cached_keys_keep_serving_while_the_issuer_is_down);
async fn cached_keys_keep_serving_while_the_issuer_is_down() {
    let app = spawn_app().await;
    app.op.set_available(false);
    for _ in 0..3 {
        assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    }
}

both_backends!(an_unknown_kid_during_an_outage_is_503_keys_unavailable);
async fn an_unknown_kid_during_an_outage_is_503_keys_unavailable() {
    let app = spawn_app_with(|s| s.keys.refresh_cooldown = Duration::ZERO).await;
    app.op.set_available(false);
    app.op.rotate_rsa("rsa-2", false).await.expect("rotate");
    let token = app.op.sign("rsa-2", "RS256", &app.claims()).expect("sign");
    let a = app.post_token(&token).await;
    assert_eq!(
        (a.status, a.code()),
        (503, "keys_unavailable"),
        "{:?}",
        a.body
    );
    assert!(a.header("retry-after").is_some());
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(
        app.last_record().await.reason.as_deref(),
        Some("keys_unavailable")
    );
    // The issuer comes back: the same token is accepted.
    app.op.set_available(true);
    assert_eq!(app.post_token(&token).await.status, 200);
}

both_backends!(a_flood_of_random_kids_makes_at_most_one_fetch);
async fn a_flood_of_random_kids_makes_at_most_one_fetch() {
    // Cooldown 30 s; a burst that stores all 100 rejections one by one (admission is tested in
    // admission.rs).
    let app = spawn_app_with(|s| s.edge.admission.per_source_burst = 100).await;
    let before = app.op.jwks_fetches();
    let tokens: Vec<String> = (0..100)
        .map(|i| {
            let header = json!({"alg": "RS256", "kid": format!("random-{i}")});
            app.op
                .sign_with_header("rsa-1", &header, &app.claims())
                .expect("sign")
        })
        .collect();
    let answers = app.post_concurrently(tokens).await;
    let fetches = app.op.jwks_fetches() - before;
    assert!(fetches <= 1, "{fetches} fetches for 100 random kids");
    for a in &answers {
        assert!(
            matches!(
                (a.status, a.code()),
                (400, "unknown_key") | (503, "keys_unavailable")
            ),
            "{} {:?}",
            a.status,
            a.body
        );
    }
    assert_eq!(app.records().await.len(), 100, "every request recorded");
}

both_backends!(every_algorithm_family_verifies);
async fn every_algorithm_family_verifies() {
    let app = spawn_app_with(all_algorithms).await;
    for (kid, alg) in [
        ("rsa-1", "RS256"),
        ("rsa-1", "RS384"),
        ("rsa-1", "RS512"),
        ("rsa-1", "PS256"),
        ("rsa-1", "PS384"),
        ("rsa-1", "PS512"),
        ("ec-p256", "ES256"),
        ("ec-p384", "ES384"),
        ("ed-1", "EdDSA"),
    ] {
        let token = app.op.sign(kid, alg, &app.claims()).expect("sign");
        let a = app.post_token(&token).await;
        assert_eq!(a.status, 200, "{alg}: {:?}", a.body);
        assert_eq!(app.last_record().await.alg.as_deref(), Some(alg));
    }
    let hs = logout_ledger::local_issuer::sign_hs256(
        CLIENT_SECRET,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &app.claims(),
    );
    assert_eq!(
        app.post_token(&hs).await.status,
        200,
        "HS256 with the client secret"
    );
    // A key of the wrong kind for the alg is refused.
    let token = app
        .op
        .sign_with_header(
            "ec-p256",
            &json!({"alg": "ES384", "kid": "ec-p256"}),
            &app.claims(),
        )
        .expect("sign");
    assert_eq!(app.post_token(&token).await.code(), "unsupported_alg");
}

both_backends!(discovery_must_name_the_configured_issuer_exactly);
async fn discovery_must_name_the_configured_issuer_exactly() {
    let op = std::sync::Arc::new(
        logout_ledger::local_issuer::LocalIssuer::start()
            .await
            .expect("issuer"),
    );
    op.set_discovery_issuer(Some(op.issuer().trim_end_matches('/').to_owned()));
    let dir = std::sync::Arc::new(crate::helpers::TempDir::new());
    let db = std::sync::Arc::new(crate::helpers::TestDb::new(&dir).await);
    let s = crate::helpers::settings(&op, &db);
    let app = start(op, dir, db, s, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503, "no keys: not ready");
    let a = app.post_token(&app.valid_token()).await;
    assert_eq!((a.status, a.code()), (503, "keys_unavailable"));
    assert_eq!(
        app.op.jwks_fetches(),
        0,
        "the key set of a mismatching issuer is never fetched"
    );
}

both_backends!(health_and_readiness);
async fn health_and_readiness() {
    let app = spawn_app_with(crate::helpers::with_api).await;
    let h = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(h.status(), 200);
    let r = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let text = app.metrics().await;
    assert!(
        text.contains("logout_ledger_jwks_fetches_total 1"),
        "{text}"
    );
}
