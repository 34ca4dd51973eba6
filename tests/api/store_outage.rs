//! A store that cannot take writes (another connection holds its write lock: SQLite's, or the
//! chain lock's row on PostgreSQL) answers in time: every request 503 within one second more
//! than the store timeout however many wait, then at once while it is known to be down, an
//! invalid token still its 400, `/readyz` 503; once the lock is released everything is recorded
//! again.

use std::time::{Duration, Instant};

use crate::helpers::{
    Answer, TestApp, WriteLock, both_backends, post_raw, spawn_app_with, urlencode,
};

/// The store timeout these tests run with.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Posts every token at once; each answer with how long it took.
async fn post_timed(app: &TestApp, tokens: Vec<String>) -> Vec<(Answer, Duration)> {
    let url = app.url("/backchannel-logout");
    let tasks: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let (client, url) = (app.client.clone(), url.clone());
            let body = format!("logout_token={}", urlencode(&t));
            tokio::spawn(async move {
                let started = Instant::now();
                let a = post_raw(
                    &client,
                    &url,
                    "application/x-www-form-urlencoded",
                    body.into(),
                )
                .await;
                (a, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

async fn ready(app: &TestApp) -> u16 {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .status()
        .as_u16()
}

both_backends!(a_held_write_lock_answers_every_request_in_time_and_recovers);
async fn a_held_write_lock_answers_every_request_in_time_and_recovers() {
    let app = spawn_app_with(|s| s.store_timeout = STORE_TIMEOUT).await;
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    let lock = WriteLock::hold(&app.db).await;

    // Many at once, more than one batch's worth of waiting: every one answered in time.
    let tokens = (0..60).map(|_| app.valid_token()).collect();
    for (a, took) in post_timed(&app, tokens).await {
        assert_eq!(
            (a.status, a.code()),
            (503, "store_unavailable"),
            "{:?}",
            a.body
        );
        assert!(a.header("retry-after").is_some());
        assert!(took < STORE_TIMEOUT + Duration::from_secs(1), "{took:?}");
    }

    // Known to be down now: answered at once, well under the store timeout.
    for _ in 0..5 {
        let started = Instant::now();
        let a = app.post_token(&app.valid_token()).await;
        let took = started.elapsed();
        assert_eq!((a.status, a.code()), (503, "store_unavailable"));
        assert!(took < STORE_TIMEOUT / 4, "{took:?}");
    }
    let started = Instant::now();
    let a = app.post_token("not-a-token").await;
    assert_eq!(
        (a.status, a.code()),
        (400, "malformed_token"),
        "still its 400"
    );
    assert!(started.elapsed() < STORE_TIMEOUT / 4);
    assert_eq!(ready(&app).await, 503, "/readyz says the store is down");

    lock.release().await;

    // A probe finds the store again within a few probe intervals; nothing refused meanwhile
    // was half-written.
    let back = Instant::now();
    let token = app.valid_token();
    loop {
        let a = app.post_token(&token).await;
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 503, "{:?}", a.body);
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the store comes back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tokens = (0..20).map(|_| app.valid_token()).collect();
    for (a, _) in post_timed(&app, tokens).await {
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    assert_eq!(ready(&app).await, 200, "/readyz recovered");

    let records = app.records().await;
    assert_eq!(
        records.len(),
        1 + 1 + 20,
        "exactly the acknowledged logouts: no record of a 503"
    );
    assert!(
        records
            .iter()
            .all(|r| r.outcome.as_deref() == Some("accepted"))
    );
    let ids: Vec<i64> = app.all_records().await.iter().map(|r| r.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "gapless");
}
