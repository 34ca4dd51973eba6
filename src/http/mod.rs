//! HTTP: the router, its shared state, the logout endpoint, health checks, metrics, and the
//! accept loop that serves every listener within its connection limits.

pub mod admission;
pub mod client_addr;
pub mod form;
mod health;
mod logout;
mod metrics;
mod response;
pub(crate) mod server;

pub use metrics::{Cap, ListenerKind, Metrics, MetricsState, Timeout};

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::clock::SharedClock;
use crate::keys::KeyRegistry;
use crate::logout_token::Validator;
use crate::store::AuditStore;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Token rules.
    pub validator: Validator,
    /// The audit store.
    pub store: AuditStore,
    /// Issuer key caches (readiness).
    pub keys: Arc<KeyRegistry>,
    /// Time source.
    pub clock: SharedClock,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Which unverified rejections are stored one by one, and the client's address.
    pub admission: Arc<admission::Admission>,
}

/// The public router: the logout endpoint, `/healthz` and `/readyz` (never `/metrics`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/backchannel-logout", post(logout::backchannel_logout))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}

/// `GET /metrics` alone: merged into the query API's router and served on `--metrics-listen`.
pub fn metrics_router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::render))
        .with_state(state)
}
