//! Our own accept loop on hyper, for every listener: each connection is counted against the
//! listener's and its source's caps at accept, and watched so that a slow header, a slow
//! request, an answer nobody reads and an idle kept-alive connection all end on time.
//!
//! hyper 1.x's own `header_read_timeout` starts its clock whenever the connection waits for a
//! head, which on a kept-alive connection is right after the previous answer: it cannot tell an
//! idle connection from one that trickles its header. So hyper's is switched off and each
//! connection's [`Phase`] is tracked here instead, from what its socket reads and writes and
//! from where its request is.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::client_addr::source_key;
use super::metrics::{Cap, ListenerKind, Metrics, Timeout};
use super::response::RETRY_AFTER_SECS;
use crate::config::{ConnectionLimits, IpNet};

/// Pause after an accept error such as running out of file descriptors, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// What one listener is served with.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    /// The listener's label in the metrics.
    pub kind: ListenerKind,
    /// Timeouts and caps.
    pub limits: ConnectionLimits,
    /// Peers exempt from the per-source cap.
    pub trusted_proxies: Arc<[IpNet]>,
    /// Where refusals and timeouts are counted.
    pub metrics: Arc<Metrics>,
}

/// Serves `router` on `listener` until `stop` turns true: then stops accepting, closes
/// connections between requests, lets requests in flight finish, and returns once every
/// connection has ended (the caller bounds how long that may take).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let caps = Arc::new(Caps::new(&options));
    let options = Arc::new(options);
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                tracing::warn!(listener = options.kind.name(), "accept failed: {e}");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        match caps.admit(peer.ip()) {
            Ok(slot) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    Arc::clone(&options),
                    slot,
                    stop.clone(),
                    alive.clone(),
                ));
            }
            Err(cap) => {
                options.metrics.connection_refused(options.kind, cap);
                tracing::debug!(listener = options.kind.name(), %peer, ?cap, "connection refused");
                drop(stream);
            }
        }
    }
    drop(listener);
    drop(alive);
    // `None` once the last connection task has dropped its sender.
    let _ = all_ended.recv().await;
    Ok(())
}

/// Accept errors that concern one connection only (it was reset before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The open connections of one listener, in all and per source.
#[derive(Debug)]
struct Caps {
    kind: ListenerKind,
    max_total: usize,
    max_per_source: usize,
    trusted: Arc<[IpNet]>,
    metrics: Arc<Metrics>,
    open: Mutex<OpenCount>,
}

#[derive(Debug, Default)]
struct OpenCount {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl Caps {
    fn new(o: &ServeOptions) -> Self {
        Self {
            kind: o.kind,
            max_total: o.limits.max_connections,
            max_per_source: o.limits.max_connections_per_source,
            trusted: Arc::clone(&o.trusted_proxies),
            metrics: Arc::clone(&o.metrics),
            open: Mutex::new(OpenCount::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OpenCount> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `ip`, or the cap it would exceed. Never waits.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Cap> {
        let source = (!self.trusted.iter().any(|net| net.contains(ip))).then(|| source_key(ip));
        let mut open = self.lock();
        if open.total >= self.max_total {
            return Err(Cap::Listener);
        }
        if let Some(key) = source {
            let n = open.per_source.entry(key).or_insert(0);
            if *n >= self.max_per_source {
                return Err(Cap::Source);
            }
            *n += 1;
        }
        open.total += 1;
        drop(open);
        self.metrics.connection_open(self.kind, 1);
        Ok(Slot {
            caps: Arc::clone(self),
            source,
        })
    }
}

/// One admitted connection's place under the caps; released when dropped, on every path.
#[derive(Debug)]
struct Slot {
    caps: Arc<Caps>,
    source: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(key) = self.source
            && let Some(n) = open.per_source.get_mut(&key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.per_source.remove(&key);
            }
        }
        drop(open);
        self.caps.metrics.connection_open(self.caps.kind, -1);
    }
}

/// Where a connection is between its requests, and since when: what decides its deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request header (or the rest of it) since then.
    Head(Instant),
    /// A request is being handled; its own deadline answers it.
    Handling,
    /// Sending an answer; the client last took some of it then.
    Answering(Instant),
    /// Kept alive between requests since then.
    Idle(Instant),
}

/// A connection's phase, shared by its socket, its request handler and its watchdog (all on
/// the connection's one task, so the lock is never contended).
#[derive(Debug, Clone)]
struct PhaseCell(Arc<Mutex<Phase>>);

impl PhaseCell {
    fn new(phase: Phase) -> Self {
        Self(Arc::new(Mutex::new(phase)))
    }

    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.lock() = phase;
    }

    /// Bytes arrived: an idle connection starts a request header now.
    fn read_some(&self) {
        let mut p = self.lock();
        if matches!(*p, Phase::Idle(_)) {
            *p = Phase::Head(Instant::now());
        }
    }

    /// Bytes left: an answer makes progress.
    fn wrote_some(&self) {
        let mut p = self.lock();
        if matches!(*p, Phase::Answering(_)) {
            *p = Phase::Answering(Instant::now());
        }
    }

    /// The answer's body is done (sent, or dropped): the connection is idle from now.
    fn answered(&self) {
        let mut p = self.lock();
        if matches!(*p, Phase::Answering(_)) {
            *p = Phase::Idle(Instant::now());
        }
    }

    /// No request is in flight: nothing is lost by closing now.
    fn between_requests(&self) -> bool {
        matches!(*self.lock(), Phase::Head(_) | Phase::Idle(_))
    }

    /// When the connection is closed if nothing changes, and which timeout that is.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Timeout)> {
        match *self.lock() {
            Phase::Head(since) => Some((since + limits.header_read_timeout, Timeout::Header)),
            Phase::Handling => None,
            Phase::Answering(progress) => Some((progress + limits.request_timeout, Timeout::Send)),
            Phase::Idle(since) => Some((since + limits.idle_timeout, Timeout::Idle)),
        }
    }
}

/// The socket, reporting reads and writes to the connection's phase.
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    phase: PhaseCell,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.phase.read_some();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.phase.wrote_some();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.phase.wrote_some();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A request body that notes when it has been received whole (a late request whose body is
/// still missing is the client's fault: 408; otherwise ours: 503).
#[derive(Debug)]
struct RequestBody {
    inner: Incoming,
    complete: Arc<AtomicBool>,
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.complete.store(true, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer body that turns the connection idle once it is sent (or dropped).
#[derive(Debug)]
struct AnswerBody {
    inner: Body,
    phase: PhaseCell,
}

impl hyper::body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        self.phase.answered();
    }
}

/// The per-connection hyper service: the router with the peer's address, under the request
/// deadline.
#[derive(Debug, Clone)]
struct Handler {
    router: Router,
    peer: SocketAddr,
    phase: PhaseCell,
    options: Arc<ServeOptions>,
}

impl hyper::service::Service<Request<Incoming>> for Handler {
    type Response = Response<AnswerBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        // hyper calls this once the header is in: the header phase is over.
        self.phase.set(Phase::Handling);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let complete = Arc::new(AtomicBool::new(req.body().is_end_stream()));
        let req = req.map(|inner| RequestBody {
            inner,
            complete: Arc::clone(&complete),
        });
        let mut router = self.router.clone();
        let handling = tower_service::Service::call(&mut router, req);
        let phase = self.phase.clone();
        let options = Arc::clone(&self.options);
        Box::pin(async move {
            let answer = match tokio::time::timeout(options.limits.request_timeout, handling).await
            {
                Ok(Ok(answer)) => answer,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    options
                        .metrics
                        .connection_timed_out(options.kind, Timeout::Request);
                    timed_out(complete.load(Ordering::Relaxed))
                }
            };
            phase.set(Phase::Answering(Instant::now()));
            Ok(answer.map(|inner| AnswerBody { inner, phase }))
        })
    }
}

/// The answer to a request not handled within `request_timeout`; the connection closes after it.
/// 408 when the client had not sent its whole body, else 503 with `Retry-After`.
fn timed_out(body_complete: bool) -> Response<Body> {
    let (status, error, text) = if body_complete {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "request_timeout: the request was not handled in time; retry later",
        )
    } else {
        (
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request",
            "request_timeout: the request body was not received in time",
        )
    };
    let body = json!({ "error": error, "error_description": text }).to_string();
    let mut answer = Response::new(Body::from(body));
    *answer.status_mut() = status;
    let h = answer.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if body_complete {
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    answer
}

/// What ends a turn of a connection's watch.
enum Event {
    Ended(Result<(), hyper::Error>),
    Stop,
    Expired(Timeout),
}

/// Serves one connection until it ends, a deadline of its phase passes, or shutdown closes it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    options: Arc<ServeOptions>,
    _slot: Slot,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<()>,
) {
    let limits = options.limits;
    let phase = PhaseCell::new(Phase::Head(Instant::now()));
    let io = TokioIo::new(Watched {
        stream,
        phase: phase.clone(),
    });
    let handler = Handler {
        router,
        peer,
        phase: phase.clone(),
        options: Arc::clone(&options),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let mut conn = std::pin::pin!(builder.serve_connection(io, handler));
    let mut timer = std::pin::pin!(tokio::time::sleep(limits.header_read_timeout));
    let mut stop_signal = std::pin::pin!(stop.wait_for(|s| *s));
    let mut stopping = false;
    loop {
        // Polled together so the deadline is re-read right after the connection made progress
        // (its phase only changes while it is polled).
        let event = poll_fn(|cx| {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(r));
            }
            if !stopping && stop_signal.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            if let Some((at, why)) = phase.deadline(&limits) {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Expired(why));
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Ended(Ok(())) => return,
            Event::Ended(Err(e)) => {
                tracing::debug!(listener = options.kind.name(), %peer, "connection ended: {e}");
                return;
            }
            Event::Expired(why) => {
                options.metrics.connection_timed_out(options.kind, why);
                tracing::debug!(listener = options.kind.name(), %peer, ?why, "connection timed out");
                return;
            }
            Event::Stop => {
                stopping = true;
                if phase.between_requests() {
                    return;
                }
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_has_its_own_deadline() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            ..ConnectionLimits::default()
        };
        let t0 = Instant::now();
        let cell = PhaseCell::new(Phase::Head(t0));
        let due = |c: &PhaseCell| c.deadline(&limits).map(|(at, why)| (at - t0, why));
        assert_eq!(due(&cell), Some((Duration::from_secs(1), Timeout::Header)));
        cell.wrote_some();
        cell.answered();
        assert_eq!(
            due(&cell),
            Some((Duration::from_secs(1), Timeout::Header)),
            "only an answer's progress moves its deadline"
        );
        cell.set(Phase::Handling);
        assert_eq!(due(&cell), None, "the request's own timer answers it");
        assert!(!cell.between_requests());
        cell.read_some();
        assert!(
            matches!(*cell.lock(), Phase::Handling),
            "body bytes change nothing"
        );
        cell.set(Phase::Answering(t0));
        assert_eq!(due(&cell), Some((Duration::from_secs(2), Timeout::Send)));
        cell.wrote_some();
        assert!(due(&cell).is_some_and(|(d, _)| d >= Duration::from_secs(2)));
        cell.answered();
        assert!(matches!(*cell.lock(), Phase::Idle(_)));
        assert_eq!(due(&cell).map(|(_, why)| why), Some(Timeout::Idle));
        assert!(cell.between_requests());
        cell.read_some();
        assert_eq!(
            due(&cell).map(|(_, why)| why),
            Some(Timeout::Header),
            "a byte after an idle spell starts a header"
        );
    }

    fn caps(total: usize, per_source: usize, trusted: &[&str]) -> Arc<Caps> {
        let limits = ConnectionLimits {
            max_connections: total,
            max_connections_per_source: per_source,
            ..ConnectionLimits::default()
        };
        Arc::new(Caps::new(&ServeOptions {
            kind: ListenerKind::Public,
            limits,
            trusted_proxies: trusted
                .iter()
                .map(|t| t.parse().expect("cidr"))
                .collect::<Vec<_>>()
                .into(),
            metrics: Arc::new(Metrics::default()),
        }))
    }

    #[test]
    fn slots_count_against_both_caps_and_free_them_when_dropped() {
        let c = caps(3, 2, &["10.0.0.0/8"]);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let one = c.admit(a).expect("first");
        let two = c.admit(a).expect("second");
        assert_eq!(c.admit(a).err(), Some(Cap::Source));
        let three = c.admit(b).expect("another source");
        assert_eq!(c.admit(b).err(), Some(Cap::Listener));
        drop(one);
        let _again = c.admit(a).expect("a slot came free");
        drop((two, three));
        assert_eq!(c.lock().total, 1);
        assert_eq!(c.lock().per_source.len(), 1, "empty sources are forgotten");
    }

    #[test]
    fn trusted_proxies_pass_the_source_cap_but_not_the_listener_cap() {
        let c = caps(3, 1, &["10.0.0.0/8"]);
        let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
        let slots: Vec<_> = (0..3).map(|_| c.admit(proxy).expect("exempt")).collect();
        assert_eq!(c.admit(proxy).err(), Some(Cap::Listener));
        drop(slots);
        assert_eq!(c.lock().total, 0);
    }
}
