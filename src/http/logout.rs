//! `POST /backchannel-logout`: read the form, validate the token, record the request, answer.
//! The answer is decided by the committed record, so a 200 never precedes durability.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};

use super::AppState;
use super::response::LogoutResponse;
use crate::config::MAX_BODY_BYTES;
use crate::logout_token::{Reason, Rejection, TokenFacts};
use crate::store::{Committed, NewRecord, Outcome};

/// Longest `User-Agent` kept.
const MAX_USER_AGENT: usize = 512;
/// Longest time to receive the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A request problem found before any token was read.
struct BadRequest {
    status: StatusCode,
    rejection: Rejection,
}

fn bad(status: StatusCode, detail: impl Into<String>) -> BadRequest {
    BadRequest {
        status,
        rejection: Rejection::new(Reason::MalformedRequest, detail),
    }
}

async fn read_token(headers: &HeaderMap, body: Body) -> Result<String, BadRequest> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!(
                "content type must be application/x-www-form-urlencoded, not {:?}",
                content_type.chars().take(100).collect::<String>()
            ),
        ));
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Err(_) => {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                "request body not received in time",
            ));
        }
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            return Err(if too_large {
                bad(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds {MAX_BODY_BYTES} bytes"),
                )
            } else {
                bad(StatusCode::BAD_REQUEST, "request body could not be read")
            });
        }
        Ok(Ok(b)) => b,
    };
    let mut token = None;
    for (name, value) in form_urlencoded::parse(&bytes) {
        if name == "logout_token" {
            if token.is_some() {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    "logout_token appears more than once",
                ));
            }
            token = Some(value.into_owned());
        }
    }
    token.ok_or_else(|| bad(StatusCode::BAD_REQUEST, "form has no logout_token"))
}

fn sha256(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The handler.
pub(super) async fn backchannel_logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> LogoutResponse {
    let received_at = state.clock.now_millis();
    let user_agent = headers.get(header::USER_AGENT).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(MAX_USER_AGENT)
            .collect()
    });
    let mut record = NewRecord {
        received_at,
        verdict: Ok(()),
        facts: TokenFacts::default(),
        token: None,
        token_sha256: None,
        source_ip: Some(peer.ip().to_string()),
        user_agent,
    };
    let mut status_if_invalid = StatusCode::BAD_REQUEST;
    match read_token(&headers, body).await {
        Err(problem) => {
            status_if_invalid = problem.status;
            record.verdict = Err(problem.rejection);
        }
        Ok(token) => {
            let verdict = state
                .validator
                .validate(&token, received_at.div_euclid(1000))
                .await;
            record.facts = verdict.facts;
            record.verdict = verdict.result;
            record.token_sha256 = Some(sha256(&token));
            record.token = Some(token);
        }
    }
    let verdict = record.verdict.clone();
    match state.store.append(record).await {
        Ok(committed) => answer(&state, committed, status_if_invalid),
        Err(e) => {
            state.metrics.store_failure();
            tracing::error!("audit record not stored: {e}");
            match verdict {
                // The request is invalid whatever the store says: the issuer may stop retrying.
                Err(r) if !r.reason.is_transient() => {
                    state.metrics.reason(r.reason);
                    LogoutResponse::Invalid(status_if_invalid, r)
                }
                _ => {
                    state.metrics.reason(Reason::StoreUnavailable);
                    LogoutResponse::Unavailable(Rejection::new(
                        Reason::StoreUnavailable,
                        "the audit record could not be stored; retry later",
                    ))
                }
            }
        }
    }
}

fn answer(state: &AppState, committed: Committed, status_if_invalid: StatusCode) -> LogoutResponse {
    state.metrics.outcome(committed.outcome);
    match (committed.outcome, committed.rejection) {
        (Outcome::Accepted | Outcome::Duplicate, _) => LogoutResponse::Ok,
        (Outcome::Rejected, Some(r)) => {
            state.metrics.reason(r.reason);
            if r.reason.is_transient() {
                LogoutResponse::Unavailable(r)
            } else {
                LogoutResponse::Invalid(status_if_invalid, r)
            }
        }
        (Outcome::Rejected, None) => LogoutResponse::Invalid(
            status_if_invalid,
            Rejection::new(Reason::MalformedRequest, "rejected"),
        ),
    }
}
