//! Admission of rejection records: past the per-source and total limits, unverified rejections
//! get their usual answer but are counted into `rejections_suppressed` system records instead
//! of stored one by one; valid logouts never are; the client's address behind a trusted proxy.
//! Client sockets are bound to other loopback addresses (127.0.0.2, ...) to be other sources.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use logout_ledger::config::{AdmissionLimits, Settings};
use logout_ledger::store::StoredRecord;
use serde_json::Value;

use crate::helpers::{
    Answer, TempDir, TestApp, TestDb, all_records_in, both_backends, spawn_app_with, urlencode,
    with_api,
};

/// The form content type.
const FORM: &str = "application/x-www-form-urlencoded";

fn limits(per_source: u32, burst: u32, total: u32) -> impl FnOnce(&mut Settings) {
    move |s: &mut Settings| {
        s.edge.admission = AdmissionLimits {
            per_source_per_sec: per_source,
            per_source_burst: burst,
            total_per_sec: total,
        }
    }
}

/// A client whose connections come from `ip` (a loopback address).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// One request: its body, content type, `User-Agent` (to find its record) and forwarded-for.
struct Req<'a> {
    content_type: &'a str,
    body: Vec<u8>,
    user_agent: String,
    forwarded_for: Option<&'a str>,
}

async fn send(client: &reqwest::Client, app: &TestApp, req: Req<'_>) -> Answer {
    let mut r = client
        .post(app.url("/backchannel-logout"))
        .header("content-type", req.content_type)
        .header("user-agent", req.user_agent)
        .body(req.body);
    if let Some(xff) = req.forwarded_for {
        r = r.header("x-forwarded-for", xff);
    }
    let r = r.send().await.expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// A junk request of one of three kinds: a non-JWS token (400), a wrong content type (400), a
/// body over 64 KiB (413). Returns the request and its reason.
fn junk(kind: usize, user_agent: String) -> (Req<'static>, &'static str) {
    match kind % 3 {
        0 => (
            Req {
                content_type: FORM,
                body: b"logout_token=not-a-jwt".to_vec(),
                user_agent,
                forwarded_for: None,
            },
            "malformed_token",
        ),
        1 => (
            Req {
                content_type: "text/plain",
                body: b"hello".to_vec(),
                user_agent,
                forwarded_for: None,
            },
            "malformed_request",
        ),
        _ => (
            Req {
                content_type: FORM,
                body: vec![b'a'; 70_000],
                user_agent,
                forwarded_for: None,
            },
            "malformed_request",
        ),
    }
}

/// The `rejections_suppressed` records of a stopped receiver's store.
async fn suppressed_records(db_url: &str) -> Vec<Value> {
    all_records_in(db_url)
        .await
        .into_iter()
        .filter(|r| r.kind == "system" && r.action.as_deref() == Some("rejections_suppressed"))
        .map(|r| r.details.expect("details"))
        .collect()
}

/// Stops the receiver, keeping its store (and the SQLite file's directory) to read.
async fn stop(app: TestApp) -> (Arc<TestDb>, Arc<TempDir>) {
    let kept = (Arc::clone(&app.db), Arc::clone(&app.dir));
    app.stop().await;
    kept
}

fn logouts(all: &[StoredRecord]) -> Vec<&StoredRecord> {
    all.iter().filter(|r| r.kind == "logout").collect()
}

fn count(v: &Value) -> u64 {
    v["count"].as_u64().expect("count")
}

fn millis(v: &Value) -> i64 {
    logout_ledger::clock::parse_rfc3339_millis(v.as_str().expect("time")).expect("rfc 3339")
}

fn now_ms() -> i64 {
    logout_ledger::clock::Clock::now_millis(&logout_ledger::clock::SystemClock)
}

both_backends!(beyond_the_burst_answers_stay_the_same_and_only_counts_are_stored);
async fn beyond_the_burst_answers_stay_the_same_and_only_counts_are_stored() {
    let app = spawn_app_with(|s| {
        limits(2, 3, 100)(s);
        with_api(s); // /metrics lives on the API listener
    })
    .await;
    let client = client_from("127.0.0.2");
    let n = 15;
    let started = Instant::now();
    let t0 = now_ms();
    let mut sent = Vec::new();
    for i in 0..n {
        let (req, reason) = junk(i, format!("flood/{i}"));
        let bytes = req.body.len() as u64;
        let a = send(&client, &app, req).await;
        sent.push((i, reason, bytes, a));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let t1 = now_ms();
    // Same status, body and headers for every request of a kind, stored or not.
    for (i, _, _, a) in &sent {
        let model = &sent[i % 3].3;
        assert_eq!(a.status, model.status, "request {i}");
        assert_eq!(a.body, model.body, "request {i}");
        assert_eq!(a.header("cache-control"), Some("no-store"));
    }
    assert_eq!(sent[0].3.status, 400);
    assert_eq!(sent[2].3.status, 413);
    let metrics = app.metrics().await;
    let (db, _dir) = stop(app).await;

    let all = all_records_in(&db.url).await;
    let stored: HashSet<String> = logouts(&all)
        .iter()
        .map(|r| {
            assert_eq!(r.source_ip.as_deref(), Some("127.0.0.2"));
            r.user_agent.clone().expect("user agent")
        })
        .collect();
    let allowed = 3.0 + 2.0 * elapsed;
    assert!(stored.len() >= 3, "the burst is stored: {}", stored.len());
    assert!(
        (stored.len() as f64) <= allowed + 1.0,
        "{} stored, at most {allowed:.1} allowed",
        stored.len()
    );
    let mut by_reason = BTreeMap::<&str, u64>::new();
    let mut bytes = 0;
    for (i, reason, b, _) in &sent {
        if !stored.contains(&format!("flood/{i}")) {
            *by_reason.entry(reason).or_default() += 1;
            bytes += b;
        }
    }
    let suppressed = suppressed_records(&db.url).await;
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    let d = &suppressed[0];
    assert_eq!(d["scope"], "source");
    assert_eq!(d["source"], "127.0.0.2");
    assert_eq!(count(d), (n - stored.len()) as u64);
    assert_eq!(
        d["by_reason"],
        serde_json::to_value(&by_reason).expect("json")
    );
    assert_eq!(d["bytes"].as_u64(), Some(bytes));
    let (first, last) = (millis(&d["first_at"]), millis(&d["last_at"]));
    assert!(
        t0 <= first && first <= last && last <= t1,
        "{t0} {first} {last} {t1}"
    );
    for (reason, k) in &by_reason {
        assert!(
            metrics.contains(&format!(
                "logout_ledger_rejections_suppressed_total{{reason=\"{reason}\"}} {k}\n"
            )),
            "{metrics}"
        );
    }
    // The counts are chained before the stop record.
    let last_two: Vec<_> = all.iter().rev().take(2).collect();
    assert_eq!(last_two[0].action.as_deref(), Some("stop"));
    assert_eq!(last_two[1].action.as_deref(), Some("rejections_suppressed"));
}

both_backends!(two_sources_are_limited_separately);
async fn two_sources_are_limited_separately() {
    let app = spawn_app_with(limits(1, 3, 100)).await;
    let n = 8;
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let client = client_from(ip);
        for i in 0..n {
            let (req, _) = junk(0, format!("{ip}/{i}"));
            assert_eq!(send(&client, &app, req).await.status, 400);
        }
    }
    let (db, _dir) = stop(app).await;
    let all = all_records_in(&db.url).await;
    let mut suppressed = suppressed_records(&db.url).await;
    suppressed.sort_by_key(|d| d["source"].as_str().map(str::to_owned));
    assert_eq!(suppressed.len(), 2, "{suppressed:?}");
    for (ip, d) in ["127.0.0.2", "127.0.0.3"].iter().zip(&suppressed) {
        let stored = logouts(&all)
            .iter()
            .filter(|r| r.source_ip.as_deref() == Some(ip))
            .count();
        assert!(
            stored >= 3,
            "{ip}: each source has its own burst ({stored})"
        );
        assert_eq!(d["source"], *ip);
        assert_eq!(count(d), (n - stored) as u64, "{ip}");
        assert_eq!(d["by_reason"]["malformed_token"].as_u64(), Some(count(d)));
    }
}

both_backends!(the_total_cap_yields_one_all_sources_record_naming_the_busiest);
async fn the_total_cap_yields_one_all_sources_record_naming_the_busiest() {
    let app = spawn_app_with(limits(100, 100, 5)).await;
    let sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let started = Instant::now();
    let mut sent = BTreeMap::<&str, usize>::new();
    for (k, ip) in sources.iter().enumerate() {
        let client = client_from(ip);
        // 127.0.0.2 sends 3, 127.0.0.3 sends 6, ...: the busiest are told apart.
        for i in 0..3 * (k + 1) {
            let (req, _) = junk(0, format!("{ip}/{i}"));
            assert_eq!(send(&client, &app, req).await.status, 400);
            *sent.entry(ip).or_default() += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (db, _dir) = stop(app).await;
    let all = all_records_in(&db.url).await;
    let stored = logouts(&all);
    assert!(stored.len() >= 5);
    assert!((stored.len() as f64) <= 5.0 + 5.0 * elapsed + 1.0);
    let suppressed = suppressed_records(&db.url).await;
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    let d = &suppressed[0];
    assert_eq!(d["scope"], "all_sources");
    assert_eq!(count(d), (30 - stored.len()) as u64);
    assert_eq!(d["over_total_limit"].as_u64(), Some(count(d)));
    let busiest = d["busiest"].as_array().expect("busiest");
    let mut listed = 0;
    let mut previous = u64::MAX;
    for b in busiest {
        let ip = b["source"].as_str().expect("source");
        let n = b["count"].as_u64().expect("count");
        let stored_here = stored
            .iter()
            .filter(|r| r.source_ip.as_deref() == Some(ip))
            .count();
        assert_eq!(n as usize, sent[ip] - stored_here, "{ip}");
        assert!(n <= previous, "busiest first");
        previous = n;
        listed += n;
    }
    assert_eq!(listed, count(d), "four sources: all listed");
    assert_eq!(busiest[0]["source"], "127.0.0.5");
}

both_backends!(valid_logouts_and_verified_rejections_are_never_suppressed);
async fn valid_logouts_and_verified_rejections_are_never_suppressed() {
    let app = spawn_app_with(limits(1, 1, 1)).await;
    let junk_body = "logout_token=junk";
    let mut valid = Vec::new();
    for _ in 0..10 {
        assert_eq!(app.post_raw(FORM, junk_body).await.status, 400);
        let token = app.valid_token();
        let a = app.post_token(&token).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        valid.push(token);
        assert_eq!(app.post_raw(FORM, junk_body).await.status, 400);
    }
    // A re-delivery is a duplicate (200), and a signed token with the wrong audience is
    // recorded whatever the flood.
    assert_eq!(app.post_token(&valid[0]).await.status, 200);
    let mut claims = app.claims();
    claims.insert("aud".into(), "someone-else".into());
    for _ in 0..3 {
        let t = app.sign(&claims);
        assert_eq!(app.post_token(&t).await.code(), "wrong_audience");
    }
    let (db, _dir) = stop(app).await;
    let all = all_records_in(&db.url).await;
    let outcome = |o: &str, reason: Option<&str>| {
        logouts(&all)
            .iter()
            .filter(|r| r.outcome.as_deref() == Some(o) && r.reason.as_deref() == reason)
            .count()
    };
    assert_eq!(outcome("accepted", None), 10);
    assert_eq!(outcome("duplicate", None), 1);
    assert_eq!(outcome("rejected", Some("wrong_audience")), 3);
    let junk_stored = outcome("rejected", Some("malformed_token"));
    let suppressed: u64 = suppressed_records(&db.url).await.iter().map(count).sum();
    assert!(suppressed > 0, "the flood was limited");
    assert_eq!(junk_stored as u64 + suppressed, 20);
}

both_backends!(forwarded_for_counts_only_from_a_trusted_proxy);
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let app = spawn_app_with(|s| {
        limits(1, 2, 100)(s);
        s.edge.trusted_proxies = vec!["127.0.0.1".parse().expect("cidr")];
    })
    .await;
    let proxy = client_from("127.0.0.1");
    let stranger = client_from("127.0.0.2");
    let forwarded = |xff: &'static str, ua: String| Req {
        forwarded_for: Some(xff),
        ..junk(0, ua).0
    };
    // From the trusted proxy: the right-most untrusted hop is the client, and is limited.
    for i in 0..5 {
        let req = forwarded("198.51.100.7, 203.0.113.9, 127.0.0.1", format!("p/{i}"));
        assert_eq!(send(&proxy, &app, req).await.status, 400);
    }
    // Another client behind the same proxy has its own bucket.
    let req = forwarded("203.0.113.10", "q/0".into());
    assert_eq!(send(&proxy, &app, req).await.status, 400);
    // From an untrusted peer the header is ignored.
    for i in 0..5 {
        let req = forwarded("203.0.113.9", format!("s/{i}"));
        assert_eq!(send(&stranger, &app, req).await.status, 400);
    }
    let (db, _dir) = stop(app).await;
    let all = all_records_in(&db.url).await;
    let source_of = |prefix: &str| -> HashSet<Option<String>> {
        logouts(&all)
            .iter()
            .filter(|r| {
                r.user_agent
                    .as_deref()
                    .is_some_and(|u| u.starts_with(prefix))
            })
            .map(|r| r.source_ip.clone())
            .collect()
    };
    assert_eq!(source_of("p/"), HashSet::from([Some("203.0.113.9".into())]));
    assert_eq!(
        source_of("q/"),
        HashSet::from([Some("203.0.113.10".into())])
    );
    assert_eq!(source_of("s/"), HashSet::from([Some("127.0.0.2".into())]));
    let suppressed = suppressed_records(&db.url).await;
    let sources: BTreeMap<String, u64> = suppressed
        .iter()
        .map(|d| (d["source"].as_str().expect("source").to_owned(), count(d)))
        .collect();
    let stored = |prefix: &str| {
        logouts(&all)
            .iter()
            .filter(|r| {
                r.user_agent
                    .as_deref()
                    .is_some_and(|u| u.starts_with(prefix))
            })
            .count() as u64
    };
    assert_eq!(sources.get("203.0.113.9"), Some(&(5 - stored("p/"))));
    assert_eq!(sources.get("127.0.0.2"), Some(&(5 - stored("s/"))));
    assert!(!sources.contains_key("203.0.113.10"));
    assert!(
        !sources.contains_key("127.0.0.1"),
        "the proxy itself is not limited"
    );
}

/// A small seeded generator (xorshift64*), so every run posts the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
}

/// A random body: bytes, a form around random or valid tokens, a huge one now and then.
fn random_body(rng: &mut Rng, app: &TestApp) -> Vec<u8> {
    match rng.below(8) {
        0 => Vec::new(),
        1 | 2 => {
            let n = rng.below(300);
            rng.bytes(n)
        }
        3 => {
            let n = rng.below(200);
            let mut b = b"logout_token=".to_vec();
            b.extend(rng.bytes(n));
            b
        }
        4 => format!("logout_token={}", urlencode(&app.valid_token())).into_bytes(),
        5 => {
            // A valid token with one byte changed.
            let mut t = app.valid_token().into_bytes();
            let i = rng.below(t.len());
            t[i] = b"AZaz09-_."[rng.below(9)];
            let mut b = b"logout_token=".to_vec();
            b.extend(urlencode(&String::from_utf8_lossy(&t)).into_bytes());
            b
        }
        6 => format!("logout_token=a.b.c&logout_token={}", rng.next()).into_bytes(),
        _ => {
            if rng.below(4) == 0 {
                vec![b'x'; 64 * 1024 + rng.below(4096)]
            } else {
                let n = rng.below(2000);
                let mut b = b"logout_token=eyJ".to_vec();
                b.extend(std::iter::repeat_n(b'A', n));
                b
            }
        }
    }
}

both_backends!(any_bytes_posted_get_a_known_status_and_exactly_one_record_or_count);
async fn any_bytes_posted_get_a_known_status_and_exactly_one_record_or_count() {
    let app = spawn_app_with(limits(5, 8, 20)).await;
    let content_types = [
        FORM,
        "application/x-www-form-urlencoded; charset=UTF-8",
        "APPLICATION/X-WWW-FORM-URLENCODED",
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
        "application/x-www-form-urlencoded;;;",
    ];
    let clients = [
        client_from("127.0.0.2"),
        client_from("127.0.0.3"),
        client_from("127.0.0.4"),
    ];
    let mut rng = Rng(0x5eed_0f10_971e_d9a3);
    let cases = 240;
    let mut statuses = BTreeMap::<u16, usize>::new();
    for i in 0..cases {
        let content_type = content_types[rng.below(content_types.len())];
        let body = random_body(&mut rng, &app);
        let client = &clients[rng.below(clients.len())];
        let a = send(
            client,
            &app,
            Req {
                content_type,
                body,
                user_agent: format!("case/{i}"),
                forwarded_for: None,
            },
        )
        .await;
        assert!(
            [200, 400, 413, 503].contains(&a.status),
            "case {i}: {}",
            a.status
        );
        *statuses.entry(a.status).or_default() += 1;
    }
    let (db, _dir) = stop(app).await;
    let all = all_records_in(&db.url).await;
    let stored = logouts(&all).len() as u64;
    let counted: u64 = suppressed_records(&db.url).await.iter().map(count).sum();
    assert!(counted > 0, "the limits were reached: {statuses:?}");
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
    assert_eq!(stored + counted, cases as u64, "{statuses:?}");
}

both_backends!(a_redelivery_after_its_key_left_the_key_set_is_never_suppressed);
async fn a_redelivery_after_its_key_left_the_key_set_is_never_suppressed() {
    let app = spawn_app_with(|s| {
        limits(1, 1, 100)(s);
        s.keys.refresh_cooldown = std::time::Duration::ZERO;
    })
    .await;
    let token = app.valid_token();
    assert_eq!(app.post_token(&token).await.status, 200);
    // The issuer rotates; a token under the new key makes the receiver fetch the new set.
    app.op.rotate_rsa("rsa-2", true).await.expect("rotate");
    let fresh = app.op.sign("rsa-2", "RS256", &app.claims()).expect("sign");
    assert_eq!(app.post_token(&fresh).await.status, 200);
    // This source's bucket is spent on junk.
    for _ in 0..4 {
        assert_eq!(app.post_raw(FORM, "logout_token=junk").await.status, 400);
    }
    // The first token again: its key is gone (an unverified rejection), but it is the
    // identical token, so the store makes it a duplicate, answered 200.
    let a = app.post_token(&token).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let last = app.last_record().await;
    assert_eq!(last.outcome.as_deref(), Some("duplicate"));
}
