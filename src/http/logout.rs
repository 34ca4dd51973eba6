//! `POST /backchannel-logout`: read the form, validate the token, record the request, answer.
//! The answer is decided by the committed record, so a 200 never precedes durability.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use tracing::Instrument;

use super::AppState;
use super::admission::Decision;
use super::form;
use super::response::LogoutResponse;
use crate::config::MAX_BODY_BYTES;
use crate::logout_token::{Reason, Rejection, Step, TokenFacts};
use crate::store::{Committed, NewRecord, Outcome, StoreError};
use crate::telemetry::RequestId;

/// Longest `User-Agent` kept (characters).
const MAX_USER_AGENT: usize = 128;
/// Longest time to receive the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The body's declared `Content-Length`.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// Reads the form's `logout_token`; also says how many body bytes the request carries (for a
/// body left unread, a wrong content type or one too large, its declared length).
async fn read_token(headers: &HeaderMap, body: Body) -> (Result<String, Rejection>, u64) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map_or(&b""[..], |v| v.as_bytes());
    if let Err(r) = form::check_content_type(content_type) {
        return (Err(r), declared_length(headers).unwrap_or(0));
    }
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
    {
        Err(_) => {
            return (
                Err(Rejection::new(
                    Reason::MalformedRequest,
                    "request body not received in time",
                )),
                0,
            );
        }
        Ok(Err(e)) => {
            let too_large =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                let declared = declared_length(headers);
                (
                    Err(form::too_large()),
                    declared.unwrap_or(MAX_BODY_BYTES as u64),
                )
            } else {
                (
                    Err(Rejection::new(
                        Reason::MalformedRequest,
                        "request body could not be read",
                    )),
                    0,
                )
            };
        }
        Ok(Ok(b)) => b,
    };
    (form::logout_token(&bytes), bytes.len() as u64)
}

fn sha256(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The handler: everything it does, validation and the store's commit included, runs in a
/// `logout` span whose `request_id` the writer's commit line names too.
pub(super) async fn backchannel_logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> LogoutResponse {
    let request_id = RequestId::new();
    let span = tracing::info_span!("logout", request_id = %request_id);
    handle(state, peer, headers, body, request_id)
        .instrument(span)
        .await
}

async fn handle(
    state: AppState,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Body,
    request_id: RequestId,
) -> LogoutResponse {
    let received_at = state.clock.now_millis();
    let user_agent = headers.get(header::USER_AGENT).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(MAX_USER_AGENT)
            .collect()
    });
    let client = state.admission.client_ip(peer.ip(), &headers);
    let mut record = NewRecord {
        received_at,
        verdict: Ok(()),
        facts: TokenFacts::default(),
        token: None,
        token_sha256: None,
        token_bytes: None,
        source_ip: Some(client.to_string()),
        user_agent,
        request_id: Some(request_id),
    };
    let (token, body_bytes) = read_token(&headers, body).await;
    let mut token_text = None;
    match token {
        Err(rejection) => record.verdict = Err(rejection),
        Ok(token) => {
            let verdict = state
                .validator
                .validate(&token, received_at.div_euclid(1000))
                .await;
            record.facts = verdict.facts;
            record.verdict = verdict.result;
            record.token_bytes = Some(token.len());
            token_text = Some(token);
        }
    }
    let token_sha256 = match admit(&state, &record, token_text.as_deref(), client, body_bytes) {
        Ok(hashed) => hashed,
        Err(counted) => return counted,
    };
    record.token_sha256 = token_sha256.or_else(|| token_text.as_deref().map(sha256));
    // Only an accepted record keeps the token: the queue holds nothing else of it.
    record.token = token_text.filter(|_| record.verdict.is_ok());
    store(&state, record).await
}

/// Admission of a rejection found before the signature verified: `Err` with the answer when
/// its record is only counted, else the token's hash when telling a re-delivery from junk
/// needed it (hashed at most once: for the record, or for that).
fn admit(
    state: &AppState,
    record: &NewRecord,
    token: Option<&str>,
    client: IpAddr,
    body_bytes: u64,
) -> Result<Option<[u8; 32]>, LogoutResponse> {
    let mut token_sha256 = None;
    if let Err(r) = &record.verdict
        && r.reason.is_unverified()
        && !(may_be_a_redelivery(r.reason)
            && token.is_some_and(|t| {
                state
                    .admission
                    .recently_accepted(token_sha256.insert(sha256(t)))
            }))
        && state
            .admission
            .admit(client, r.reason, body_bytes, record.received_at)
            == Decision::Count
    {
        // Answered exactly as if stored; counted into the window's suppressed record. The
        // token is not even hashed.
        state.metrics.suppressed(r.reason);
        state.metrics.reason(r.reason);
        tracing::debug!(reason = %r.reason, "logout rejection counted, not recorded");
        return Err(rejection_answer(r.clone()));
    }
    Ok(token_sha256)
}

/// Sends the record to the writer and answers from the committed record, or from the
/// verdict when the store fails.
async fn store(state: &AppState, record: NewRecord) -> LogoutResponse {
    let verdict = record.verdict.clone();
    let token_sha256 = record.token_sha256;
    match state.store.append(record).await {
        Ok(committed) => {
            if committed.outcome == Outcome::Accepted
                && let Some(h) = token_sha256
            {
                state.admission.accepted(h);
            }
            answer(state, committed)
        }
        Err(e) => {
            state.metrics.store_failure();
            if matches!(e, StoreError::Unavailable) {
                // Known down: the writer logged it once; one line per request would flood.
                tracing::debug!("audit record not stored: {e}");
            } else {
                tracing::error!("audit record not stored: {e}");
            }
            match verdict {
                // The request is invalid whatever the store says: the issuer may stop retrying.
                Err(r) if !r.reason.is_transient() => {
                    state.metrics.reason(r.reason);
                    LogoutResponse::Invalid(r)
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

/// The answer from a committed record, logged with the record's id and, for a rejection, the
/// rule and its step of §2.6.
fn answer(state: &AppState, committed: Committed) -> LogoutResponse {
    let rejection = committed.rejection.as_ref();
    tracing::info!(
        record = committed.id,
        outcome = committed.outcome.code(),
        reason = rejection.map(|r| r.reason.code()),
        step = rejection.and_then(|r| r.step).map(Step::number),
        "logout recorded"
    );
    state.metrics.outcome(committed.outcome);
    match (committed.outcome, committed.rejection) {
        (Outcome::Accepted | Outcome::Duplicate, _) => LogoutResponse::Ok,
        (Outcome::Rejected, Some(r)) => {
            state.metrics.reason(r.reason);
            rejection_answer(r)
        }
        (Outcome::Rejected, None) => {
            LogoutResponse::Invalid(Rejection::new(Reason::MalformedRequest, "rejected"))
        }
    }
}

/// Whether an unverified rejection may be an identical re-delivery of a token accepted earlier
/// in this process (which the store records as a `duplicate`, answered 200): only rules that
/// depend on the key set can turn against a token that once passed them (a rotated key); the
/// others depend on the token and the configuration alone, both unchanged.
fn may_be_a_redelivery(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::UnknownKey | Reason::BadSignature | Reason::KeysUnavailable
    )
}

/// The answer to a rejection, whether its record was stored or only counted.
fn rejection_answer(r: Rejection) -> LogoutResponse {
    if r.reason.is_transient() {
        LogoutResponse::Unavailable(r)
    } else {
        LogoutResponse::Invalid(r)
    }
}
