//! The one place that reads a token before its signature is checked.
//!
//! SECURITY: nothing returned here is trusted. The header is read to refuse `none`, `crit` and
//! odd `typ` values before any cryptography runs, and the claims' `iss` is read only to choose
//! which configured issuer's rules (keys, algorithms, audiences) apply. Everything else waits
//! until the signature has verified.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::strict_json::StrictValue;
use super::{Reason, Rejection};

/// A compact JWS split into its parts, header and claims decoded but not trusted.
#[derive(Debug)]
pub struct UnverifiedToken<'a> {
    /// The decoded header object.
    pub header: Map<String, Value>,
    /// The decoded claims object.
    pub claims: Map<String, Value>,
    /// `base64(header) "." base64(claims)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The base64url signature part.
    pub signature: &'a str,
}

fn decode_object(part: &str, what: &str) -> Result<Map<String, Value>, Rejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| Rejection::new(Reason::MalformedToken, format!("{what} is not base64url")))?;
    match serde_json::from_slice::<StrictValue>(&bytes) {
        Ok(StrictValue(Value::Object(map))) => Ok(map),
        // Only the duplicate-name check raises a data error (a repeated `alg` is ambiguous).
        Err(e) if e.is_data() => Err(Rejection::new(
            Reason::MalformedToken,
            format!("{what} {e}"),
        )),
        Ok(_) => Err(Rejection::new(
            Reason::MalformedToken,
            format!("{what} is not a JSON object"),
        )),
        Err(_) => Err(Rejection::new(
            Reason::MalformedToken,
            format!("{what} is not valid JSON"),
        )),
    }
}

/// Splits and decodes a compact JWS without verifying anything.
pub fn peek(token: &str) -> Result<UnverifiedToken<'_>, Rejection> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "logout_token is empty",
        ));
    }
    let parts: Vec<&str> = token.split('.').collect();
    match parts.len() {
        3 => {}
        5 => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "encrypted (JWE) logout tokens are not supported",
            ));
        }
        n => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                format!("a compact JWS has 3 parts, this has {n}"),
            ));
        }
    }
    let header = decode_object(parts[0], "header")?;
    let claims = decode_object(parts[1], "claims")?;
    let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
    Ok(UnverifiedToken {
        header,
        claims,
        signing_input,
        signature: parts[2],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn splits_a_token_and_keeps_the_signing_input() {
        let t = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"iss":"x"}"#)
        );
        let u = peek(&t).expect("parses");
        assert_eq!(u.header["alg"], "RS256");
        assert_eq!(u.claims["iss"], "x");
        assert_eq!(u.signature, "sig");
        assert!(
            t.starts_with(u.signing_input) && u.signing_input.ends_with(&b64(r#"{"iss":"x"}"#))
        );
    }

    #[test]
    fn refuses_non_objects_garbage_and_jwe() {
        for bad in [
            "",
            "abc",
            "a.b",
            &format!("{}.{}.s", b64("[1]"), b64("{}")),
            &format!("{}.{}.s", b64("{}"), b64("\"str\"")),
            "!!.??.s",
            "a.b.c.d.e",
            &format!("{}.{}.s", b64(r#"{"alg":"none","alg":"RS256"}"#), b64("{}")),
            &format!(
                "{}.{}.s",
                b64(r#"{"alg":"RS256"}"#),
                b64(r#"{"sub":"a","sub":"b"}"#)
            ),
        ] {
            assert_eq!(
                peek(bad).expect_err(bad).reason,
                Reason::MalformedToken,
                "{bad}"
            );
        }
    }
}
