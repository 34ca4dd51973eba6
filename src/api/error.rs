//! The API's errors, each turned into one JSON answer; store details go to the log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::export::ExportError;
use crate::store::StoreError;

/// What can go wrong answering an API request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No bearer token, or not one configured.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// A query or path parameter is invalid.
    #[error("invalid parameter {parameter}: {message}")]
    InvalidParameter {
        /// The parameter's name.
        parameter: String,
        /// What is wrong with it.
        message: String,
    },
    /// No such record.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request cannot be answered in the store's present state.
    #[error("{code}: {message}")]
    Conflict {
        /// The error code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Reading the store failed.
    #[error("store read failed: {0}")]
    Store(#[source] StoreError),
    /// The read's access record could not be committed, so the data is not served.
    #[error("access record not committed: {0}")]
    Audit(#[source] StoreError),
}

impl ApiError {
    /// A 400 naming `parameter`.
    pub(crate) fn invalid(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidParameter {
            parameter: parameter.into(),
            message: message.into(),
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Store(e) => ApiError::Store(e),
            // A record that cannot be encoded is a corrupt record.
            ExportError::Encode { id, message } => {
                ApiError::Store(StoreError::Corrupt { id, message })
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'a str>,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = |error, message| ErrorBody {
            error,
            parameter: None,
            message,
        };
        let (status, body) = match &self {
            ApiError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, body("unauthorized", why)),
            ApiError::InvalidParameter { parameter, message } => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: "invalid_parameter",
                    parameter: Some(parameter),
                    message,
                },
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, body("not_found", what)),
            ApiError::Conflict { code, message } => (StatusCode::CONFLICT, body(code, message)),
            ApiError::Store(e) => {
                tracing::error!("query API: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    body(
                        "store_unavailable",
                        "the audit store could not be read; try again",
                    ),
                )
            }
            ApiError::Audit(e) => {
                tracing::error!("query API: access record not committed: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    body(
                        "store_unavailable",
                        "this read could not be recorded, so it is not served; try again",
                    ),
                )
            }
        };
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ApiError::Unauthorized(_) = self {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"logout-ledger\""),
            );
        }
        resp
    }
}
