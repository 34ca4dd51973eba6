//! `GET /api/v1/deliveries`: each target's deliveries with their state, attempts and last
//! error, newest record first, a page at a time; `POST /api/v1/deliveries/retry` makes some
//! due again.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, RawQuery, State};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::params::{DEFAULT_PAGE, Params, parse_limit};
use super::routes::{Op, route};
use crate::clock::parse_rfc3339_millis;
use crate::store::deliveries::{DeliveryFilter, DeliveryOp, DeliveryState};
use crate::store::{Note, NoteKind};

/// Encodes the keyset position after a page's last delivery.
fn encode_cursor(event_id: i64, target: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{event_id}.{target}"))
}

/// Reads a cursor back.
fn decode_cursor(s: &str) -> Result<(i64, String), String> {
    let bad = || "not a cursor this endpoint gave".to_owned();
    let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (id, target) = text.split_once('.').ok_or_else(bad)?;
    Ok((id.parse().map_err(|_| bad())?, target.to_owned()))
}

/// The listing filter from the query string.
pub(crate) fn filter(p: &Params) -> Result<DeliveryFilter, ApiError> {
    let f = DeliveryFilter {
        target: p.one("target").map(str::to_owned),
        state: p.parsed("state", |s| {
            DeliveryState::parse(s).ok_or_else(|| "pending, delivered or dead".to_owned())
        })?,
        event_id: None,
        since: p.parsed("since", parse_rfc3339_millis)?,
        until: p.parsed("until", parse_rfc3339_millis)?,
        before: p.parsed("cursor", decode_cursor)?,
        limit: p.parsed("limit", parse_limit)?.unwrap_or(DEFAULT_PAGE),
    };
    if let (Some(s), Some(u)) = (f.since, f.until)
        && u <= s
    {
        return Err(ApiError::invalid("until", "must be later than since"));
    }
    Ok(f)
}

/// `GET /api/v1/deliveries`.
pub(crate) async fn deliveries(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(query.as_deref(), route(Op::Deliveries))?;
    let f = filter(&p)?;
    let probe = DeliveryFilter {
        limit: f.limit + 1,
        ..f.clone()
    };
    let mut rows = state.reader.deliveries(&probe).await?;
    let more = rows.len() > f.limit as usize;
    rows.truncate(f.limit as usize);
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|d| encode_cursor(d.event_id, &d.target));
    let details = json!({
        "filters": {
            "target": f.target,
            "state": f.state.map(DeliveryState::as_str),
            "since": f.since,
            "until": f.until,
        },
        "rows": rows.len(),
    });
    state
        .record_access(&caller, "query", "GET /api/v1/deliveries", details)
        .await?;
    Ok(Json(
        json!({ "deliveries": rows, "next_cursor": next_cursor }),
    ))
}

/// The body of `POST /api/v1/deliveries/retry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryRequest {
    target: String,
    event_id: Option<i64>,
    #[serde(default)]
    dead: bool,
}

/// `POST /api/v1/deliveries/retry`: one record's delivery, or every dead one of a target, due
/// again now. The request is chained first (who asked), then the deliveries change.
pub(crate) async fn retry(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<RetryRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::invalid("body", e.body_text()))?;
    if req.event_id.is_some() == req.dead {
        return Err(ApiError::invalid(
            "body",
            "give either event_id or \"dead\": true",
        ));
    }
    let now = state.clock.now_millis();
    state
        .store
        .note(Note {
            kind: NoteKind::System,
            action: "delivery_retry".into(),
            details: json!({
                "who": caller.0,
                "via": "api",
                "target": req.target,
                "event_id": req.event_id,
                "dead": req.dead,
            }),
            at: now,
        })
        .await
        .map_err(ApiError::Audit)?;
    let changed = state
        .store
        .deliveries(vec![DeliveryOp::Requeue {
            target: req.target.clone(),
            event_id: req.event_id,
            now,
        }])
        .await?;
    let requeued = changed.first().copied().unwrap_or(0);
    if requeued == 0 {
        return Err(ApiError::NotFound(format!(
            "no delivery of target {:?} to retry",
            req.target
        )));
    }
    Ok(Json(json!({ "requeued": requeued })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_refuse_anything_else() {
        let c = encode_cursor(42, "web-app.eu");
        assert_eq!(decode_cursor(&c), Ok((42, "web-app.eu".to_owned())));
        assert!(decode_cursor("!!").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("x.y")).is_err());
    }
}
