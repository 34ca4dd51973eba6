//! The webhook target: an in-process axum server on loopback that answers `204` to every
//! `POST` and records its arrival time, `webhook-id` header and body.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One request as the webhook received it.
pub(crate) struct Arrival {
    /// When the handler ran.
    pub(crate) at: Instant,
    /// The `webhook-id` header (empty when missing).
    pub(crate) id: String,
    /// The JSON event.
    pub(crate) body: Bytes,
}

type Log = Arc<Mutex<Vec<Arrival>>>;

/// The running webhook server.
pub(crate) struct Webhook {
    /// Where the target posts.
    pub(crate) url: String,
    log: Log,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn receive(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut log) = log.lock() {
        log.push(Arrival { at, id, body });
    }
    StatusCode::NO_CONTENT
}

impl Webhook {
    /// Binds 127.0.0.1 on a free port and serves `POST /hook`.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the webhook server")?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let log: Log = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&log));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self {
            url,
            log,
            stop,
            task,
        })
    }

    /// Requests received so far.
    pub(crate) fn count(&self) -> usize {
        self.log.lock().map_or(0, |l| l.len())
    }

    /// Stops the server; returns every arrival.
    pub(crate) async fn finish(self) -> Vec<Arrival> {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
        self.log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}
