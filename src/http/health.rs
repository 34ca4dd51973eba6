//! Liveness and readiness, public: the bodies say no more than ok or unavailable per component.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AppState;

/// Alive: the process answers.
pub(super) async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready: every issuer has a key set younger than the max key age and the store answers.
pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let keys = state.keys.all_usable();
    let store = state.store.ping().await;
    let status = if keys && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        format!(
            "keys: {}\nstore: {}\n",
            if keys { "ok" } else { "unavailable" },
            if store { "ok" } else { "unavailable" }
        ),
    )
}
