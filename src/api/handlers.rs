//! The JSON endpoints: records, one record, session status, a subject's logouts, summaries.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::routes::{Op, route};
use crate::clock::{format_millis, parse_rfc3339_millis};
use crate::logout_token::unverified;
use crate::store::deliveries::{DeliveryFilter, DeliveryRow};
use crate::store::{
    Cursor, EventFilter, GroupBy, MAX_GROUP_BY, Order, StoreError, StoredRecord, Summary,
};

/// A page of records, `{"events": [...], "next_cursor": ...}`, its records' JSON built by the
/// store (the same objects as serialising them, without decoding every column).
#[derive(Debug)]
pub(crate) struct Page {
    body: String,
    rows: usize,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let json = HeaderValue::from_static("application/json");
        ([(header::CONTENT_TYPE, json)], self.body).into_response()
    }
}

fn path_value<T>(p: Result<Path<T>, PathRejection>, name: &str) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::invalid(name, e.body_text()))
}

/// Reads one page (asks for one more record than the page holds, to know if another follows).
async fn page(state: &ApiState, f: &EventFilter) -> Result<Page, ApiError> {
    let probe = EventFilter {
        limit: f.limit + 1,
        ..f.clone()
    };
    let mut records = state.reader.ndjson_page(&probe).await?;
    let more = records.count > f.limit as usize;
    records.truncate(f.limit as usize);
    let next_cursor = match (more, records.last_id) {
        (false, _) => None,
        (true, Some(id)) => Some(Cursor { order: f.order, id }.encode()),
        (true, None) => {
            return Err(ApiError::Store(StoreError::Corrupt {
                id: 0,
                message: "a page's records carry no ids".into(),
            }));
        }
    };
    let mut body = String::with_capacity(records.lines.len() + 64);
    body.push_str("{\"events\":[");
    // JSON escapes line breaks inside strings, so every newline separates two records.
    body.push_str(&records.lines.replace('\n', ","));
    body.push_str("],\"next_cursor\":");
    body.push_str(&Value::from(next_cursor).to_string());
    body.push('}');
    Ok(Page {
        body,
        rows: records.count,
    })
}

/// `GET /api/v1/events`.
pub(crate) async fn events(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Page, ApiError> {
    let p = Params::parse(query.as_deref(), route(Op::Events))?;
    let mut f = p.filter()?;
    p.page(&mut f, Order::Desc)?;
    let page = page(&state, &f).await?;
    let details = json!({ "filters": f.describe(), "rows": page.rows });
    state
        .record_access(&caller, "query", "GET /api/v1/events", details)
        .await?;
    Ok(page)
}

/// `GET /api/v1/subjects/{sub}/logouts`.
pub(crate) async fn subject_logouts(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    sub: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Page, ApiError> {
    let sub = path_value(sub, "sub")?;
    let p = Params::parse(query.as_deref(), route(Op::SubjectLogouts))?;
    let mut f = EventFilter {
        sub: Some(sub),
        ..p.filter()?
    };
    p.page(&mut f, Order::Desc)?;
    let page = page(&state, &f).await?;
    let details = json!({ "filters": f.describe(), "rows": page.rows });
    state
        .record_access(
            &caller,
            "query",
            "GET /api/v1/subjects/{sub}/logouts",
            details,
        )
        .await?;
    Ok(page)
}

/// One record with its stored token (accepted records only), header and claims decoded.
#[derive(Debug, Serialize)]
pub(crate) struct EventView {
    /// The record's fields.
    #[serde(flatten)]
    record: StoredRecord,
    /// The compact token, the signed evidence.
    token: Option<String>,
    /// Its decoded header.
    token_header: Value,
    /// Its decoded claims.
    token_claims: Value,
    /// The digest of the archived key set that verified it (hex), for accepted records.
    key_set_digest: Option<String>,
    /// Its delivery to each target that gets it.
    deliveries: Vec<DeliveryRow>,
}

/// Decodes a stored token's header and claims for display. The token is an accepted one: it
/// was verified when it arrived; nothing here is used to decide anything.
fn decoded(token: Option<&str>) -> (Value, Value) {
    match token.map(unverified::peek) {
        Some(Ok(t)) => (Value::Object(t.header), Value::Object(t.claims)),
        _ => (Value::Null, Value::Null),
    }
}

/// `GET /api/v1/events/{id}`.
pub(crate) async fn event(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EventView>, ApiError> {
    let raw = path_value(id, "id")?;
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::invalid("id", "must be a record's sequence number"))?;
    let found = state.reader.event(id).await?;
    let details = json!({ "filters": { "id": id }, "rows": usize::from(found.is_some()) });
    state
        .record_access(&caller, "read_event", "GET /api/v1/events/{id}", details)
        .await?;
    let (record, token) = found.ok_or_else(|| ApiError::NotFound(format!("no record {id}")))?;
    let (token_header, token_claims) = decoded(token.as_deref());
    let deliveries = (state.reader)
        .deliveries(&DeliveryFilter {
            event_id: Some(id),
            limit: 1000,
            ..DeliveryFilter::default()
        })
        .await?;
    let key_set_digest = (state.reader.chain_rows(id - 1, 1).await?)
        .into_iter()
        .find(|c| c.row.id == id)
        .and_then(|c| c.row.key_set_digest)
        .map(|d| crate::util::hex(&d));
    Ok(Json(EventView {
        record,
        token,
        token_header,
        token_claims,
        key_set_digest,
        deliveries,
    }))
}

/// Whether a session is logged out.
#[derive(Debug, Serialize)]
pub(crate) struct SessionStatus {
    sid: String,
    iss: String,
    logged_out: bool,
    logged_out_at: Option<String>,
    event_id: Option<i64>,
}

/// `GET /api/v1/sessions/{sid}`: not audited (an application's hot path), counted instead.
pub(crate) async fn session(
    State(state): State<ApiState>,
    sid: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<SessionStatus>, ApiError> {
    let sid = path_value(sid, "sid")?;
    let p = Params::parse(query.as_deref(), route(Op::Session))?;
    let iss = match (p.one("iss"), &state.issuers[..]) {
        (Some(iss), _) => iss.to_owned(),
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ApiError::invalid(
                "iss",
                "is required: several issuers are configured",
            ));
        }
    };
    let since = p.parsed("since", parse_rfc3339_millis)?;
    let subject = match (p.one("sub"), since) {
        (Some(sub), Some(since)) => Some((sub, since)),
        (None, None) => None,
        (Some(_), None) => return Err(ApiError::invalid("since", "is required with sub")),
        (None, Some(_)) => return Err(ApiError::invalid("sub", "is required with since")),
    };
    let found = state.reader.session_status(&iss, &sid, subject).await?;
    state.metrics.session_check(found.is_some());
    Ok(Json(SessionStatus {
        logged_out: found.is_some(),
        logged_out_at: found.map(|l| format_millis(l.at)),
        event_id: found.map(|l| l.event_id),
        sid,
        iss,
    }))
}

/// `GET /api/v1/reports/summary`.
pub(crate) async fn summary(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Json<Summary>, ApiError> {
    let p = Params::parse(query.as_deref(), route(Op::Summary))?;
    let f = p.filter()?;
    let group_by = p
        .all("group_by")
        .map(|g| g.parse::<GroupBy>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| ApiError::invalid("group_by", m))?;
    if group_by.len() > MAX_GROUP_BY {
        return Err(ApiError::invalid(
            "group_by",
            format!("at most {MAX_GROUP_BY} dimensions"),
        ));
    }
    let summary = state.reader.summary(&f, &group_by).await?;
    let names: Vec<String> = group_by.iter().map(GroupBy::name).collect();
    let details = json!({
        "filters": f.describe(),
        "group_by": names,
        "rows": summary.groups.len(),
        "total": summary.total,
    });
    state
        .record_access(&caller, "report", "GET /api/v1/reports/summary", details)
        .await?;
    Ok(Json(summary))
}
