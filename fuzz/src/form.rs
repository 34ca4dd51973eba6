//! Target `form`: the logout endpoint's body reader.
//!
//! Input: `CONTENT-TYPE "\n" BODY` (no newline: all of it is the content type and the body).
//!
//! What must hold: no panic; a content type is accepted only when its essence is the form type;
//! a token read from a body survives being written back into a form (with other fields and
//! reordered) and read again; 413 exactly when the body is over the limit, else 400.

use logout_ledger::config::MAX_BODY_BYTES;
use logout_ledger::http::form::{check_content_type, logout_token};
use logout_ledger::logout_token::Reason;

const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// Runs one input through the form reader and checks what must hold.
pub fn check(data: &[u8]) {
    let cut = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (content_type, body) = (&data[..cut], data.get(cut + 1..).unwrap_or(data));

    match check_content_type(content_type) {
        Ok(()) => {
            let text = String::from_utf8_lossy(content_type).to_ascii_lowercase();
            let essence = text.split(';').next().unwrap_or_default().trim();
            assert_eq!(essence, FORM_TYPE, "accepted {text:?}");
        }
        Err(r) => {
            assert_eq!((r.reason, r.http_status()), (Reason::MalformedRequest, 400));
            // The quoted part is at most 100 characters, each escaped to at most 10.
            assert!(r.detail.chars().count() <= 100 + 100 * 10, "{}", r.detail);
        }
    }

    match logout_token(body) {
        Ok(token) => {
            assert!(body.len() <= MAX_BODY_BYTES);
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("z", "1")
                .append_pair("logout_token", &token)
                .append_pair("logout_token_", "x");
            let again = logout_token(form.finish().as_bytes()).expect("re-encoded form");
            assert_eq!(again, token, "token changed in a round trip");
        }
        Err(r) => {
            assert_eq!(r.reason, Reason::MalformedRequest);
            let expected = if body.len() > MAX_BODY_BYTES {
                413
            } else {
                400
            };
            assert_eq!(r.http_status(), expected, "{}", r.detail);
        }
    }
}
