//! Delivery: every accepted logout reaches the applications that must end the session. The
//! intents come from the append-only log (a durable position per target, `store::deliveries`),
//! one worker per target attempts them (`dispatch.rs`) through a signed webhook, a back-channel
//! relay or NATS JetStream (`sender.rs`, `http_target.rs`, `nats.rs`), and `/metrics` shows
//! each target's attempts, backlog and latency (`metrics.rs`).

mod dispatch;
pub mod event;
pub mod http_target;
pub mod metrics;
pub mod nats;
mod sender;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

pub use dispatch::backoff_ms;
pub use metrics::DeliveryMetrics;

use crate::clock::SharedClock;
use crate::config::DeliverySettings;
use crate::store::AuditStore;

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A target's HTTP client could not be built.
    #[error("delivery target {target}: HTTP client: {source}")]
    Client {
        /// The target.
        target: String,
        /// The cause.
        source: reqwest::Error,
    },
}

/// The configured targets, ready to start: one worker each.
#[derive(Debug)]
pub struct Deliveries {
    targets: Vec<(Arc<DeliverySettings>, Arc<sender::Sender>)>,
    metrics: Arc<DeliveryMetrics>,
}

/// The running workers; [`Running::stop`] ends them.
#[derive(Debug)]
pub struct Running {
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

impl Deliveries {
    /// Builds each target's sender (the HTTP clients; NATS connects at its first attempt).
    pub fn new(targets: &[DeliverySettings]) -> Result<Self, DeliveryError> {
        let built = targets
            .iter()
            .map(|t| {
                let sender = sender::Sender::new(t).map_err(|source| DeliveryError::Client {
                    target: t.name.clone(),
                    source,
                })?;
                Ok((Arc::new(t.clone()), Arc::new(sender)))
            })
            .collect::<Result<Vec<_>, DeliveryError>>()?;
        let metrics = Arc::new(DeliveryMetrics::new(
            targets.iter().map(|t| t.name.as_str()),
        ));
        Ok(Self {
            targets: built,
            metrics,
        })
    }

    /// The counters `/metrics` renders.
    pub fn metrics(&self) -> Arc<DeliveryMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Starts one worker per target on the current runtime.
    pub fn start(&self, store: &AuditStore, clock: &SharedClock) -> Running {
        let (stop, stopped) = watch::channel(false);
        let owner = lease_owner();
        // Taken now, before the listeners serve: a new target starts after every record
        // committed so far, and no logout acknowledged from here on can fall before it.
        let head = *store.committed().borrow();
        let mut workers = JoinSet::new();
        for (target, sender) in &self.targets {
            let Some(metrics) = self.metrics.target(&target.name) else {
                continue;
            };
            let worker = dispatch::Worker::new(
                Arc::clone(target),
                Arc::clone(sender),
                store.clone(),
                Arc::clone(clock),
                metrics,
                owner.clone(),
            );
            workers.spawn(worker.run(head, stopped.clone()));
        }
        Running { stop, workers }
    }
}

impl Running {
    /// Stops every worker: attempts in flight get a moment to end, their results are stored
    /// and the leases still held are released.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.workers.join_next().await.is_some() {}
    }
}

/// This process's name on the leases it takes: host, process id and a random part, so two
/// replicas (or a restarted process) never share one.
fn lease_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let random = crate::util::random_id();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}
