//! Delivers one event to an application over HTTP, and says what the attempt came to.
//!
//! Two kinds of target exist:
//!
//! * a **webhook**, signed as [Standard Webhooks](https://www.standardwebhooks.com/) says:
//!   the JSON body is posted with `webhook-id`, `webhook-timestamp` and `webhook-signature`
//!   headers; any 2xx answer means delivered, anything else (redirects included, which are
//!   never followed) means try again later;
//! * a **back-channel relay**: the logout token is posted as
//!   `application/x-www-form-urlencoded` `logout_token=...` to the application's own
//!   back-channel logout URI, as OpenID Connect Back-Channel Logout 1.0 describes; 200 or
//!   204 means delivered, 400 means the application rejected the token for good, anything
//!   else means try again later.
//!
//! Every attempt is bounded: the [`client`] has a total timeout and follows no redirect, and
//! an answer's body is read only up to [`BODY_CAP`] bytes, chunk by chunk, to explain a
//! failure in a short one-line reason. A request that can never succeed as built (a
//! malformed URL, a message id that is not a valid header value) is reported as
//! [`Attempt::Dead`], since retrying it cannot help.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, LOCATION};

/// How many bytes of an answer's body are read at most, to explain a failure.
const BODY_CAP: usize = 4096;
/// How many characters of an answer's body a reason quotes at most.
const SNIPPET_CHARS: usize = 200;
/// How many characters a reason has at most.
const REASON_CHARS: usize = 300;
/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The application accepted the event; nothing more to do.
    Delivered,
    /// The attempt failed in a way a later attempt may not; the one-line reason says how.
    Retry(String),
    /// The application refused the event for good; the one-line reason says why.
    Dead(String),
}

/// A Standard Webhooks signing secret (the decoded key bytes); Debug never shows them.
#[derive(Clone)]
pub struct WebhookSecret(hmac::Key);

impl WebhookSecret {
    /// A secret from its decoded key bytes (`config::webhook_key` reads the file's text).
    pub fn from_key(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The `webhook-signature` header value for one attempt: "v1,<base64>".
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(msg_id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        let tag = context.sign();
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The client every outgoing delivery uses: no redirects followed, bounded time.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("logout-ledger/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Posts a signed webhook event; `now_secs` is this attempt's Unix time.
pub async fn post_webhook(
    client: &reqwest::Client,
    url: &str,
    secret: &WebhookSecret,
    msg_id: &str,
    body: &[u8],
    now_secs: i64,
) -> Attempt {
    let signature = secret.sign(msg_id, now_secs, body);
    let sent = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", now_secs.to_string())
        .header("webhook-signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => return failed_request(&err),
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    Attempt::Retry(status_reason(response).await)
}

/// Relays a logout token to an application's own back-channel logout URI.
pub async fn post_backchannel(client: &reqwest::Client, url: &str, token: &str) -> Attempt {
    let form = format!("logout_token={}", form_urlencode(token));
    let sent = client
        .post(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(err) => return failed_request(&err),
    };
    let status = response.status();
    if status == StatusCode::OK || status == StatusCode::NO_CONTENT {
        return Attempt::Delivered;
    }
    if status != StatusCode::BAD_REQUEST {
        return Attempt::Retry(status_reason(response).await);
    }
    let (body, read_error) = read_capped(&mut response).await;
    let explained = oauth_error(&body).or_else(|| body_snippet(&body));
    let reason = match (explained, read_error) {
        (Some(text), _) => format!("HTTP 400, logout token rejected: {text}"),
        (None, Some(err)) => format!("HTTP 400, logout token rejected (body unreadable: {err})"),
        (None, None) => "HTTP 400, logout token rejected".to_owned(),
    };
    Attempt::Dead(one_line(&reason, REASON_CHARS))
}

/// What a request that got no answer came to: dead if it could never be sent, else retry.
fn failed_request(err: &reqwest::Error) -> Attempt {
    let reason = one_line(&describe_error(err), REASON_CHARS);
    if err.is_builder() {
        Attempt::Dead(reason)
    } else {
        Attempt::Retry(reason)
    }
}

/// A one-line reason for a non-accepted status, quoting the start of the body.
async fn status_reason(mut response: reqwest::Response) -> String {
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let (body, read_error) = read_capped(&mut response).await;
    let mut reason = format!("HTTP {status}");
    if let Some(location) = location {
        reason.push_str(" (redirect not followed, location: ");
        reason.push_str(&one_line(&location, 100));
        reason.push(')');
    }
    if let Some(snippet) = body_snippet(&body) {
        reason.push_str(": ");
        reason.push_str(&snippet);
    } else if let Some(err) = read_error {
        reason.push_str(" (body unreadable: ");
        reason.push_str(&err);
        reason.push(')');
    }
    one_line(&reason, REASON_CHARS)
}

/// Reads at most [`BODY_CAP`] bytes of the body, chunk by chunk, and stops there.
///
/// What could be read is returned even when reading failed part way, with the failure.
async fn read_capped(response: &mut reqwest::Response) -> (Vec<u8>, Option<String>) {
    let mut body = Vec::new();
    while body.len() < BODY_CAP {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = BODY_CAP - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => break,
            Err(err) => return (body, Some(describe_error(&err))),
        }
    }
    (body, None)
}

/// The start of a body as one sanitized line, or `None` for a blank body.
fn body_snippet(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let snippet = one_line(&text, SNIPPET_CHARS);
    (!snippet.is_empty()).then_some(snippet)
}

/// The `error` and `error_description` of an OAuth-style JSON error body, if it has them.
fn oauth_error(body: &[u8]) -> Option<String> {
    let members: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    let find = |name: &str| {
        members
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(|value| one_line(value, SNIPPET_CHARS))
            .filter(|value| !value.is_empty())
    };
    match (find("error"), find("error_description")) {
        (Some(code), Some(description)) => Some(format!("{code}: {description}")),
        (Some(text), None) | (None, Some(text)) => Some(text),
        (None, None) => None,
    }
}

/// A short description of a request failure, without the URL (which may carry secrets).
fn describe_error(err: &reqwest::Error) -> String {
    let io_kind = io_error_kind(err);
    if err.is_timeout() {
        return if err.is_connect() {
            "timed out connecting to the application".to_owned()
        } else {
            "timed out waiting for the application".to_owned()
        };
    }
    if err.is_builder() {
        return format!("request could not be built: {}", root_cause(err));
    }
    if err.is_connect() {
        return match io_kind {
            Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
            Some(std::io::ErrorKind::ConnectionReset) => {
                "connection reset while connecting".to_owned()
            }
            _ => format!("could not connect: {}", root_cause(err)),
        };
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionReset) => {
            "connection reset by the application".to_owned()
        }
        _ => format!("request failed: {}", root_cause(err)),
    }
}

/// The kind of the first I/O error in an error's source chain.
fn io_error_kind(err: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source = err.source();
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = cause.source();
    }
    None
}

/// The message of the innermost error in a chain (the outermost one names the URL).
fn root_cause(err: &reqwest::Error) -> String {
    let mut message = None;
    let mut source = err.source();
    while let Some(cause) = source {
        message = Some(cause.to_string());
        source = cause.source();
    }
    message.unwrap_or_else(|| "unknown error".to_owned())
}

/// Makes text one line: control and line-separator characters become spaces, runs of
/// whitespace collapse to one, and at most `max_chars` characters are kept ("…" marks a cut).
fn one_line(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut kept = 0;
    let mut pending_space = false;
    for c in text.chars() {
        let c = if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            ' '
        } else {
            c
        };
        if c.is_whitespace() {
            pending_space = kept > 0;
            continue;
        }
        let needed = usize::from(pending_space) + 1;
        if kept + needed > max_chars {
            out.push('…');
            return out;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
        kept += needed;
    }
    out
}

/// Encodes a form value as `application/x-www-form-urlencoded` does (WHATWG URL).
fn form_urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// A secret as the configuration reads it.
    fn parse_secret(text: &str) -> Result<WebhookSecret, String> {
        crate::config::webhook_key(text.as_bytes()).map(|k| WebhookSecret::from_key(k.expose()))
    }

    use super::*;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::{JoinHandle, JoinSet};

    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    /// One request as the test server read it.
    struct Received {
        request_line: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Received {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
        }
    }

    /// What the test server does with a request.
    enum Reply {
        /// Answers with this status, extra header lines and body.
        Status(u16, Vec<(&'static str, String)>, Vec<u8>),
        /// Never answers.
        Hang,
        /// Answers 500 with a 10 MiB body, sent slowly (about 8 s in all).
        HugeSlow500,
    }

    type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

    /// A loopback HTTP/1.1 server on port 0; it stops (with its connections) when dropped.
    struct TestServer {
        addr: SocketAddr,
        requests: Arc<AtomicUsize>,
        task: JoinHandle<()>,
    }

    impl TestServer {
        async fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let requests = Arc::new(AtomicUsize::new(0));
            let handler: Handler = Arc::new(handler);
            let counter = Arc::clone(&requests);
            let task = tokio::spawn(async move {
                let mut connections = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let handler = Arc::clone(&handler);
                    let counter = Arc::clone(&counter);
                    connections.spawn(serve(stream, handler, counter));
                }
            });
            Self {
                addr,
                requests,
                task,
            }
        }

        fn url(&self) -> String {
            format!("http://{}/hook", self.addr)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn serve(mut stream: TcpStream, handler: Handler, counter: Arc<AtomicUsize>) {
        let Some(received) = read_request(&mut stream).await else {
            return;
        };
        counter.fetch_add(1, Ordering::SeqCst);
        match handler(&received) {
            Reply::Status(code, headers, body) => {
                let mut head = format!(
                    "HTTP/1.1 {code} Whatever\r\ncontent-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            }
            Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
            Reply::HugeSlow500 => {
                const TOTAL: usize = 10 * 1024 * 1024;
                const PIECE: usize = 64 * 1024;
                let head = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {TOTAL}\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = vec![b'x'; PIECE];
                for _ in 0..TOTAL / PIECE {
                    if stream.write_all(&piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn read_request(stream: &mut TcpStream) -> Option<Received> {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
        let mut lines = head.split("\r\n");
        let request_line = lines.next()?.to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        Some(Received {
            request_line,
            headers,
            body,
        })
    }

    fn status(code: u16, body: &str) -> Reply {
        Reply::Status(code, Vec::new(), body.as_bytes().to_vec())
    }

    /// The receiver's own copy of the Standard Webhooks check, independent of `sign`.
    fn webhook_is_valid(received: &Received, secret_text: &str, expected_ts: i64) -> bool {
        let key_b64 = secret_text.trim().trim_start_matches("whsec_");
        let key_bytes = STANDARD.decode(key_b64).unwrap();
        let (Some(id), Some(ts), Some(sigs)) = (
            received.header("webhook-id"),
            received.header("webhook-timestamp"),
            received.header("webhook-signature"),
        ) else {
            return false;
        };
        if ts != expected_ts.to_string()
            || received.header("content-type") != Some("application/json")
            || !received.request_line.starts_with("POST /hook ")
        {
            return false;
        }
        let mut signed = format!("{id}.{ts}.").into_bytes();
        signed.extend_from_slice(&received.body);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
        sigs.split(' ').any(|sig| {
            sig.strip_prefix("v1,")
                .and_then(|b64| STANDARD.decode(b64).ok())
                .is_some_and(|tag| hmac::verify(&key, &signed, &tag).is_ok())
        })
    }

    fn form_decode(value: &str) -> String {
        let bytes = value.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                byte => out.push(byte),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }

    fn logout_token_of(received: &Received) -> Option<String> {
        if received.header("content-type") != Some("application/x-www-form-urlencoded") {
            return None;
        }
        let body = std::str::from_utf8(&received.body).ok()?;
        body.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(name, _)| *name == "logout_token")
            .map(|(_, value)| form_decode(value))
    }

    fn test_client() -> reqwest::Client {
        client(Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        assert_eq!(secret.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
    }

    #[test]
    fn parse_ignores_whitespace_and_accepts_a_missing_prefix_or_padding() {
        let bare = VECTOR_SECRET.trim_start_matches("whsec_");
        for text in [
            format!("  {VECTOR_SECRET}\n"),
            format!("\t{bare}\r\n"),
            bare.to_owned(),
        ] {
            let secret = parse_secret(&text).unwrap();
            assert_eq!(secret.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
        }
        // 17 bytes: base64 with "=" padding, and the same without it.
        let padded = STANDARD.encode([7u8; 17]);
        assert!(padded.ends_with('='));
        let a = parse_secret(&padded).unwrap();
        let b = parse_secret(padded.trim_end_matches('=')).unwrap();
        assert_eq!(a.sign("m", 1, b"x"), b.sign("m", 1, b"x"));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn form_urlencode_escapes_reserved_bytes() {
        assert_eq!(form_urlencode("aZ09*-._"), "aZ09*-._");
        assert_eq!(form_urlencode("a b+c&d=é/~"), "a+b%2Bc%26d%3D%C3%A9%2F%7E");
    }

    #[test]
    fn one_line_replaces_controls_and_caps_length() {
        assert_eq!(one_line("  a\nb\r\n\x07c\u{2028}d  ", 50), "a b c d");
        let long = "x".repeat(500);
        let cut = one_line(&long, 10);
        assert_eq!(cut, format!("{}…", "x".repeat(10)));
    }

    #[test]
    fn json_error_members_are_read() {
        let body = br#" {"n": [1, {"a": null}], "error": "invalid_request", "error_description": "bad \"tok\u00e9n\" \ud83d\ude00"} "#;
        assert_eq!(
            oauth_error(body).unwrap(),
            "invalid_request: bad \"tokén\" 😀"
        );
        assert_eq!(oauth_error(br#"{"error": "x""#), None);
        assert_eq!(oauth_error(b"<html>no</html>"), None);
        assert_eq!(oauth_error(br#"{"other": "x"}"#), None);
    }

    #[tokio::test]
    async fn webhook_signed_and_accepted_is_delivered() {
        let server = TestServer::start(|req| {
            if webhook_is_valid(req, VECTOR_SECRET, 1_700_000_000) {
                status(204, "")
            } else {
                status(401, "bad signature")
            }
        })
        .await;
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        let body = br#"{"type":"logout","data":{"sub":"abc"}}"#;
        let attempt = post_webhook(
            &test_client(),
            &server.url(),
            &secret,
            "msg_2",
            body,
            1_700_000_000,
        )
        .await;
        assert_eq!(attempt, Attempt::Delivered);
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn webhook_with_wrong_secret_is_refused_by_the_receiver() {
        let server = TestServer::start(|req| {
            if webhook_is_valid(req, VECTOR_SECRET, 5) {
                status(204, "")
            } else {
                status(401, "bad signature")
            }
        })
        .await;
        let other = parse_secret(&STANDARD.encode([9u8; 32])).unwrap();
        let attempt = post_webhook(&test_client(), &server.url(), &other, "m", b"{}", 5).await;
        assert_eq!(
            attempt,
            Attempt::Retry("HTTP 401: bad signature".to_owned())
        );
    }

    #[tokio::test]
    async fn webhook_server_error_is_retried_with_a_one_line_reason() {
        let server = TestServer::start(|_| status(500, "oops\nstack\x1b[31m trace")).await;
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        let attempt = post_webhook(&test_client(), &server.url(), &secret, "m", b"{}", 1).await;
        let Attempt::Retry(reason) = attempt else {
            panic!("expected a retry, got {attempt:?}");
        };
        assert!(reason.starts_with("HTTP 500"), "{reason}");
        assert!(reason.contains("oops stack"), "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason}");
    }

    #[tokio::test]
    async fn webhook_redirect_is_not_followed() {
        let server = TestServer::start(|_| {
            Reply::Status(
                302,
                vec![("location", "http://127.0.0.1:9/elsewhere".to_owned())],
                Vec::new(),
            )
        })
        .await;
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        let attempt = post_webhook(&test_client(), &server.url(), &secret, "m", b"{}", 1).await;
        let Attempt::Retry(reason) = attempt else {
            panic!("expected a retry, got {attempt:?}");
        };
        assert!(reason.starts_with("HTTP 302"), "{reason}");
        assert!(reason.contains("not followed"), "{reason}");
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn webhook_hanging_server_times_out() {
        let server = TestServer::start(|_| Reply::Hang).await;
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        let client = client(Duration::from_millis(300)).unwrap();
        let started = Instant::now();
        let attempt = post_webhook(&client, &server.url(), &secret, "m", b"{}", 1).await;
        let Attempt::Retry(reason) = attempt else {
            panic!("expected a retry, got {attempt:?}");
        };
        assert!(reason.contains("timed out"), "{reason}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn webhook_to_a_closed_port_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        let url = format!("http://{addr}/hook");
        let attempt = post_webhook(&test_client(), &url, &secret, "m", b"{}", 1).await;
        assert_eq!(attempt, Attempt::Retry("connection refused".to_owned()));
    }

    #[tokio::test]
    async fn webhook_huge_error_body_is_not_read_whole() {
        let server = TestServer::start(|_| Reply::HugeSlow500).await;
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        let client = client(Duration::from_secs(30)).unwrap();
        let started = Instant::now();
        let attempt = post_webhook(&client, &server.url(), &secret, "m", b"{}", 1).await;
        let elapsed = started.elapsed();
        let Attempt::Retry(reason) = attempt else {
            panic!("expected a retry, got {attempt:?}");
        };
        assert!(reason.starts_with("HTTP 500: xxx"), "{reason}");
        assert!(reason.chars().count() <= REASON_CHARS + 1, "{reason}");
        // The whole body takes about 8 s to send; reading only the cap takes well under 1 s.
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }

    #[tokio::test]
    async fn webhook_to_an_invalid_url_is_dead() {
        let secret = parse_secret(VECTOR_SECRET).unwrap();
        let attempt = post_webhook(&test_client(), "not a url", &secret, "m", b"{}", 1).await;
        assert!(matches!(attempt, Attempt::Dead(_)), "{attempt:?}");
    }

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJpc3MiOiJodHRwczovL2lkcCJ9.c2ln-_";

    async fn backchannel_server(code: u16, body: &'static str) -> TestServer {
        TestServer::start(move |req| {
            if logout_token_of(req).as_deref() == Some(TOKEN)
                && req.request_line.starts_with("POST /hook ")
            {
                status(code, body)
            } else {
                status(422, "unexpected request")
            }
        })
        .await
    }

    #[tokio::test]
    async fn backchannel_200_and_204_are_delivered() {
        for code in [200, 204] {
            let server = backchannel_server(code, "").await;
            let attempt = post_backchannel(&test_client(), &server.url(), TOKEN).await;
            assert_eq!(attempt, Attempt::Delivered, "status {code}");
            assert_eq!(server.requests(), 1);
        }
    }

    #[tokio::test]
    async fn backchannel_token_is_form_encoded() {
        let odd = "a+b/c=d&e f";
        let server = TestServer::start(move |req| {
            if logout_token_of(req).as_deref() == Some(odd) {
                status(200, "")
            } else {
                status(422, "")
            }
        })
        .await;
        let attempt = post_backchannel(&test_client(), &server.url(), odd).await;
        assert_eq!(attempt, Attempt::Delivered);
    }

    #[tokio::test]
    async fn backchannel_400_is_dead_with_the_oauth_error() {
        let server = backchannel_server(
            400,
            r#"{"error":"invalid_request","error_description":"bad token"}"#,
        )
        .await;
        let attempt = post_backchannel(&test_client(), &server.url(), TOKEN).await;
        let Attempt::Dead(reason) = attempt else {
            panic!("expected dead, got {attempt:?}");
        };
        assert!(reason.contains("bad token"), "{reason}");
        assert!(reason.contains("invalid_request"), "{reason}");
        assert!(reason.contains("HTTP 400"), "{reason}");
    }

    #[tokio::test]
    async fn backchannel_400_without_json_quotes_the_body() {
        let server = backchannel_server(400, "<html>\n<b>nope</b>\n</html>").await;
        let attempt = post_backchannel(&test_client(), &server.url(), TOKEN).await;
        assert_eq!(
            attempt,
            Attempt::Dead("HTTP 400, logout token rejected: <html> <b>nope</b> </html>".to_owned())
        );
    }

    #[tokio::test]
    async fn backchannel_503_is_retried() {
        let server = backchannel_server(503, "busy").await;
        let attempt = post_backchannel(&test_client(), &server.url(), TOKEN).await;
        assert_eq!(attempt, Attempt::Retry("HTTP 503: busy".to_owned()));
    }
}
