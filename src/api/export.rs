//! `GET /api/v1/export`: every matching record, streamed page by page in constant memory, only
//! as fast as the client reads (see [`ExportPages`]).

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
use crate::export::{ExportFormat, ExportPages};
use crate::store::{KindFilter, Order};

/// The next chunk of the body; `None` at the end. An error ends the body early.
async fn next_chunk(
    mut pages: ExportPages,
) -> Result<Option<(Bytes, ExportPages)>, std::io::Error> {
    match pages.next_chunk().await {
        Ok(Some((chunk, _))) => Ok(Some((Bytes::from(chunk), pages))),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::error!("export stopped: {e}");
            Err(std::io::Error::other(e))
        }
    }
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
    let pages = ExportPages::open(state.reader.clone(), filter, format).await?;
    let rows = pages.rows();
    let details = json!({
        "filters": pages.filter().describe(),
        "format": format.code(),
        "rows": rows,
    });
    state
        .record_access(&caller, "export", "GET /api/v1/export", details)
        .await?;
    let body = Body::from_stream(futures_util::stream::try_unfold(pages, next_chunk));
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
