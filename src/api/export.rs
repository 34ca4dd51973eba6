//! `GET /api/v1/export`: every matching record, streamed page by page in constant memory.
//!
//! The export is a snapshot: the id range of the matches is fixed before the first byte (so
//! records arriving meanwhile are left out and the row count in the access record is exact),
//! then pages of [`EXPORT_PAGE`] records are read by keyset and encoded one page at a time,
//! only as fast as the client reads.

use axum::body::{Body, Bytes};
use axum::extract::{Extension, RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use super::params::Params;
use super::routes::{Op, route};
use crate::export::ExportFormat;
use crate::store::{EventFilter, KindFilter, Order, StoreReader};

/// Records read and encoded per step.
pub(crate) const EXPORT_PAGE: u32 = 1000;

/// Where a streaming export stands.
struct Progress {
    reader: StoreReader,
    filter: EventFilter,
    format: ExportFormat,
    started: bool,
    done: bool,
}

/// The next chunk of the body: the header (CSV) and one page of records; `None` at the end.
async fn next_chunk(mut p: Progress) -> Result<Option<(Bytes, Progress)>, std::io::Error> {
    let mut out = Vec::with_capacity(256 * EXPORT_PAGE as usize);
    if !p.started {
        p.format.start(&mut out);
        p.started = true;
        if p.done {
            return Ok(Some((Bytes::from(out), p)));
        }
    } else if p.done {
        return Ok(None);
    }
    let records = p.reader.query(&p.filter).await.map_err(|e| {
        tracing::error!("export stopped: {e}");
        std::io::Error::other(e)
    })?;
    for r in &records {
        p.format.write(&mut out, r).map_err(|e| {
            tracing::error!("export stopped: {e}");
            std::io::Error::other(e)
        })?;
    }
    p.done = records.len() < p.filter.limit as usize;
    p.filter.after = records.last().map(|r| r.id);
    Ok(Some((Bytes::from(out), p)))
}

/// `GET /api/v1/export`.
pub(crate) async fn export(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(query.as_deref(), route(Op::Export))?;
    let format = p
        .parsed("format", |s| s.parse::<ExportFormat>())?
        .ok_or_else(|| ApiError::invalid("format", "is required"))?;
    let mut filter = p.filter()?;
    if format == ExportFormat::Ocsf && filter.kind != KindFilter::Logout {
        return Err(ApiError::invalid(
            "kind",
            "an OCSF export holds logout records only",
        ));
    }
    filter.order = p
        .parsed("order", |s| s.parse::<Order>())?
        .unwrap_or(Order::Asc);
    filter.limit = EXPORT_PAGE;
    let window = state.reader.id_window(&filter).await?;
    let rows = match window {
        Some(range) => {
            filter.id_range = Some(range);
            state.reader.count(&filter).await?
        }
        None => 0,
    };
    let details = json!({
        "filters": filter.describe(),
        "format": format.code(),
        "rows": rows,
    });
    state
        .record_access(&caller, "export", "GET /api/v1/export", details)
        .await?;
    let progress = Progress {
        reader: state.reader.clone(),
        filter,
        format,
        started: false,
        done: window.is_none(),
    };
    let body = Body::from_stream(futures_util::stream::try_unfold(progress, next_chunk));
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    let disposition = format!(
        "attachment; filename=\"logout-ledger-export.{}\"",
        format.extension()
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert("x-export-rows", HeaderValue::from(rows));
    Ok(resp)
}
