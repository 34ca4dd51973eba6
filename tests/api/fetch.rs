//! Key-set fetches are bounded: no redirect to another host, a size cap, a timeout. The issuer
//! here is a hand-made HTTP server so each misbehaviour can be staged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use logout_ledger::local_issuer::LocalIssuer;
use serde_json::{Value, json};

use crate::helpers::{AUDIENCE, TempDir, TestApp, TestDb, both_backends, settings, start};

/// What the staged issuer does when its key set is requested.
#[derive(Clone)]
enum Jwks {
    Serve(Value),
    RedirectTo(String),
    Oversized,
    Hang,
}

async fn staged_issuer(behaviour: Jwks) -> (SocketAddr, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let issuer = format!("http://{addr}/");
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("http://{addr}/jwks")});
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            get(move || {
                let b = behaviour.clone();
                async move {
                    match b {
                        Jwks::Serve(v) => axum::Json(v).into_response(),
                        Jwks::RedirectTo(url) => {
                            (StatusCode::FOUND, [(header::LOCATION, url)]).into_response()
                        }
                        Jwks::Oversized => {
                            let pad = "x".repeat(300 * 1024);
                            axum::Json(json!({"keys": [], "pad": pad})).into_response()
                        }
                        Jwks::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            StatusCode::OK.into_response()
                        }
                    }
                }
            }),
        )
        .route("/real-jwks", get(|| async { StatusCode::NOT_FOUND }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, issuer)
}

async fn receiver_for(issuer: &str, keys_op: Arc<LocalIssuer>) -> TestApp {
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::new(&dir).await);
    let mut s = settings(&keys_op, &db);
    s.issuers[0].issuer = issuer.to_owned();
    s.keys.timeout = Duration::from_millis(500);
    start(keys_op, dir, db, s, false).await
}

async fn token_for(app: &TestApp, issuer: &str) -> String {
    let mut c = app.op.claims(AUDIENCE);
    c.insert("iss".into(), json!(issuer));
    app.op.sign("rsa-1", "RS256", &c).expect("sign")
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

both_backends!(a_key_set_served_by_the_issuer_works);
async fn a_key_set_served_by_the_issuer_works() {
    let op = Arc::new(LocalIssuer::start().await.expect("keys"));
    let (_, issuer) = staged_issuer(Jwks::Serve(op.jwks())).await;
    let app = receiver_for(&issuer, op).await;
    app.wait_ready().await;
    let a = app.post_token(&token_for(&app, &issuer).await).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}

both_backends!(a_redirect_to_another_host_is_not_followed);
async fn a_redirect_to_another_host_is_not_followed() {
    let op = Arc::new(LocalIssuer::start().await.expect("keys"));
    // The real key set is served by the LocalIssuer, on another host name (localhost vs 127.0.0.1).
    let elsewhere = format!(
        "http://localhost:{}/.well-known/jwks.json",
        op.addr().port()
    );
    let (_, issuer) = staged_issuer(Jwks::RedirectTo(elsewhere)).await;
    let app = receiver_for(&issuer, Arc::clone(&op)).await;
    settle().await;
    assert_eq!(
        op.jwks_fetches(),
        0,
        "the redirect target was never contacted"
    );
    let a = app.post_token(&token_for(&app, &issuer).await).await;
    assert_eq!((a.status, a.code()), (503, "keys_unavailable"));
}

both_backends!(an_oversized_key_set_is_refused);
async fn an_oversized_key_set_is_refused() {
    let op = Arc::new(LocalIssuer::start().await.expect("keys"));
    let (_, issuer) = staged_issuer(Jwks::Oversized).await;
    let app = receiver_for(&issuer, op).await;
    settle().await;
    let a = app.post_token(&token_for(&app, &issuer).await).await;
    assert_eq!((a.status, a.code()), (503, "keys_unavailable"));
    // The caller learns only the code; the record keeps why.
    let detail = app.last_record().await.reason_detail.unwrap_or_default();
    assert!(detail.contains("more than"), "{detail}");
}

both_backends!(a_hanging_issuer_times_out_and_the_request_still_answers);
async fn a_hanging_issuer_times_out_and_the_request_still_answers() {
    let op = Arc::new(LocalIssuer::start().await.expect("keys"));
    let (_, issuer) = staged_issuer(Jwks::Hang).await;
    let app = receiver_for(&issuer, op).await;
    let started = std::time::Instant::now();
    let a = app.post_token(&token_for(&app, &issuer).await).await;
    assert_eq!((a.status, a.code()), (503, "keys_unavailable"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
