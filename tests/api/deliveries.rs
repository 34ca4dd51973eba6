//! Delivery (issue 13) against real peers: a webhook server that checks the Standard Webhooks
//! signature with its own copy of the algorithm and can fail or hang, a second receiver as the
//! back-channel target, the machine's NATS JetStream, and `serve` processes killed mid-delivery
//! or sharing one PostgreSQL store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use logout_ledger::config::{DeliveryKind, DeliverySettings, Secret, Settings};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::helpers::{
    AUDIENCE, Answer, Backend, TempDir, TestDb, both_backends, cli, eventually, post_raw, run_on,
    spawn_app_with, spawn_replica_with, urlencode, with_api,
};

/// The webhook secret, as a secret file holds it, and its decoded key.
const SECRET_TEXT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn key() -> Vec<u8> {
    STANDARD
        .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .expect("base64")
}

/// What the test target answers.
#[derive(Debug, Clone)]
enum Mode {
    /// 204, and the delivery counts as received.
    Ok,
    /// This status and body.
    Status(u16, &'static str),
    /// No answer for a minute.
    Hang,
}

/// One request the target received.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    signature_ok: bool,
    timestamp: i64,
    body: Value,
    succeeded: bool,
}

/// A webhook (and back-channel) target on loopback.
#[derive(Clone)]
struct Hook {
    mode: Arc<Mutex<Mode>>,
    /// The `webhook-id` of every request, as it arrives (before the answer).
    arrived: Arc<Mutex<Vec<String>>>,
    got: Arc<Mutex<Vec<Got>>>,
    forms: Arc<Mutex<Vec<String>>>,
    url: String,
}

impl Hook {
    async fn start(mode: Mode) -> Self {
        let hook = Self {
            mode: Arc::new(Mutex::new(mode)),
            arrived: Arc::default(),
            got: Arc::default(),
            forms: Arc::default(),
            url: String::new(),
        };
        let app = Router::new()
            .route("/hook", post(webhook))
            .route("/relay", post(relay))
            .with_state(hook.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            ..hook
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }

    fn successes(&self) -> Vec<Got> {
        self.got().into_iter().filter(|g| g.succeeded).collect()
    }

    async fn answer(&self) -> (StatusCode, &'static str) {
        let mode = self.mode.lock().expect("lock").clone();
        match mode {
            Mode::Ok => (StatusCode::NO_CONTENT, ""),
            Mode::Status(s, body) => (StatusCode::from_u16(s).expect("status"), body),
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                (StatusCode::NO_CONTENT, "")
            }
        }
    }
}

/// The Standard Webhooks check, written here from the published algorithm.
fn signature_holds(headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let signed = format!("{}.{}.", h("webhook-id"), h("webhook-timestamp"));
    let mut message = signed.into_bytes();
    message.extend_from_slice(body);
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key());
    let expected = format!(
        "v1,{}",
        STANDARD.encode(aws_lc_rs::hmac::sign(&k, &message).as_ref())
    );
    h("webhook-signature").split(' ').any(|s| s == expected)
}

async fn webhook(
    State(hook): State<Hook>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    hook.arrived.lock().expect("lock").push(h("webhook-id"));
    let (status, text) = hook.answer().await;
    hook.got.lock().expect("lock").push(Got {
        id: h("webhook-id"),
        signature_ok: signature_holds(&headers, &body),
        timestamp: h("webhook-timestamp").parse().unwrap_or(0),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        succeeded: status.is_success(),
    });
    (status, text)
}

async fn relay(State(hook): State<Hook>, body: Bytes) -> (StatusCode, &'static str) {
    hook.forms
        .lock()
        .expect("lock")
        .push(String::from_utf8_lossy(&body).into_owned());
    hook.answer().await
}

/// A target with the defaults, attempts bounded at 2 s.
fn target(name: &str, kind: DeliveryKind) -> DeliverySettings {
    DeliverySettings {
        concurrency: 4,
        timeout: Duration::from_secs(2),
        ..DeliverySettings::new(name, kind)
    }
}

fn webhook_target(hook: &Hook) -> DeliverySettings {
    target(
        "web-app",
        DeliveryKind::Webhook {
            url: format!("{}/hook", hook.url).parse().expect("url"),
            key: Secret::new(key()),
        },
    )
}

/// Posts `token` to the logout endpoint of the `serve` process at `base`.
async fn post_to(base: &str, token: &str) -> Answer {
    post_raw(
        &reqwest::Client::new(),
        &format!("{base}/backchannel-logout"),
        "application/x-www-form-urlencoded",
        format!("logout_token={}", urlencode(token)).into(),
    )
    .await
}

/// The deliveries `GET /api/v1/deliveries?{query}` lists.
async fn deliveries_in(app: &crate::helpers::TestApp, query: &str) -> Vec<Value> {
    let list = app.api_get(&format!("/api/v1/deliveries?{query}")).await;
    list.body["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

both_backends!(
    a_webhook_gets_each_accepted_logout_once_signed,
    a_target_down_then_up_gets_everything_exactly_once,
    a_relay_reaches_a_second_ledger_which_refuses_a_replay,
);

async fn a_webhook_gets_each_accepted_logout_once_signed() {
    let hook = Hook::start(Mode::Ok).await;
    let t = webhook_target(&hook);
    let app = spawn_app_with(|s| {
        with_api(s);
        s.deliveries = vec![t];
    })
    .await;
    let mut claims = app.claims();
    claims.insert("sid".into(), json!("session-42"));
    claims.insert(
        "session_metadata".into(),
        json!({"org_id": "org_acme", "region": "eu"}),
    );
    let token = app.sign(&claims);
    assert_eq!(app.post_token(&token).await.status, 200);
    assert_eq!(app.post_token("not-a-token").await.status, 400);
    assert_eq!(app.post_token(&token).await.status, 200, "duplicate");
    eventually(10, "the webhook delivery", || async {
        !hook.successes().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = hook.got();
    assert_eq!(
        got.len(),
        1,
        "one delivery: rejections and duplicates are not sent: {got:?}"
    );
    let g = &got[0];
    assert!(g.signature_ok, "the Standard Webhooks signature holds");
    assert!(g.id.starts_with("msg_"), "{}", g.id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    assert!(
        (g.timestamp - now).abs() < 30,
        "webhook-timestamp is the attempt's time"
    );
    assert_eq!(g.body["type"], "logout.accepted");
    let records = app.records().await;
    let accepted = records
        .iter()
        .find(|r| r.outcome.as_deref() == Some("accepted"))
        .expect("accepted record");
    assert_eq!(g.body["data"]["id"], accepted.id);
    assert_eq!(g.body["data"]["sid"], "session-42");
    assert_eq!(g.body["data"]["session_metadata"]["org_id"], "org_acme");
    assert_eq!(g.body["data"]["aud"], json!([AUDIENCE]));
    assert_eq!(g.body["timestamp"], json!(accepted.received_at));

    // The target's answer is stored a moment after it arrived.
    eventually(10, "the delivery stored as delivered", || async {
        deliveries_in(&app, "target=web-app")
            .await
            .first()
            .is_some_and(|d| d["state"] == "delivered")
    })
    .await;
    let list = app.api_get("/api/v1/deliveries?target=web-app").await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["deliveries"].as_array().expect("deliveries");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["state"], "delivered");
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(items[0]["delivery_id"], json!(g.id));
    assert_eq!(items[0]["event_id"], accepted.id);
    assert!(items[0]["delivered_at"].is_string());
    let pending = app.api_get("/api/v1/deliveries?state=pending").await;
    assert_eq!(pending.body["deliveries"], json!([]));
    let bad = app.api_get("/api/v1/deliveries?state=lost").await;
    assert_eq!(bad.status, 400);
    let one = app
        .api_get(&format!("/api/v1/events/{}", accepted.id))
        .await;
    assert_eq!(one.body["deliveries"][0]["target"], "web-app");
    assert_eq!(one.body["deliveries"][0]["state"], "delivered");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "logout_ledger_delivery_attempts_total{target=\"web-app\",result=\"delivered\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("logout_ledger_delivery_latency_seconds_count{target=\"web-app\"} 1"));
    app.stop().await;
}

async fn a_target_down_then_up_gets_everything_exactly_once() {
    let hook = Hook::start(Mode::Status(503, "down for maintenance")).await;
    // A second application, up all along: the failing target must not hold it back.
    let healthy = Hook::start(Mode::Ok).await;
    let (t, other) = (webhook_target(&hook), webhook_target(&healthy));
    let app = spawn_app_with(|s| {
        with_api(s);
        s.deliveries = vec![
            t,
            DeliverySettings {
                name: "healthy-app".into(),
                ..other
            },
        ];
    })
    .await;
    for _ in 0..6 {
        assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    }
    eventually(10, "a failed attempt of every delivery", || async {
        let ids: std::collections::HashSet<String> = hook.got().into_iter().map(|g| g.id).collect();
        ids.len() == 6
    })
    .await;
    eventually(
        10,
        "the healthy target's deliveries while the other fails",
        || async { healthy.successes().len() == 6 },
    )
    .await;
    assert!(
        hook.successes().is_empty(),
        "the failing target is still down"
    );
    // Each failure is stored a moment after the target answered.
    eventually(
        10,
        "six pending deliveries, each with the target's answer",
        || async {
            let items = deliveries_in(&app, "target=web-app&state=pending").await;
            items.len() == 6
                && items.iter().all(|d| {
                    d["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("HTTP 503"))
                })
        },
    )
    .await;
    hook.set(Mode::Ok);
    eventually(20, "every delivery after the target came back", || async {
        hook.successes().len() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for g in hook.successes() {
        assert!(g.signature_ok);
        *seen.entry(g.id).or_default() += 1;
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "delivered twice: {seen:?}");
    eventually(10, "six deliveries stored as delivered", || async {
        deliveries_in(&app, "target=web-app&state=delivered")
            .await
            .len()
            == 6
    })
    .await;
    let items = deliveries_in(&app, "target=web-app&state=delivered").await;
    assert_eq!(items.len(), 6);
    assert!(items.iter().all(|d| d["attempts"].as_i64() >= Some(2)));
    app.stop().await;
}

async fn a_relay_reaches_a_second_ledger_which_refuses_a_replay() {
    // The application's own receiver (its own store), trusting the same issuer.
    let b = spawn_app_with(|_| {}).await;
    let relay = target(
        "app-b",
        DeliveryKind::Backchannel {
            url: b.url("/backchannel-logout").parse().expect("url"),
        },
    );
    let op = Arc::clone(&b.op);
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::new(&dir).await);
    let mut s: Settings = crate::helpers::settings(&op, &db);
    with_api(&mut s);
    s.deliveries = vec![relay];
    let a = crate::helpers::start(op, dir, db, s, true).await;
    let mut claims = a.claims();
    claims.insert("sid".into(), json!("relayed-session"));
    let token = a.sign(&claims);
    assert_eq!(a.post_token(&token).await.status, 200);
    eventually(10, "the relayed logout in the second ledger", || async {
        b.records().await.iter().any(|r| {
            r.outcome.as_deref() == Some("accepted") && r.sid.as_deref() == Some("relayed-session")
        })
    })
    .await;
    let theirs = b.last_record().await;
    let ours = a
        .records()
        .await
        .into_iter()
        .find(|r| r.outcome.as_deref() == Some("accepted"))
        .expect("accepted");
    assert_eq!(theirs.token_sha256, ours.token_sha256, "the original token");
    // Sent again, the same token is a duplicate; another token with its jti is a replay.
    assert_eq!(b.post_token(&token).await.status, 200);
    assert_eq!(b.last_record().await.outcome.as_deref(), Some("duplicate"));
    let mut forged = claims.clone();
    forged.insert("sid".into(), json!("another-session"));
    let replay = b.post_token(&b.sign(&forged)).await;
    assert_eq!(replay.status, 400);
    assert_eq!(replay.code(), "replay");
    eventually(10, "the relay stored as delivered", || async {
        deliveries_in(&a, "target=app-b")
            .await
            .first()
            .is_some_and(|d| d["state"] == "delivered")
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A relay answered 400 is dead at once, with the reason; `deliveries retry` makes it due again
/// and a running service sends it; `deliveries list` shows it.
#[tokio::test]
async fn a_refused_relay_is_dead_at_once_and_the_cli_retries_it() {
    let hook = Hook::start(Mode::Status(
        400,
        r#"{"error":"invalid_request","error_description":"bad token"}"#,
    ))
    .await;
    let relay = target(
        "app-c",
        DeliveryKind::Backchannel {
            url: format!("{}/relay", hook.url).parse().expect("url"),
        },
    );
    let app = spawn_app_with(|s| {
        with_api(s);
        s.deliveries = vec![relay];
    })
    .await;
    let token = app.valid_token();
    assert_eq!(app.post_token(&token).await.status, 200);
    eventually(10, "the dead delivery", || async {
        deliveries_in(&app, "state=dead").await.len() == 1
    })
    .await;
    let list = app.api_get("/api/v1/deliveries?state=dead").await;
    let d = &list.body["deliveries"][0];
    assert_eq!(d["attempts"], 1, "not retried: {d}");
    let error = d["last_error"].as_str().expect("reason");
    assert!(
        error.contains("bad token") && error.contains("400"),
        "{error}"
    );
    let forms = hook.forms.lock().expect("lock").clone();
    assert_eq!(forms.len(), 1);
    assert_eq!(forms[0], format!("logout_token={}", urlencode(&token)));
    let db = app.db.url.clone();
    let out = cli(&["deliveries", "list", "--database", &db, "--format", "json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed[0]["state"], "dead");
    assert_eq!(listed[0]["target"], "app-c");
    let table = cli(&["deliveries", "list", "--database", &db, "--state", "dead"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with("TARGET") && text.contains("app-c"),
        "{text}"
    );

    hook.set(Mode::Ok);
    let retry_dead = [
        "deliveries",
        "retry",
        "--database",
        &db,
        "--target",
        "app-c",
        "--dead",
    ];
    let retry = cli(&retry_dead).await;
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    eventually(10, "the retried delivery", || async {
        deliveries_in(&app, "state=delivered").await.len() == 1
    })
    .await;
    let none = cli(&retry_dead).await;
    assert!(!none.status.success(), "nothing left to retry is an error");
    let records = app.all_records().await;
    assert!(
        records
            .iter()
            .any(|r| r.action.as_deref() == Some("delivery_retry"))
    );
    app.stop().await;
}

/// A raw NATS subscriber: connects, subscribes to `subject` and answers the server's pings.
async fn nats_subscriber(subject: &str) -> BufReader<tokio::net::TcpStream> {
    let stream = tokio::net::TcpStream::connect("127.0.0.1:4222")
        .await
        .expect("NATS with JetStream at 127.0.0.1:4222 (.ci/run starts it)");
    let mut conn = BufReader::new(stream);
    let mut line = String::new();
    conn.read_line(&mut line).await.expect("INFO");
    conn.get_mut()
        .write_all(
            format!(
                "CONNECT {{\"verbose\":false,\"headers\":true}}\r\nSUB {subject} 1\r\nPING\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("subscribe");
    loop {
        line.clear();
        conn.read_line(&mut line).await.expect("PONG");
        if line.starts_with("PONG") {
            return conn;
        }
    }
}

/// Reads the next `HMSG`: its headers and payload.
async fn next_message(conn: &mut BufReader<tokio::net::TcpStream>) -> (String, Value) {
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await.expect("line");
        if line.starts_with("PING") {
            conn.get_mut().write_all(b"PONG\r\n").await.expect("pong");
        }
        if line.starts_with("HMSG") {
            break;
        }
    }
    let parts: Vec<&str> = line.split_whitespace().collect();
    let total: usize = parts[parts.len() - 1].parse().expect("total");
    let header_len: usize = parts[parts.len() - 2].parse().expect("header length");
    let mut buf = vec![0u8; total + 2];
    conn.read_exact(&mut buf).await.expect("payload");
    let headers = String::from_utf8_lossy(&buf[..header_len]).into_owned();
    let payload = serde_json::from_slice(&buf[header_len..total]).expect("json");
    (headers, payload)
}

/// Deletes a JetStream stream (test clean-up).
async fn delete_stream(name: &str) {
    let mut conn = nats_subscriber(&format!("_INBOX.cleanup.{name}")).await;
    let _ = conn
        .get_mut()
        .write_all(
            format!("PUB $JS.API.STREAM.DELETE.{name} _INBOX.cleanup.{name} 0\r\n\r\n").as_bytes(),
        )
        .await;
    let mut line = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.read_line(&mut line)).await;
}

#[tokio::test]
async fn nats_jetstream_gets_the_event_with_the_delivery_id() {
    let suffix = logout_ledger::util::random_id().replace('-', "")[..12].to_owned();
    let subject = format!("logouts.test.{suffix}");
    let stream = format!("LL_TEST_{suffix}");
    let mut sub = nats_subscriber(&subject).await;
    let bus = target(
        "session-bus",
        DeliveryKind::Nats {
            servers: vec!["127.0.0.1:4222".into()],
            subject: subject.clone(),
            stream: Some(stream.clone()),
            create_stream: true,
        },
    );
    let app = spawn_app_with(|s| {
        with_api(s);
        s.deliveries = vec![bus];
    })
    .await;
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    let (headers, payload) = tokio::time::timeout(Duration::from_secs(10), next_message(&mut sub))
        .await
        .expect("a message on the subject");
    assert_eq!(payload["type"], "logout.accepted");
    eventually(10, "the NATS delivery", || async {
        deliveries_in(&app, "state=delivered").await.len() == 1
    })
    .await;
    let list = app.api_get("/api/v1/deliveries").await;
    let id = list.body["deliveries"][0]["delivery_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(headers.contains(&format!("Nats-Msg-Id: {id}")), "{headers}");
    app.stop().await;
    delete_stream(&stream).await;
}

/// A config file with one webhook target, for `serve` processes.
fn config_file(dir: &TempDir, hook: &Hook, timeout: &str) -> String {
    let secret = dir.0.join("web-app.secret");
    std::fs::write(&secret, format!("{SECRET_TEXT}\n")).expect("secret");
    let path = dir.0.join("deliveries.toml");
    std::fs::write(
        &path,
        format!(
            "[[deliveries]]\nname = \"web-app\"\nkind = \"webhook\"\nurl = \"{}/hook\"\n\
             secret_file = \"{}\"\ntimeout = \"{timeout}\"\n",
            hook.url,
            secret.display()
        ),
    )
    .expect("config");
    path.display().to_string()
}

#[tokio::test]
async fn a_kill_9_mid_delivery_is_delivered_after_restart() {
    let hook = Hook::start(Mode::Hang).await;
    let op = logout_ledger::local_issuer::LocalIssuer::start()
        .await
        .expect("issuer");
    let dir = TempDir::new();
    let db = format!("sqlite://{}", dir.0.join("store.db").display());
    let config = config_file(&dir, &hook, "1s");
    let mut first = spawn_replica_with(&op, &db, &["--config", &config], |c| {
        c.env("RUST_LOG", "error");
    })
    .await;
    let token = op
        .sign("rsa-1", "RS256", &op.claims(AUDIENCE))
        .expect("sign");
    assert_eq!(post_to(&first.base, &token).await.status, 200);
    eventually(10, "the attempt in flight", || async {
        !hook.arrived.lock().expect("lock").is_empty()
    })
    .await;
    first.child.start_kill().expect("kill -9");
    let _ = first.child.wait().await;
    hook.set(Mode::Ok);
    let _second = spawn_replica_with(&op, &db, &["--config", &config], |c| {
        c.env("RUST_LOG", "error");
    })
    .await;
    // The dead process's lease (2 x 1 s + 5 s) runs out, then the new one delivers.
    eventually(30, "the delivery after the restart", || async {
        !hook.successes().is_empty()
    })
    .await;
    let ok = hook.successes();
    assert!(ok[0].signature_ok);
    assert_eq!(
        ok[0].id,
        hook.arrived.lock().expect("lock")[0],
        "the same delivery id across processes"
    );
}

#[tokio::test]
async fn three_replicas_on_postgres_share_the_deliveries() {
    run_on(Backend::Postgres, async {
        let hook = Hook::start(Mode::Ok).await;
        let op = logout_ledger::local_issuer::LocalIssuer::start()
            .await
            .expect("issuer");
        let dir = TempDir::new();
        let db = TestDb::new(&dir).await;
        let config = config_file(&dir, &hook, "2s");
        let mut replicas = Vec::new();
        let mut metrics = Vec::new();
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let listen = format!("127.0.0.1:{port}");
            let args = ["--config", &config, "--metrics-listen", &listen];
            replicas.push(
                spawn_replica_with(&op, &db.url, &args, |c| {
                    c.env("RUST_LOG", "error");
                })
                .await,
            );
            metrics.push(format!("http://{listen}/metrics"));
        }
        for i in 0..30 {
            let token = op
                .sign("rsa-1", "RS256", &op.claims(AUDIENCE))
                .expect("sign");
            assert_eq!(post_to(&replicas[i % 3].base, &token).await.status, 200);
        }
        eventually(20, "every delivery", || async {
            hook.successes().len() >= 30
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for g in hook.got() {
            *seen.entry(g.id).or_default() += 1;
        }
        assert_eq!(seen.len(), 30, "one delivery per logout");
        assert!(seen.values().all(|n| *n == 1), "attempted twice: {seen:?}");
        let reader = logout_ledger::store::AuditStore::open_reader(&db.url)
            .await
            .expect("reader");
        let filter = logout_ledger::store::deliveries::DeliveryFilter {
            limit: 100,
            ..Default::default()
        };
        eventually(10, "thirty deliveries stored as delivered", || async {
            let rows = reader.deliveries(&filter).await.expect("deliveries");
            rows.len() == 30
                && rows
                    .iter()
                    .all(|d| d.state == logout_ledger::store::deliveries::DeliveryState::Delivered)
        })
        .await;
        // Each replica delivers what it leased: more than one of them did some of the work.
        let mut working = 0;
        for url in &metrics {
            let text = reqwest::get(url)
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            let delivered = text
                .lines()
                .find(|l| {
                    l.starts_with("logout_ledger_delivery_attempts_total{target=\"web-app\",result=\"delivered\"}")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .expect("the delivered count");
            working += usize::from(delivered > 0);
        }
        assert!(working >= 2, "the deliveries are shared, not done by one replica");
        drop(replicas);
    })
    .await;
}

#[tokio::test]
async fn a_wrong_delivery_setting_stops_start_up_naming_it() {
    let dir = TempDir::new();
    let cases = [
        (
            "kind = \"pigeon\"\nurl = \"https://a.example/\"",
            "deliveries[0].kind",
        ),
        (
            "kind = \"webhook\"\nurl = \"https://a.example/\"",
            "deliveries[0].secret_file",
        ),
        (
            "kind = \"backchannel\"\nurl = \"ftp://a.example/\"",
            "deliveries[0].url",
        ),
        (
            "kind = \"nats\"\nservers = [\"nats://127.0.0.1:4222\"]",
            "deliveries[0].subject",
        ),
    ];
    for (i, (body, setting)) in cases.iter().enumerate() {
        let path = dir.0.join(format!("bad{i}.toml"));
        std::fs::write(&path, format!("[[deliveries]]\nname = \"x\"\n{body}\n")).expect("write");
        let (config, db) = (
            path.display().to_string(),
            format!("sqlite://{}", dir.0.join("s.db").display()),
        );
        let out = cli(&[
            "serve",
            "--issuer",
            "https://issuer.example/",
            "--audience",
            "a",
            "--config",
            &config,
            "--database",
            &db,
        ])
        .await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(setting), "{setting}: {err}");
    }
}
