//! Bearer authentication: the token's SHA-256 against each configured digest, in constant time.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::config::ApiToken;

/// Who is calling: the label of the token presented. Set by [`require_token`].
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) String);

/// The label of the configured token `presented` hashes to, if any. Every configured digest is
/// compared (in constant time), so the time taken does not tell which one was close.
pub(crate) fn authenticate<'a>(tokens: &'a [ApiToken], presented: &str) -> Option<&'a str> {
    let d = digest(&SHA256, presented.as_bytes());
    let mut found = None;
    for t in tokens {
        if verify_slices_are_equal(d.as_ref(), &t.digest).is_ok() && found.is_none() {
            found = Some(t.label.as_str());
        }
    }
    found
}

/// Middleware of every authenticated route: 401 unless `Authorization: Bearer <token>` names
/// a configured token; otherwise the caller's label goes into the request's extensions.
pub(crate) async fn require_token(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = header.and_then(|h| {
        let (scheme, token) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let why = match presented {
        None => "an Authorization: Bearer token is required",
        Some(token) => match authenticate(&state.tokens, token) {
            Some(label) => {
                request.extensions_mut().insert(Caller(label.to_owned()));
                return next.run(request).await;
            }
            None => "the bearer token is not valid",
        },
    };
    state.metrics.api_unauthorized();
    tracing::warn!(
        path = %request.uri().path(),
        "query API: request refused: {why}"
    );
    ApiError::Unauthorized(why).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_label_of_the_right_token_only() {
        let tokens = [
            ApiToken::for_token("a", "llq_one"),
            ApiToken::for_token("b", "llq_two"),
        ];
        assert_eq!(authenticate(&tokens, "llq_two"), Some("b"));
        assert_eq!(authenticate(&tokens, "llq_one"), Some("a"));
        assert_eq!(authenticate(&tokens, "llq_thre"), None);
        assert_eq!(authenticate(&tokens, ""), None);
        assert_eq!(authenticate(&[], "llq_one"), None);
    }
}
