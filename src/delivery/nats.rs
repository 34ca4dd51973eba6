//! Minimal NATS JetStream publisher over plain TCP, built on tokio alone so the
//! ledger can publish deduplicated events without a full NATS client dependency.
//!
//! One background task per connection owns the socket: it writes the frames that
//! requests queue on an mpsc channel and reads the server's answers, handing each
//! reply to the request waiting for it (matched by the reply inbox's counter).
//! When the connection drops, waiting requests fail with [`NatsError::Closed`] and
//! the next request reconnects once to the configured servers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Largest message (headers plus payload) accepted from or sent to the server.
const MAX_PAYLOAD: usize = 1024 * 1024;
/// Largest protocol line accepted from the server.
const MAX_LINE: usize = 64 * 1024;
/// Frames that may wait for the writer before senders are made to wait.
const WRITE_QUEUE: usize = 1024;
/// Largest batch of queued frames written with one system call.
const WRITE_BATCH: usize = 64 * 1024;
/// The CONNECT options: headers on, and 503 answers when nobody listens.
const CONNECT_JSON: &str = r#"{"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"lang":"rust","version":"0.1.0","protocol":1}"#;

/// Why a publish or a stream request failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// No configured server could be reached, or its handshake failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// Reading from or writing to the server failed.
    #[error("NATS I/O error: {0}")]
    Io(String),
    /// The server did not answer within the configured timeout.
    #[error("NATS request timed out")]
    Timeout,
    /// JetStream answered "no responders": no stream listens on this subject.
    #[error("no JetStream stream listens on subject {0}")]
    NoStream(String),
    /// JetStream answered with an API error; holds its description.
    #[error("JetStream API error: {0}")]
    Api(String),
    /// Invalid input or a malformed or unexpected message from the server.
    #[error("NATS protocol error: {0}")]
    Protocol(String),
    /// The connection closed before the answer arrived.
    #[error("NATS connection closed")]
    Closed,
}

/// JetStream's acknowledgement of one publish.
#[derive(Debug, Clone, Deserialize)]
pub struct PubAck {
    /// The stream that stored the message.
    pub stream: String,
    /// The message's sequence number in that stream.
    pub seq: u64,
    /// True when the message id was seen within the duplicate window (not stored again).
    #[serde(default)]
    pub duplicate: bool,
}

/// A connection to one of the configured servers, shared by concurrent publishers.
#[derive(Clone, Debug)]
pub struct JetStream {
    inner: Arc<Inner>,
}

/// State shared by all clones of a [`JetStream`].
struct Inner {
    servers: Vec<String>,
    timeout: Duration,
    conn: Mutex<Arc<Conn>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStream")
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One answer from the server to a request.
#[derive(Debug)]
struct Reply {
    /// The status code of the header line (`NATS/1.0 503`), if any.
    status: Option<u16>,
    payload: Vec<u8>,
}

/// Waiting requests by reply counter; `None` once the connection is gone.
type PendingMap = Option<HashMap<u64, oneshot::Sender<Result<Reply, NatsError>>>>;
/// The pending map shared by requests and the connection's task.
type Pending = Arc<StdMutex<PendingMap>>;

/// One live (or dead) TCP connection and its background task's handles.
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    /// `_INBOX.<random hex>.`; replies come to this prefix plus a counter.
    inbox: String,
    next: AtomicU64,
    max_payload: usize,
}

/// Locks the pending map, ignoring poisoning (the map stays consistent).
fn lock(p: &Pending) -> MutexGuard<'_, PendingMap> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a request's pending entry when the request ends, however it ends.
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(map) = lock(self.pending).as_mut() {
            map.remove(&self.id);
        }
    }
}

impl JetStream {
    /// Connects to the first reachable server of `servers` (each "nats://host:port" or "host:port"), within `timeout` each.
    pub async fn connect(servers: &[String], timeout: Duration) -> Result<Self, NatsError> {
        let conn = connect_any(servers, timeout).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                servers: servers.to_vec(),
                timeout,
                conn: Mutex::new(Arc::new(conn)),
            }),
        })
    }

    /// Creates the stream `stream` capturing `subject` if it does not exist (file storage, duplicate window 2 minutes); Ok if it exists already.
    pub async fn ensure_stream(&self, stream: &str, subject: &str) -> Result<(), NatsError> {
        check_stream_name(stream)?;
        check_token("subject", subject)?;
        let info_subject = format!("$JS.API.STREAM.INFO.{stream}");
        let reply = self.request(&info_subject, None, b"").await?;
        match api_answer(reply, &info_subject)? {
            Ok(_) => return Ok(()),
            Err(e) if e.code == 404 || e.err_code == 10059 => {}
            Err(e) => return Err(NatsError::Api(e.description)),
        }
        let config = serde_json::json!({
            "name": stream,
            "subjects": [subject],
            "storage": "file",
            "duplicate_window": 120_000_000_000u64,
        });
        let body = serde_json::to_vec(&config).map_err(|e| NatsError::Protocol(e.to_string()))?;
        let create_subject = format!("$JS.API.STREAM.CREATE.{stream}");
        let reply = self.request(&create_subject, None, &body).await?;
        match api_answer(reply, &create_subject)? {
            Ok(_) => Ok(()),
            Err(e) => Err(NatsError::Api(e.description)),
        }
    }

    /// Publishes `payload` to `subject` with header `Nats-Msg-Id: msg_id` and waits (up to the connect timeout) for JetStream's acknowledgement.
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        payload: &[u8],
    ) -> Result<PubAck, NatsError> {
        check_token("subject", subject)?;
        check_token("message id", msg_id)?;
        let reply = self.request(subject, Some(msg_id), payload).await?;
        match api_answer(reply, subject)? {
            Ok(value) => serde_json::from_value(value)
                .map_err(|e| NatsError::Protocol(format!("bad publish acknowledgement: {e}"))),
            Err(e) => Err(NatsError::Api(e.description)),
        }
    }

    /// Sends one request on the current connection, reconnecting first if it is gone.
    async fn request(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
    ) -> Result<Reply, NatsError> {
        let conn = self.current().await?;
        conn.request(subject, msg_id, payload, self.inner.timeout)
            .await
    }

    /// Returns the live connection, replacing a closed one by a new connection (one attempt).
    async fn current(&self) -> Result<Arc<Conn>, NatsError> {
        let mut guard = self.inner.conn.lock().await;
        if guard.is_closed() {
            let fresh = connect_any(&self.inner.servers, self.inner.timeout).await?;
            *guard = Arc::new(fresh);
        }
        Ok(Arc::clone(&guard))
    }
}

/// Turns a reply into its JSON body, or the JetStream error it carries.
fn api_answer(
    reply: Reply,
    subject: &str,
) -> Result<Result<serde_json::Value, ApiErrorBody>, NatsError> {
    match reply.status {
        Some(503) => return Err(NatsError::NoStream(subject.to_string())),
        Some(code) if reply.payload.is_empty() => {
            return Err(NatsError::Protocol(format!(
                "unexpected status {code} answering {subject}"
            )));
        }
        _ => {}
    }
    let answer: ApiAnswer = serde_json::from_slice(&reply.payload)
        .map_err(|e| NatsError::Protocol(format!("bad JSON answering {subject}: {e}")))?;
    match answer.error {
        Some(e) => Ok(Err(e)),
        None => Ok(Ok(answer.rest)),
    }
}

/// A JetStream API answer: an optional error, and the rest of the body.
#[derive(Deserialize)]
struct ApiAnswer {
    #[serde(default)]
    error: Option<ApiErrorBody>,
    #[serde(flatten)]
    rest: serde_json::Value,
}

/// The `error` object of a JetStream API answer.
#[derive(Deserialize)]
struct ApiErrorBody {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

/// Refuses empty values and values that could inject protocol text.
fn check_token(what: &str, value: &str) -> Result<(), NatsError> {
    if value.is_empty() {
        return Err(NatsError::Protocol(format!("empty {what}")));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(NatsError::Protocol(format!(
            "{what} {value:?} contains whitespace or control characters"
        )));
    }
    Ok(())
}

/// Refuses stream names that are not a single subject token.
fn check_stream_name(name: &str) -> Result<(), NatsError> {
    check_token("stream name", name)?;
    if name.contains(['.', '*', '>']) {
        return Err(NatsError::Protocol(format!(
            "stream name {name:?} contains '.', '*' or '>'"
        )));
    }
    Ok(())
}

/// Connects to the first server that completes the handshake.
async fn connect_any(servers: &[String], timeout: Duration) -> Result<Conn, NatsError> {
    if servers.is_empty() {
        return Err(NatsError::Connect("no servers configured".into()));
    }
    let mut errors = Vec::new();
    for server in servers {
        let addr = server_addr(server);
        match Conn::open(addr, timeout).await {
            Ok(conn) => return Ok(conn),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(NatsError::Connect(errors.join("; ")))
}

/// "nats://host:port/" or "host:port" to "host:port".
fn server_addr(server: &str) -> &str {
    let s = server.trim();
    let s = s.strip_prefix("nats://").unwrap_or(s);
    s.trim_end_matches('/')
}

/// 32 random hex digits (a fresh 128-bit id).
fn random_hex() -> String {
    crate::util::random_id().replace('-', "")
}

/// Position of the first "\r\n" in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Reads one protocol line during the handshake, keeping any bytes after it in `buf`.
async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<String, String> {
    loop {
        if let Some(i) = find_crlf(buf) {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            return Ok(line);
        }
        if buf.len() > MAX_LINE {
            return Err("protocol line too long".into());
        }
        buf.reserve(8192);
        match stream.read_buf(buf).await {
            Ok(0) => return Err("connection closed during handshake".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl Conn {
    /// Connects to `addr`, performs the handshake, subscribes the inbox and starts the task.
    async fn open(addr: &str, timeout: Duration) -> Result<Conn, String> {
        let handshake = async {
            let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let mut buf = Vec::with_capacity(8192);
            let line = read_line(&mut stream, &mut buf).await?;
            let info = line
                .strip_prefix("INFO ")
                .ok_or_else(|| format!("expected INFO, got {line:?}"))?;
            let info: serde_json::Value =
                serde_json::from_str(info).map_err(|e| format!("bad INFO: {e}"))?;
            if info.get("headers").and_then(|v| v.as_bool()) != Some(true) {
                return Err("server does not support headers".to_string());
            }
            let max_payload = info
                .get("max_payload")
                .and_then(|v| v.as_u64())
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(MAX_PAYLOAD)
                .min(MAX_PAYLOAD);
            let inbox = format!("_INBOX.{}.", random_hex());
            let hello = format!("CONNECT {CONNECT_JSON}\r\nSUB {inbox}* 1\r\nPING\r\n");
            stream
                .write_all(hello.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let line = read_line(&mut stream, &mut buf).await?;
                match line.split(' ').next().unwrap_or("") {
                    "PONG" => break,
                    "+OK" | "INFO" => {}
                    "PING" => stream
                        .write_all(b"PONG\r\n")
                        .await
                        .map_err(|e| e.to_string())?,
                    _ => return Err(format!("handshake refused: {line}")),
                }
            }
            Ok((stream, buf, inbox, max_payload))
        };
        let (stream, buf, inbox, max_payload) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| "timed out".to_string())??;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let pending: Pending = Arc::new(StdMutex::new(Some(HashMap::new())));
        tokio::spawn(run(stream, buf, rx, Arc::clone(&pending), inbox.clone()));
        Ok(Conn {
            tx,
            pending,
            inbox,
            next: AtomicU64::new(0),
            max_payload,
        })
    }

    /// True once the background task has ended (connection gone).
    fn is_closed(&self) -> bool {
        lock(&self.pending).is_none() || self.tx.is_closed()
    }

    /// Sends one request and waits up to `timeout` for its reply.
    async fn request(
        &self,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Reply, NatsError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let reply_to = format!("{}{id}", self.inbox);
        let frame = match msg_id {
            None => {
                if payload.len() > self.max_payload {
                    return Err(NatsError::Protocol("payload too large".into()));
                }
                let mut f = format!("PUB {subject} {reply_to} {}\r\n", payload.len()).into_bytes();
                f.extend_from_slice(payload);
                f.extend_from_slice(b"\r\n");
                f
            }
            Some(msg_id) => {
                let headers = format!("NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n");
                let total = headers.len() + payload.len();
                if total > self.max_payload {
                    return Err(NatsError::Protocol("payload too large".into()));
                }
                let mut f = format!(
                    "HPUB {subject} {reply_to} {} {total}\r\n{headers}",
                    headers.len()
                )
                .into_bytes();
                f.extend_from_slice(payload);
                f.extend_from_slice(b"\r\n");
                f
            }
        };
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(map) => {
                map.insert(id, tx);
            }
            None => return Err(NatsError::Closed),
        }
        let _guard = PendingGuard {
            pending: &self.pending,
            id,
        };
        let exchange = async {
            self.tx.send(frame).await.map_err(|_| NatsError::Closed)?;
            rx.await.map_err(|_| NatsError::Closed)?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| NatsError::Timeout)?
    }
}

/// Fails every waiting request with the error `make` builds.
fn fail_pending(pending: &Pending, close: bool, make: impl Fn() -> NatsError) {
    let drained: Vec<_> = {
        let mut guard = lock(pending);
        if close {
            guard
                .take()
                .map(|m| m.into_values().collect())
                .unwrap_or_default()
        } else {
            guard
                .as_mut()
                .map(|m| m.drain().map(|(_, v)| v).collect())
                .unwrap_or_default()
        }
    };
    for tx in drained {
        let _ = tx.send(Err(make()));
    }
}

/// The connection's background task: writes queued frames, reads and dispatches answers.
async fn run(
    stream: TcpStream,
    mut buf: Vec<u8>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    pending: Pending,
    inbox: String,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut out = Vec::new();
    let outcome: Result<(), NatsError> = async {
        loop {
            // Bytes left over from the handshake (or a previous read) first.
            let used = process(&buf, &inbox, &pending, &mut out)?;
            buf.drain(..used);
            if !out.is_empty() {
                write(&mut wr, &out).await?;
                out.clear();
            }
            if buf.capacity() - buf.len() < 8192 {
                buf.reserve(32 * 1024);
            }
            tokio::select! {
                read = rd.read_buf(&mut buf) => match read {
                    Ok(0) => return Err(NatsError::Closed),
                    Ok(_) => {}
                    Err(e) => return Err(NatsError::Io(e.to_string())),
                },
                frame = rx.recv() => match frame {
                    None => return Ok(()),
                    Some(frame) => {
                        let mut batch = frame;
                        while batch.len() < WRITE_BATCH {
                            match rx.try_recv() {
                                Ok(more) => batch.extend_from_slice(&more),
                                Err(_) => break,
                            }
                        }
                        write(&mut wr, &batch).await?;
                    }
                },
            }
        }
    }
    .await;
    match outcome {
        Ok(()) => fail_pending(&pending, true, || NatsError::Closed),
        Err(NatsError::Protocol(msg)) => {
            fail_pending(&pending, true, || NatsError::Protocol(msg.clone()))
        }
        Err(_) => fail_pending(&pending, true, || NatsError::Closed),
    }
}

/// Writes all of `bytes` to the socket.
async fn write(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), NatsError> {
    wr.write_all(bytes)
        .await
        .map_err(|e| NatsError::Io(e.to_string()))
}

/// Handles every complete operation at the start of `buf`; returns the bytes consumed.
/// Answers to PING are appended to `out`.
fn process(
    buf: &[u8],
    inbox: &str,
    pending: &Pending,
    out: &mut Vec<u8>,
) -> Result<usize, NatsError> {
    let mut pos = 0;
    loop {
        let rest = &buf[pos..];
        let Some(eol) = find_crlf(rest) else {
            if rest.len() > MAX_LINE {
                return Err(NatsError::Protocol("protocol line too long".into()));
            }
            return Ok(pos);
        };
        if eol > MAX_LINE {
            return Err(NatsError::Protocol("protocol line too long".into()));
        }
        let line = std::str::from_utf8(&rest[..eol])
            .map_err(|_| NatsError::Protocol("protocol line is not UTF-8".into()))?;
        let (op, args) = line.split_once(' ').unwrap_or((line, ""));
        match op.to_ascii_uppercase().as_str() {
            "MSG" | "HMSG" => {
                let with_headers = op.eq_ignore_ascii_case("HMSG");
                let parts: Vec<&str> = args.split_ascii_whitespace().collect();
                let (subject, hdr_len, total) = parse_msg_args(&parts, with_headers)?;
                if total > MAX_PAYLOAD {
                    return Err(NatsError::Protocol(format!(
                        "incoming message of {total} bytes exceeds {MAX_PAYLOAD}"
                    )));
                }
                let start = eol + 2;
                let end = start + total;
                if rest.len() < end + 2 {
                    return Ok(pos);
                }
                if &rest[end..end + 2] != b"\r\n" {
                    return Err(NatsError::Protocol("message not followed by CRLF".into()));
                }
                let status = parse_status(&rest[start..start + hdr_len]);
                let payload = rest[start + hdr_len..end].to_vec();
                deliver(subject, inbox, pending, Reply { status, payload });
                pos += end + 2;
            }
            "PING" => {
                out.extend_from_slice(b"PONG\r\n");
                pos += eol + 2;
            }
            "PONG" | "+OK" | "INFO" => pos += eol + 2,
            "-ERR" => {
                let msg = args.trim().trim_matches('\'').to_string();
                fail_pending(pending, false, || NatsError::Protocol(msg.clone()));
                pos += eol + 2;
            }
            _ => {
                return Err(NatsError::Protocol(format!(
                    "unexpected operation {op:?} from server"
                )));
            }
        }
    }
}

/// Parses `MSG`/`HMSG` arguments into (subject, header length, total length).
fn parse_msg_args<'a>(
    parts: &[&'a str],
    with_headers: bool,
) -> Result<(&'a str, usize, usize), NatsError> {
    let bad = || NatsError::Protocol(format!("malformed message line: {parts:?}"));
    let num = |s: &str| s.parse::<usize>().map_err(|_| bad());
    match (with_headers, parts) {
        (false, [subject, _sid, total] | [subject, _sid, _, total]) => {
            Ok((subject, 0, num(total)?))
        }
        (true, [subject, _sid, hdr, total] | [subject, _sid, _, hdr, total]) => {
            let (hdr, total) = (num(hdr)?, num(total)?);
            if hdr > total {
                return Err(bad());
            }
            Ok((subject, hdr, total))
        }
        _ => Err(bad()),
    }
}

/// The status code of a header block's first line (`NATS/1.0 503 ...`), if any.
fn parse_status(headers: &[u8]) -> Option<u16> {
    let first = headers.split(|&b| b == b'\r').next()?;
    let first = std::str::from_utf8(first).ok()?;
    first
        .strip_prefix("NATS/1.0")?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Hands a reply to the request waiting on its inbox subject, if any is.
fn deliver(subject: &str, inbox: &str, pending: &Pending, reply: Reply) {
    let Some(id) = subject
        .strip_prefix(inbox)
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return;
    };
    let waiter = lock(pending).as_mut().and_then(|m| m.remove(&id));
    if let Some(tx) = waiter {
        let _ = tx.send(Ok(reply));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashSet;
    use tokio::net::TcpListener;
    use tokio::task::AbortHandle;

    const NATS: &str = "nats://127.0.0.1:4222";
    const T: Duration = Duration::from_secs(5);

    impl JetStream {
        /// Deletes a stream the tests created.
        async fn delete_stream(&self, stream: &str) -> Result<(), NatsError> {
            let subject = format!("$JS.API.STREAM.DELETE.{stream}");
            let reply = self.request(&subject, None, b"").await?;
            match api_answer(reply, &subject)? {
                Ok(_) => Ok(()),
                Err(e) => Err(NatsError::Api(e.description)),
            }
        }
    }

    /// A unique stream name and a unique subject it captures.
    fn names() -> (String, String) {
        let suffix = random_hex();
        (format!("TEST_{suffix}"), format!("test.{suffix}.events"))
    }

    async fn js() -> JetStream {
        match JetStream::connect(&[NATS.to_string()], T).await {
            Ok(js) => js,
            Err(e) => panic!("NATS at {NATS} not reachable: {e}"),
        }
    }

    #[tokio::test]
    async fn ensure_stream_is_idempotent_and_publish_acks_in_order() {
        let js = js().await;
        let (stream, subject) = names();
        js.ensure_stream(&stream, &subject).await.unwrap();
        js.ensure_stream(&stream, &subject).await.unwrap();
        let a = js.publish(&subject, "id-1", b"one").await.unwrap();
        let b = js.publish(&subject, "id-2", b"two").await.unwrap();
        assert_eq!(
            (a.stream.as_str(), a.seq, a.duplicate),
            (stream.as_str(), 1, false)
        );
        assert_eq!((b.seq, b.duplicate), (2, false));
        js.delete_stream(&stream).await.unwrap();
    }

    #[tokio::test]
    async fn same_msg_id_is_duplicate() {
        let js = js().await;
        let (stream, subject) = names();
        js.ensure_stream(&stream, &subject).await.unwrap();
        let a = js.publish(&subject, "dup", b"x").await.unwrap();
        let b = js.publish(&subject, "dup", b"x").await.unwrap();
        assert!(!a.duplicate);
        assert!(b.duplicate);
        assert_eq!(a.seq, b.seq);
        js.delete_stream(&stream).await.unwrap();
    }

    #[tokio::test]
    async fn overlapping_stream_is_an_api_error() {
        let js = js().await;
        let (stream, subject) = names();
        js.ensure_stream(&stream, &subject).await.unwrap();
        let (other, _) = names();
        let err = js.ensure_stream(&other, &subject).await.unwrap_err();
        assert!(
            matches!(err, NatsError::Api(ref d) if !d.is_empty()),
            "{err:?}"
        );
        js.delete_stream(&stream).await.unwrap();
    }

    #[tokio::test]
    async fn no_stream_on_subject() {
        let js = js().await;
        let (_, subject) = names();
        let err = js.publish(&subject, "x", b"x").await.unwrap_err();
        assert!(
            matches!(err, NatsError::NoStream(ref s) if *s == subject),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn concurrent_publishes_get_distinct_acks() {
        let js = js().await;
        let (stream, subject) = names();
        js.ensure_stream(&stream, &subject).await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let js = js.clone();
                let subject = subject.clone();
                tokio::spawn(async move { js.publish(&subject, &format!("m{i}"), b"p").await })
            })
            .collect();
        let mut seqs = HashSet::new();
        for t in tasks {
            let ack = t.await.unwrap().unwrap();
            assert!(!ack.duplicate);
            assert!(seqs.insert(ack.seq));
        }
        assert_eq!(seqs, (1..=50).collect::<HashSet<u64>>());
        js.delete_stream(&stream).await.unwrap();
    }

    #[tokio::test]
    async fn injection_is_refused_without_sending() {
        let js = js().await;
        let (stream, subject) = names();
        js.ensure_stream(&stream, &subject).await.unwrap();
        let bad_subject = format!("{subject} x");
        let err = js.publish(&bad_subject, "a", b"x").await.unwrap_err();
        assert!(matches!(err, NatsError::Protocol(_)), "{err:?}");
        let err = js
            .publish(&subject, "a\r\nPUB x 1\r\n", b"x")
            .await
            .unwrap_err();
        assert!(matches!(err, NatsError::Protocol(_)), "{err:?}");
        let err = js.ensure_stream("a.b", &subject).await.unwrap_err();
        assert!(matches!(err, NatsError::Protocol(_)), "{err:?}");
        // Nothing was stored and the connection is still healthy.
        let ack = js.publish(&subject, "a", b"x").await.unwrap();
        assert_eq!(ack.seq, 1);
        js.delete_stream(&stream).await.unwrap();
    }

    #[tokio::test]
    async fn closed_port_fails_with_connect() {
        let err = JetStream::connect(&["127.0.0.1:1".to_string()], T)
            .await
            .unwrap_err();
        assert!(matches!(err, NatsError::Connect(_)), "{err:?}");
    }

    #[tokio::test]
    async fn falls_back_to_next_server() {
        let servers = ["127.0.0.1:1".to_string(), NATS.to_string()];
        let js = JetStream::connect(&servers, T).await.unwrap();
        let (_, subject) = names();
        let err = js.publish(&subject, "x", b"x").await.unwrap_err();
        assert!(matches!(err, NatsError::NoStream(_)), "{err:?}");
    }

    /// A TCP proxy to the real server whose connections the test can cut.
    async fn proxy() -> (String, Arc<StdMutex<Vec<AbortHandle>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handles = Arc::new(StdMutex::new(Vec::new()));
        let h = Arc::clone(&handles);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect("127.0.0.1:4222").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                h.lock().unwrap().push(task.abort_handle());
            }
        });
        (addr, handles)
    }

    #[tokio::test]
    async fn reconnects_after_connection_drop() {
        let (addr, handles) = proxy().await;
        let js = JetStream::connect(&[addr], T).await.unwrap();
        let (stream, subject) = names();
        js.ensure_stream(&stream, &subject).await.unwrap();
        assert_eq!(js.publish(&subject, "r1", b"x").await.unwrap().seq, 1);
        for h in handles.lock().unwrap().drain(..) {
            h.abort();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(js.publish(&subject, "r2", b"x").await.unwrap().seq, 2);
        js.delete_stream(&stream).await.unwrap();
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"INFO {\"headers\":true}\r\n").await.unwrap();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if buf[..n].windows(4).any(|w| w == b"PING") {
                            s.write_all(b"PONG\r\n").await.unwrap();
                        }
                    }
                }
            }
        });
        let js = JetStream::connect(&[addr], Duration::from_millis(300))
            .await
            .unwrap();
        let err = js.publish("a.b", "x", b"x").await.unwrap_err();
        assert!(matches!(err, NatsError::Timeout), "{err:?}");
    }

    #[test]
    fn parses_status_and_msg_lines() {
        assert_eq!(parse_status(b"NATS/1.0 503\r\n\r\n"), Some(503));
        assert_eq!(parse_status(b"NATS/1.0\r\nA: b\r\n\r\n"), None);
        let pending: Pending = Arc::new(StdMutex::new(Some(HashMap::new())));
        let mut out = Vec::new();
        let used = process(
            b"PING\r\n+OK\r\nMSG a 1 5\r\nhel",
            "_INBOX.x.",
            &pending,
            &mut out,
        )
        .unwrap();
        assert_eq!(used, 11);
        assert_eq!(out, b"PONG\r\n");
        let huge = format!("MSG _INBOX.x.1 1 {}\r\n", MAX_PAYLOAD + 1);
        assert!(matches!(
            process(huge.as_bytes(), "_INBOX.x.", &pending, &mut out),
            Err(NatsError::Protocol(_))
        ));
    }
}
