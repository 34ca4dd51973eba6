//! The logout endpoint's answers: exactly 200, 400 or 503 (413 for an oversized body), always
//! `Cache-Control: no-store`, with the rejection code first in `error_description`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::logout_token::Rejection;

/// Seconds a 503 asks the issuer to wait.
pub(super) const RETRY_AFTER_SECS: u64 = 5;

/// What an anonymous caller learns of a 503: the code and that it may retry. The rejection's
/// detail (a key-set URL, an HTTP client's error) stays in the log and the record.
pub(super) fn unavailable_description(r: &Rejection) -> String {
    format!(
        "{}: temporarily unavailable; retry after {RETRY_AFTER_SECS} seconds",
        r.reason.code()
    )
}

/// What the endpoint answers.
#[derive(Debug)]
pub(super) enum LogoutResponse {
    /// Recorded (accepted or duplicate).
    Ok,
    /// Invalid request or token: 400 (or 413 for an oversized body; the rejection decides).
    Invalid(Rejection),
    /// The receiver cannot finish now: 503 with `Retry-After`.
    Unavailable(Rejection),
}

impl IntoResponse for LogoutResponse {
    fn into_response(self) -> Response {
        let mut resp = match self {
            LogoutResponse::Ok => StatusCode::OK.into_response(),
            LogoutResponse::Invalid(r) => (
                StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
                Json(json!({"error": "invalid_request", "error_description": r.to_string()})),
            )
                .into_response(),
            LogoutResponse::Unavailable(r) => {
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": "temporarily_unavailable", "error_description": unavailable_description(&r)})),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                resp
            }
        };
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
