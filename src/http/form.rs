//! The logout endpoint's request format: an `application/x-www-form-urlencoded` body with
//! exactly one `logout_token`. Pure functions over bytes, so they can be fuzzed on their own.

use crate::config::MAX_BODY_BYTES;
use crate::logout_token::{Reason, Rejection};

/// Longest part of a wrong content type quoted back in the rejection detail.
const MAX_QUOTED_CONTENT_TYPE: usize = 100;

/// Checks the `Content-Type` header (a `charset` or other parameters are fine).
pub fn check_content_type(content_type: &[u8]) -> Result<(), Rejection> {
    let text = String::from_utf8_lossy(content_type);
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(())
    } else {
        Err(Rejection::new(
            Reason::MalformedRequest,
            format!(
                "content type must be application/x-www-form-urlencoded, not {:?}",
                text.chars()
                    .take(MAX_QUOTED_CONTENT_TYPE)
                    .collect::<String>()
            ),
        ))
    }
}

/// The rejection of a body over [`MAX_BODY_BYTES`].
pub fn too_large() -> Rejection {
    Rejection::body_too_large(format!("request body exceeds {MAX_BODY_BYTES} bytes"))
}

/// Reads the one `logout_token` out of a form body; other fields are ignored.
pub fn logout_token(body: &[u8]) -> Result<String, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    let mut token = None;
    for (name, value) in form_urlencoded::parse(body) {
        if name == "logout_token" {
            if token.is_some() {
                return Err(Rejection::new(
                    Reason::MalformedRequest,
                    "logout_token appears more than once",
                ));
            }
            token = Some(value.into_owned());
        }
    }
    token.ok_or_else(|| Rejection::new(Reason::MalformedRequest, "form has no logout_token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(check_content_type(b"application/x-www-form-urlencoded; charset=UTF-8").is_ok());
        assert!(check_content_type(b"Application/X-WWW-Form-Urlencoded").is_ok());
        let e = check_content_type(b"application/json").expect_err("json");
        assert_eq!(e.reason, Reason::MalformedRequest);
        assert!(check_content_type(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn exactly_one_token() {
        assert_eq!(
            logout_token(b"a=1&logout_token=x%2By&b=2").expect("one"),
            "x+y"
        );
        assert!(logout_token(b"logout_token=a&logout_token=b").is_err());
        assert!(logout_token(b"token=a").is_err());
        assert!(logout_token(&[0xff; 10]).is_err());
        assert_eq!(
            logout_token(&vec![b'a'; MAX_BODY_BYTES + 1])
                .expect_err("big")
                .http_status(),
            413
        );
    }
}
