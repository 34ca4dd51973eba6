//! The query API, `/api/v1/` on its own listener: authenticated reads of the audit store for
//! programs (records, one record, session status, a subject's logouts, exports, summaries) and
//! its OpenAPI document. Every read but the session check is itself recorded as an `access`
//! record naming the token's label before its answer leaves.

mod auth;
mod console;
mod deliveries;
mod error;
mod export;
mod handlers;
mod ledger;
mod openapi;
mod params;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use serde_json::{Value, json};

use self::auth::Caller;
use self::error::ApiError;
use self::routes::{Op, ROUTES};
use crate::clock::SharedClock;
use crate::config::ApiToken;
use crate::http::Metrics;
use crate::store::{AuditStore, Note, NoteKind, StoreReader};

/// What every API handler shares.
#[derive(Debug, Clone)]
pub struct ApiState {
    store: AuditStore,
    reader: StoreReader,
    tokens: Arc<[ApiToken]>,
    issuers: Arc<[String]>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    console: Arc<ConsoleInfo>,
}

/// What the console shows beside the records: the log's public key and the delivery targets.
#[derive(Debug, Clone, Default)]
pub struct ConsoleInfo {
    /// The checkpoint signer's key in note-verifier form, when this service signs checkpoints.
    pub log_key: Option<String>,
    /// The configured delivery targets' names.
    pub delivery_targets: Vec<String>,
}

impl ApiState {
    /// The same state, with what the console shows beside the records.
    pub fn with_console(self, info: ConsoleInfo) -> Self {
        Self {
            console: Arc::new(info),
            ..self
        }
    }

    /// The state of an API serving `store` to holders of `tokens`; `issuers` are the configured
    /// issuers (a session check may leave out `iss` when there is one).
    pub fn new(
        store: AuditStore,
        tokens: Vec<ApiToken>,
        issuers: Vec<String>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            reader: store.reader(),
            store,
            tokens: tokens.into(),
            issuers: issuers.into(),
            clock,
            metrics,
            console: Arc::default(),
        }
    }

    /// Commits the `access` record of a read by `caller`; the answer waits for it.
    async fn record_access(
        &self,
        caller: &Caller,
        action: &str,
        what: &str,
        details: Value,
    ) -> Result<(), ApiError> {
        let mut d = json!({ "who": caller.0, "via": "api", "what": what });
        if let (Value::Object(d), Value::Object(extra)) = (&mut d, details) {
            d.extend(extra);
        }
        self.store
            .note(Note {
                kind: NoteKind::Access,
                action: action.into(),
                details: d,
                at: self.clock.now_millis(),
            })
            .await
            .map(|_| ())
            .map_err(ApiError::Audit)
    }
}

fn handler(op: Op) -> MethodRouter<ApiState> {
    match op {
        Op::Events => get(handlers::events),
        Op::Event => get(handlers::event),
        Op::Session => get(handlers::session),
        Op::SubjectLogouts => get(handlers::subject_logouts),
        Op::Export => get(export::export),
        Op::Summary => get(handlers::summary),
        Op::Deliveries => get(deliveries::deliveries),
        Op::DeliveryRetry => post(deliveries::retry),
        Op::Ledger => get(ledger::ledger),
        Op::Proof => get(ledger::proof),
        Op::OpenApi => get(openapi::serve),
    }
}

async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> Response {
    ApiError::NotFound("no such endpoint (see /api/v1/openapi.json)".into()).into_response()
}

/// The API router: every route of the table, bearer authentication on those that need it, and
/// `metrics` (the unauthenticated `/metrics` router, like the OpenAPI document needing no token).
pub fn router(state: ApiState, metrics: Router) -> Router {
    let mut guarded = Router::new();
    let mut open = Router::new();
    for r in ROUTES {
        if r.authenticated {
            guarded = guarded.route(r.path, handler(r.op));
        } else {
            open = open.route(r.path, handler(r.op));
        }
    }
    let open = open
        .route("/console", get(console::root))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::asset));
    guarded
        .route_layer(from_fn_with_state(state.clone(), auth::require_token))
        .merge(open)
        .fallback(not_found)
        .layer(map_response(no_store))
        .with_state(state)
        .merge(metrics)
}
