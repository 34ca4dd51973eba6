//! Builds the application from validated settings, binds its listener (port 0 in tests) and
//! runs it until a shutdown signal, then drains requests and the audit writer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::ConsoleInfo;
use crate::api::{self, ApiState};
use crate::clock::SharedClock;
use crate::config::{EdgeSettings, IssuerSettings, Settings};
use crate::delivery::{Deliveries, DeliveryError, DeliveryMetrics};
use crate::http::admission::{Admission, FLUSH_EVERY, Flusher};
use crate::http::server::{ServeOptions, serve};
use crate::http::{AppState, ListenerKind, Metrics, MetricsState, metrics_router, router};
use crate::keys::KeyArchive;
use crate::keys::KeyRegistry;
use crate::logout_token::Validator;
use crate::store::{AuditStore, Note, NoteKind, StoreError, WriterSettings, WriterTask};

/// How long shutdown may take in all (requests in flight, then the writer's last batch).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened or migrated.
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A delivery target could not be prepared.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// The HTTP client for key fetches could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A built, bound application, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    api: Option<(TcpListener, ApiState)>,
    metrics_listener: Option<TcpListener>,
    edge: EdgeSettings,
    state: AppState,
    store: AuditStore,
    writer: WriterTask,
    checkpoints: Option<crate::config::CheckpointSettings>,
    retention: Option<Duration>,
    database: String,
    deliveries: Deliveries,
}

impl Application {
    /// Opens the store, prepares the key caches and binds the listener.
    pub async fn build(settings: Settings, clock: SharedClock) -> Result<Self, StartupError> {
        let writer_settings = WriterSettings {
            timeout: settings.store_timeout,
            replay_validity: (settings.issuers.iter())
                .map(IssuerSettings::validity_after_acceptance)
                .max()
                .unwrap_or_default(),
        };
        let deliveries = Deliveries::new(&settings.deliveries)?;
        let (store, writer) = AuditStore::open(&settings.database, writer_settings).await?;
        let issuers = Arc::new(settings.issuers.clone());
        let archive: Arc<dyn KeyArchive> = Arc::new(store.clone());
        let keys = Arc::new(
            KeyRegistry::new(&settings.issuers, settings.keys.clone())?.with_archive(archive),
        );
        let listener = bind(settings.listen).await?;
        let api_listener = if settings.api.tokens.is_empty() {
            tracing::info!(
                "query API not started: no API token configured (api_tokens in the config file \
                 or LOGOUT_LEDGER_API_TOKENS; make one with `logout-ledger api-token new --label NAME`)"
            );
            None
        } else {
            Some(bind(settings.api.listen).await?)
        };
        let api_addr = api_listener.as_ref().and_then(|l| l.local_addr().ok());
        let metrics_listener = match settings.edge.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        store
            .note(Note {
                kind: NoteKind::System,
                action: "start".into(),
                details: summary(&settings, listener.local_addr().ok(), api_addr),
                at: clock.now_millis(),
            })
            .await?;
        let metrics = Arc::new(Metrics::default());
        let api = api_listener.map(|l| {
            let state = ApiState::new(
                store.clone(),
                settings.api.tokens.clone(),
                settings.issuers.iter().map(|i| i.issuer.clone()).collect(),
                Arc::clone(&clock),
                Arc::clone(&metrics),
            )
            .with_console(ConsoleInfo {
                log_key: (settings.checkpoints.as_ref()).map(|c| c.signer.verifier_key()),
                delivery_targets: settings.deliveries.iter().map(|d| d.name.clone()).collect(),
            });
            (l, state)
        });
        let state = AppState {
            validator: Validator::new(issuers, Arc::clone(&keys)),
            store: store.clone(),
            keys,
            clock,
            metrics,
            admission: Arc::new(Admission::new(&settings.edge)),
        };
        Ok(Self {
            listener,
            api,
            metrics_listener,
            edge: settings.edge.clone(),
            state,
            store,
            writer,
            checkpoints: settings.checkpoints.clone(),
            retention: settings.retention,
            database: settings.database.clone(),
            deliveries,
        })
    }

    /// The bound address (the real port when built with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The query API's bound address, when it runs (a token is configured).
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The `--metrics-listen` listener's bound address, when one is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The shared counters (tests read the store-failure count).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.state.metrics)
    }

    /// Serves until `shutdown` resolves, then stops accepting, finishes requests in flight,
    /// commits the writer's last batch and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            listener,
            api,
            metrics_listener,
            edge,
            state,
            store,
            writer,
            checkpoints,
            retention,
            database,
            deliveries,
        } = self;
        let clock = Arc::clone(&state.clock);
        let background =
            Background::spawn(&state, &store, checkpoints.clone(), retention, database);
        let delivering = deliveries.start(&store, &clock);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let listeners = Listeners {
            public: listener,
            api,
            metrics: metrics_listener,
            deliveries: deliveries.metrics(),
        };
        let servers = listeners.serve(edge, state, stop_rx);
        let result = until_drained(servers, shutdown, stop_tx).await;
        let maintainer = background.stop().await;
        delivering.stop().await;
        let stop = Note {
            kind: NoteKind::System,
            action: "stop".into(),
            details: serde_json::json!({ "clean": result.is_ok() }),
            at: clock.now_millis(),
        };
        if let Err(e) = store.note(stop).await {
            tracing::error!("stop not recorded: {e}");
        }
        if let Some(c) = &checkpoints
            && let Err(e) = crate::ledger::checkpoint::write_one(&store, c, &clock).await
        {
            tracing::error!("final checkpoint not written: {e}");
        }
        drop(store);
        let _ = maintainer.await;
        // The router and every store handle are gone: the writer commits what is queued and ends.
        if tokio::time::timeout(Duration::from_secs(2), writer.finished())
            .await
            .is_err()
        {
            tracing::error!("audit writer did not finish in time");
        }
        result
    }
}

/// The bound listeners: the public one, and the API's and the metrics' when configured.
#[derive(Debug)]
struct Listeners {
    public: TcpListener,
    api: Option<(TcpListener, ApiState)>,
    metrics: Option<TcpListener>,
    deliveries: Arc<DeliveryMetrics>,
}

impl Listeners {
    /// Serves every listener until `stop` turns true and their connections have ended.
    fn serve(
        self,
        edge: EdgeSettings,
        state: AppState,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = std::io::Result<()>> {
        let metrics = Arc::clone(&state.metrics);
        let trusted_proxies: Arc<[_]> = edge.trusted_proxies.into();
        let options = |kind| ServeOptions {
            kind,
            limits: edge.connections,
            trusted_proxies: Arc::clone(&trusted_proxies),
            metrics: Arc::clone(&metrics),
        };
        let metrics_state = MetricsState {
            metrics: Arc::clone(&state.metrics),
            keys: Arc::clone(&state.keys),
            deliveries: self.deliveries,
        };
        let public = serve(
            self.public,
            router(state),
            options(ListenerKind::Public),
            stop.clone(),
        );
        let api_server = optional(self.api.map(|(listener, state)| {
            let app = api::router(state, metrics_router(metrics_state.clone()));
            serve(listener, app, options(ListenerKind::Api), stop.clone())
        }));
        let metrics_server = optional(self.metrics.map(|listener| {
            let app = metrics_router(metrics_state);
            serve(listener, app, options(ListenerKind::Metrics), stop)
        }));
        async {
            let (a, b, c) = tokio::join!(public, api_server, metrics_server);
            a.and(b).and(c)
        }
    }
}

/// Runs `servers` until `shutdown` resolves, then tells them to stop accepting (`stop`) and
/// waits for requests in flight, [`SHUTDOWN_GRACE`] at most.
async fn until_drained(
    servers: impl Future<Output = std::io::Result<()>>,
    shutdown: impl Future<Output = ()>,
    stop: tokio::sync::watch::Sender<bool>,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stop.send(true);
        let _ = stopping_tx.send(());
        // Kept until the servers are done, so no receiver sees the channel closed early.
        std::future::pending::<()>().await;
    };
    let server = async {
        tokio::select! {
            r = servers => r,
            () = signal => Ok(()),
        }
    };
    let deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r,
        () = deadline => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
            Ok(())
        }
    }
}

/// The tasks beside the listeners: key-set maintenance, the suppressed-rejection flusher, and
/// the periodic checkpoints and retention runs when configured.
struct Background {
    flusher: Flusher,
    maintainer: tokio::task::JoinHandle<()>,
    periodic: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Starts them.
    fn spawn(
        state: &AppState,
        store: &AuditStore,
        checkpoints: Option<crate::ledger::checkpoint::CheckpointSettings>,
        retention: Option<Duration>,
        database: String,
    ) -> Self {
        let clock = &state.clock;
        let admission = Arc::clone(&state.admission);
        let flusher = Flusher::spawn(admission, store.clone(), Arc::clone(clock), FLUSH_EVERY);
        let maintainer = tokio::spawn(Arc::clone(&state.keys).maintain());
        let retention =
            retention.map(|keep| tokio::spawn(run_retention(database, keep, Arc::clone(clock))));
        let checkpoints = checkpoints.map(|c| {
            tokio::spawn(crate::ledger::checkpoint::run_periodically(
                store.clone(),
                c,
                Arc::clone(clock),
            ))
        });
        Self {
            flusher,
            maintainer,
            periodic: [checkpoints, retention].into_iter().flatten().collect(),
        }
    }

    /// Once requests are done: stops key maintenance, writes the last suppressed counts (before
    /// the stop record) and ends the periodic tasks. The key maintainer is returned aborted,
    /// to be awaited once the last store handle is dropped.
    async fn stop(self) -> tokio::task::JoinHandle<()> {
        self.maintainer.abort();
        self.flusher.finish().await;
        for task in self.periodic {
            task.abort();
        }
        self.maintainer
    }
}

/// How often the retention task looks for records past their keep time.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Removes records older than `keep`, hourly, through the same path as `logout-ledger purge`.
async fn run_retention(database: String, keep: Duration, clock: crate::clock::SharedClock) {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = clock.now_millis();
        match crate::store::purge(&database, now.saturating_sub(keep_ms), false, now).await {
            Ok(p) if p.record_id.is_some() => {
                tracing::info!(records = p.plan.records, "retention run removed records")
            }
            Ok(_) => {}
            Err(e) => tracing::error!("retention run failed: {e}"),
        }
        tokio::time::sleep(RETENTION_EVERY).await;
    }
}

/// Runs a server that may not be configured.
async fn optional(
    server: Option<impl Future<Output = std::io::Result<()>>>,
) -> std::io::Result<()> {
    match server {
        Some(s) => s.await,
        None => Ok(()),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

/// The configuration summary recorded at start: every rule, no secret (API token labels, not
/// their digests).
pub fn summary(
    settings: &Settings,
    bound: Option<SocketAddr>,
    api: Option<SocketAddr>,
) -> serde_json::Value {
    let issuers: Vec<serde_json::Value> = settings
        .issuers
        .iter()
        .map(|i| {
            serde_json::json!({
                "issuer": i.issuer,
                "audiences": i.audiences,
                "algorithms": i.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>(),
                "jwks_uri": i.jwks_uri.as_ref().map(ToString::to_string),
                "client_secret_configured": i.client_secret.is_some(),
                "require_exp": i.require_exp,
                "leeway_secs": i.leeway_secs,
                "max_token_age_secs": i.max_token_age_secs,
            })
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "listen": bound.unwrap_or(settings.listen).to_string(),
        "database": redact_url(&settings.database),
        "issuers": issuers,
        "jwks_refresh_cooldown_secs": settings.keys.refresh_cooldown.as_secs(),
        "allow_insecure_http": settings.keys.allow_insecure_http,
        "store_timeout_secs": settings.store_timeout.as_secs(),
        "retention_days": settings.retention.map(|r| r.as_secs() / 86_400),
        "edge": edge_summary(&settings.edge),
        "api": api.map(|addr| serde_json::json!({
            "listen": addr.to_string(),
            "token_labels": settings.api.tokens.iter().map(|t| t.label.clone()).collect::<Vec<_>>(),
        })),
        "checkpoints": settings.checkpoints.as_ref().map(|c| serde_json::json!({
            "origin": c.signer.name(),
            "verifier_key": c.signer.verifier_key(),
            "interval_secs": c.interval.as_secs(),
            "dir": c.dir.as_ref().map(|d| d.display().to_string()),
        })),
    })
}

/// The limits on what an anonymous client may cost, as recorded at start.
fn edge_summary(edge: &EdgeSettings) -> serde_json::Value {
    let c = &edge.connections;
    let a = &edge.admission;
    serde_json::json!({
        "header_read_timeout_secs": c.header_read_timeout.as_secs(),
        "request_timeout_secs": c.request_timeout.as_secs(),
        "idle_timeout_secs": c.idle_timeout.as_secs(),
        "max_connections": c.max_connections,
        "max_connections_per_source": c.max_connections_per_source,
        "rejected_records_per_source": a.per_source_per_sec,
        "rejected_records_burst": a.per_source_burst,
        "rejected_records_total": a.total_per_sec,
        "trusted_proxies": edge.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "metrics_listen": edge.metrics_listen.map(|m| m.to_string()),
    })
}

/// A database URL without its password (kept here for callers of the former path).
pub use crate::util::redact_url;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
