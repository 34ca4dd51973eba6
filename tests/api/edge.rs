//! Slow and idle clients cost nothing: header, request and idle timeouts and the connection
//! caps, tested with raw sockets against the real listeners (small configured limits), and
//! `/metrics` only off the public listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logout_ledger::clock::SystemClock;
use logout_ledger::config::Settings;
use logout_ledger::local_issuer::LocalIssuer;
use logout_ledger::startup::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{
    TempDir, TestApp, TestDb, WriteLock, both_backends, settings, spawn_app_with, start, urlencode,
    with_api,
};

/// Connects to `to` from the loopback address `from` (any of 127.0.0.0/8 on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind the client's source address");
    socket.connect(to).await.expect("connect")
}

/// Reads (and drops) whatever arrives until the server closes the connection; how long that
/// took, or `None` if it is still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends one raw request and reads one answer (by `Content-Length`): status and the whole
/// answer as text.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    read_answer(stream).await
}

async fn read_answer(stream: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                let status = text
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
                return (status, text);
            }
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("an answer within 5 s");
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

const GET_HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n";

/// `/metrics` from the query API's listener.
async fn metrics_text(app: &TestApp) -> String {
    app.metrics().await
}

fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in {metrics}"))
}

#[tokio::test]
async fn edge_a_header_sent_one_byte_at_a_time_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|s| {
        with_api(s);
        s.edge.connections.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let mut slow = connect_from([127, 0, 0, 3], app.addr).await;
    let start = Instant::now();
    // One header byte every 100 ms, never the end of the header, until the server closes.
    let header = b"POST /backchannel-logout HTTP/1.1\r\nHost: edge\r\nX-Padding: ";
    let mut sent = 0usize;
    let closed_after = loop {
        let byte = header.get(sent).copied().unwrap_or(b'a');
        if slow.write_all(&[byte]).await.is_err() {
            break start.elapsed();
        }
        sent += 1;
        if closed_within(&mut slow, Duration::from_millis(100))
            .await
            .is_some()
        {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a trickled header kept its connection open for 5 s"
        );
    };
    assert!(sent >= 5, "bytes were accepted before the timeout ({sent})");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after <= Duration::from_secs(2),
        "closed after {closed_after:?}, expected within header timeout (1 s) + 1 s"
    );
    let m = metrics_text(&app).await;
    assert_eq!(
        counter(
            &m,
            "logout_ledger_connections_timed_out_total{listener=\"public\",timeout=\"header\"}"
        ),
        1
    );
}

#[tokio::test]
async fn edge_a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app =
        spawn_app_with(|s| s.edge.connections.header_read_timeout = Duration::from_secs(1)).await;
    let mut silent = connect_from([127, 0, 0, 3], app.addr).await;
    let closed = closed_within(&mut silent, Duration::from_secs(3))
        .await
        .expect("a silent connection is closed");
    assert!(
        closed >= Duration::from_millis(900) && closed <= Duration::from_secs(2),
        "{closed:?}"
    );
}

#[tokio::test]
async fn edge_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout()
 {
    let app = spawn_app_with(|s| {
        with_api(s);
        s.edge.connections.header_read_timeout = Duration::from_secs(1);
        s.edge.connections.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut conn = connect_from([127, 0, 0, 3], app.addr).await;
    let (status, answer) = exchange(&mut conn, GET_HEALTHZ).await;
    assert_eq!(status, 200, "{answer}");
    // Idle for longer than the header timeout: still open, and a second request is served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, answer) = exchange(&mut conn, GET_HEALTHZ).await;
    assert_eq!(status, 200, "kept alive past the header timeout: {answer}");
    let closed = closed_within(&mut conn, Duration::from_secs(4))
        .await
        .expect("an idle connection is closed");
    assert!(
        closed >= Duration::from_millis(1800) && closed <= Duration::from_secs(3),
        "closed {closed:?} after its last answer, expected the idle timeout (2 s)"
    );
    let m = metrics_text(&app).await;
    // Ours, and the harness's pooled readiness connection, idle as long.
    assert!(
        counter(
            &m,
            "logout_ledger_connections_timed_out_total{listener=\"public\",timeout=\"idle\"}"
        ) >= 1,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            "logout_ledger_connections_timed_out_total{listener=\"public\",timeout=\"header\"}"
        ),
        0
    );
}

#[tokio::test]
async fn edge_a_request_whose_body_does_not_arrive_is_answered_408_at_the_request_timeout() {
    let app = spawn_app_with(|s| {
        with_api(s);
        s.edge.connections.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut conn = connect_from([127, 0, 0, 3], app.addr).await;
    let start = Instant::now();
    let (status, answer) = exchange(
        &mut conn,
        "POST /backchannel-logout HTTP/1.1\r\nHost: edge\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nlogout_to",
    )
    .await;
    let took = start.elapsed();
    assert_eq!(status, 408, "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        closed_within(&mut conn, Duration::from_secs(1))
            .await
            .is_some(),
        "the connection is closed after the 408"
    );
    let m = metrics_text(&app).await;
    assert_eq!(
        counter(
            &m,
            "logout_ledger_connections_timed_out_total{listener=\"public\",timeout=\"request\"}"
        ),
        1
    );
}

both_backends!(edge_a_request_the_store_cannot_finish_in_time_is_answered_503);
async fn edge_a_request_the_store_cannot_finish_in_time_is_answered_503() {
    let app = spawn_app_with(|s| {
        s.edge.connections.request_timeout = Duration::from_secs(1);
        s.store_timeout = Duration::from_secs(5);
    })
    .await;
    let lock = WriteLock::hold(&app.db).await;
    let start = Instant::now();
    let a = app.post_token(&app.valid_token()).await;
    let took = start.elapsed();
    lock.release().await;
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert_eq!(a.code(), "request_timeout");
    assert!(a.header("retry-after").is_some());
    assert!(took <= Duration::from_secs(2), "{took:?}");
}

both_backends!(
    edge_over_the_per_source_cap_a_connection_is_closed_at_once_while_other_sources_are_served
);
async fn edge_over_the_per_source_cap_a_connection_is_closed_at_once_while_other_sources_are_served()
 {
    const CAP: usize = 3;
    let app = spawn_app_with(|s| {
        with_api(s);
        s.edge.connections.max_connections_per_source = CAP;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(connect_from([127, 0, 0, 3], app.addr).await);
    }
    let mut over = connect_from([127, 0, 0, 3], app.addr).await;
    let closed = closed_within(&mut over, Duration::from_secs(1))
        .await
        .expect("the connection over the cap is closed at once");
    assert!(closed < Duration::from_millis(500), "{closed:?}");
    for c in &mut held {
        assert!(
            closed_within(c, Duration::from_millis(50)).await.is_none(),
            "connections under the cap stay open"
        );
    }
    // A valid logout from another loopback address is served, and recorded with its address.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let start = Instant::now();
    let r = other
        .post(app.url("/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={}", urlencode(&app.valid_token())))
        .send()
        .await
        .expect("logout from 127.0.0.2");
    let took = start.elapsed();
    assert_eq!(r.status(), 200);
    assert!(took < Duration::from_secs(1), "{took:?}");
    let record = app.last_record().await;
    assert_eq!(record.outcome.as_deref(), Some("accepted"));
    assert_eq!(record.source_ip.as_deref(), Some("127.0.0.2"));
    // Closing one held connection frees its slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = connect_from([127, 0, 0, 3], app.addr).await;
    let (status, _) = exchange(&mut again, GET_HEALTHZ).await;
    assert_eq!(status, 200, "a freed slot is usable");
    let m = metrics_text(&app).await;
    assert_eq!(
        counter(
            &m,
            "logout_ledger_connections_refused_total{listener=\"public\",cap=\"source\"}"
        ),
        1
    );
}

#[tokio::test]
async fn edge_over_the_listener_cap_a_connection_is_closed_at_once() {
    let app = spawn_app_with(|s| {
        with_api(s);
        s.edge.connections.max_connections = 2;
    })
    .await;
    let api = app.api.expect("the API runs");
    // The API listener: no connection of the harness is open there.
    let mut first = connect_from([127, 0, 0, 3], api).await;
    let second = connect_from([127, 0, 0, 4], api).await;
    let mut third = connect_from([127, 0, 0, 5], api).await;
    let closed = closed_within(&mut third, Duration::from_secs(1))
        .await
        .expect("the connection over the listener cap is closed at once");
    assert!(closed < Duration::from_millis(500), "{closed:?}");
    let (status, _) = exchange(
        &mut first,
        "GET /metrics HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "connections under the cap are served");
    drop((first, second));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = metrics_text(&app).await;
    assert_eq!(
        counter(
            &m,
            "logout_ledger_connections_refused_total{listener=\"api\",cap=\"listener\"}"
        ),
        1
    );
    assert_eq!(
        counter(
            &m,
            "logout_ledger_connections_refused_total{listener=\"public\",cap=\"listener\"}"
        ),
        0,
        "each listener has its own cap"
    );
}

#[tokio::test]
async fn edge_a_trusted_proxy_is_exempt_from_the_per_source_cap() {
    let app = spawn_app_with(|s| {
        s.edge.connections.max_connections_per_source = 1;
        s.edge.trusted_proxies = vec!["127.0.0.5/32".parse().expect("cidr")];
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from([127, 0, 0, 5], app.addr).await);
    }
    let mut fourth = connect_from([127, 0, 0, 5], app.addr).await;
    let (status, _) = exchange(&mut fourth, GET_HEALTHZ).await;
    assert_eq!(status, 200, "the proxy's fourth connection is served");
    for c in &mut held {
        assert!(closed_within(c, Duration::from_millis(50)).await.is_none());
    }
    // The cap holds for everyone else.
    let _one = connect_from([127, 0, 0, 6], app.addr).await;
    let mut two = connect_from([127, 0, 0, 6], app.addr).await;
    assert!(
        closed_within(&mut two, Duration::from_secs(1))
            .await
            .is_some(),
        "an untrusted source's second connection is closed"
    );
}

/// A receiver with the query API and a `--metrics-listen` listener, both on port 0.
struct ThreeListeners {
    public: SocketAddr,
    api: SocketAddr,
    metrics: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _parts: (Arc<LocalIssuer>, Arc<TestDb>, Arc<TempDir>),
}

async fn three_listeners(change: impl FnOnce(&mut Settings)) -> ThreeListeners {
    let op = Arc::new(LocalIssuer::start().await.expect("issuer"));
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::new(&dir).await);
    let mut s = settings(&op, &db);
    with_api(&mut s);
    s.edge.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    change(&mut s);
    let app = Application::build(s, Arc::new(SystemClock))
        .await
        .expect("builds");
    let (public, api, metrics) = (
        app.local_addr(),
        app.api_addr().expect("api"),
        app.metrics_addr().expect("metrics listener"),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    ThreeListeners {
        public,
        api,
        metrics,
        stop,
        server,
        _parts: (op, db, dir),
    }
}

impl ThreeListeners {
    async fn stop(self) -> Duration {
        let start = Instant::now();
        let _ = self.stop.send(());
        self.server.await.expect("server task").expect("server ran");
        start.elapsed()
    }
}

#[tokio::test]
async fn edge_metrics_are_served_on_the_api_and_metrics_listeners_never_the_public_one() {
    let app = three_listeners(|_| {}).await;
    let client = reqwest::Client::new();
    let get = |addr: SocketAddr| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .expect("GET /metrics");
            (r.status().as_u16(), r.text().await.expect("text"))
        }
    };
    assert_eq!(
        get(app.public).await.0,
        404,
        "no /metrics on the public listener"
    );
    for addr in [app.api, app.metrics] {
        let (status, text) = get(addr).await;
        assert_eq!(status, 200);
        assert!(
            text.contains(
                "logout_ledger_connections_refused_total{listener=\"public\",cap=\"source\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("logout_ledger_jwks_fetches_total"), "{text}");
    }
    let r = client
        .get(format!("http://{}/api/v1/events", app.metrics))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404, "the metrics listener serves nothing else");
    let took = app.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
}

#[tokio::test]
async fn edge_shutdown_closes_idle_and_half_sent_connections_at_once() {
    let app =
        three_listeners(|s| s.edge.connections.header_read_timeout = Duration::from_secs(30)).await;
    let mut half = connect_from([127, 0, 0, 3], app.public).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("send");
    let mut idle = connect_from([127, 0, 0, 3], app.metrics).await;
    let (status, _) = exchange(&mut idle, "GET /metrics HTTP/1.1\r\nHost: edge\r\n\r\n").await;
    assert_eq!(status, 200);
    let _silent = connect_from([127, 0, 0, 3], app.api).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let took = app.stop().await;
    assert!(
        took < Duration::from_secs(3),
        "shutdown waited {took:?} for connections without a request in flight"
    );
    assert!(
        closed_within(&mut half, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(1))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn edge_health_and_readiness_say_ok_or_unavailable_and_nothing_more() {
    let app = spawn_app_with(|_| {}).await;
    let get = |path: &'static str| {
        let (client, url) = (app.client.clone(), app.url(path));
        async move {
            let r = client.get(url).send().await.expect("GET");
            (r.status().as_u16(), r.text().await.expect("text"))
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(
        get("/readyz").await,
        (200, "keys: ok\nstore: ok\n".to_owned())
    );

    // An issuer whose keys cannot be fetched: not ready, and the body says only that.
    let op = Arc::new(LocalIssuer::start().await.expect("issuer"));
    let dir = Arc::new(TempDir::new());
    let db = Arc::new(TestDb::new(&dir).await);
    let mut s = settings(&op, &db);
    s.issuers[0].jwks_uri = Some("http://127.0.0.1:9/jwks.json".parse().expect("url"));
    let down = start(op, dir, db, s, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = down
        .client
        .get(down.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.expect("text"),
        "keys: unavailable\nstore: ok\n"
    );
}

#[test]
fn edge_serve_help_lists_the_connection_and_metrics_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logout-ledger"))
        .args(["serve", "--help"])
        .output()
        .expect("run serve --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--header-read-timeout",
        "--request-timeout",
        "--idle-timeout",
        "--max-connections",
        "--max-connections-per-source",
        "--trusted-proxies",
        "--metrics-listen",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from serve --help:\n{help}"
        );
    }
}
