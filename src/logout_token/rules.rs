//! The rules of §2.6 that need only the token and the issuer's settings (no key): the header
//! (steps 2 and 3), the claims (step 4), `sub`/`sid` (5), `events` (6), `nonce` (7) and `jti`
//! (8). Each refusal names its [`Step`].

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{
    BACKCHANNEL_LOGOUT_EVENT, Reason, Rejection, Step, bounded, jws_algorithm, numeric, reject,
};
use crate::config::IssuerSettings;

/// The header's `alg` name, read before anything else; a `crit` header refuses the token
/// (RFC 8725 §3.1: no JWS extension is implemented, so none can be honoured when verifying).
pub(super) fn header_alg(header: &Map<String, Value>) -> Result<&str, Rejection> {
    if header.contains_key("crit") {
        return reject(
            Step::Signature,
            Reason::MalformedToken,
            "crit header present; no JWS extensions are implemented",
        );
    }
    match header.get("alg") {
        Some(Value::String(a)) => Ok(a.as_str()),
        Some(_) => reject(
            Step::Algorithm,
            Reason::MalformedToken,
            "header alg is not a string",
        ),
        None => reject(Step::Algorithm, Reason::MalformedToken, "header has no alg"),
    }
}

/// Step 3, checked before the signature so the key is never used with a foreign alg: the
/// algorithm this issuer allows, an accepted `typ`, and the `kid` step 2 looks keys up by.
pub(super) fn header_rules<'h>(
    issuer: &IssuerSettings,
    header: &'h Map<String, Value>,
    alg_name: &str,
) -> Result<(Algorithm, Option<&'h str>), Rejection> {
    if alg_name.eq_ignore_ascii_case("none") {
        return reject(
            Step::Algorithm,
            Reason::UnsupportedAlg,
            "alg none is never accepted",
        );
    }
    let alg = match jws_algorithm(alg_name) {
        Some(a) if issuer.algorithms.contains(&a) => a,
        _ => {
            return reject(
                Step::Algorithm,
                Reason::UnsupportedAlg,
                format!("alg {:?} is not allowed for this issuer", bounded(alg_name)),
            );
        }
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ_allowed(typ) => {}
        Some(other) => {
            return reject(
                Step::Algorithm,
                Reason::BadTyp,
                format!(
                    "typ {} is not JWT or logout+jwt",
                    bounded(&other.to_string())
                ),
            );
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => {
            return reject(
                Step::Signature,
                Reason::MalformedToken,
                "kid is not a string",
            );
        }
    };
    Ok((alg, kid))
}

/// Step 4's `aud`: names our client ids and nothing else.
pub(super) fn check_audience(
    issuer: &IssuerSettings,
    aud: Option<&Value>,
) -> Result<(), Rejection> {
    let auds: Vec<&str> = match aud {
        None => return reject(Step::Claims, Reason::MissingClaim, "aud is missing"),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => {
            let strs: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            match strs {
                Some(v) if !v.is_empty() => v,
                _ => {
                    return reject(
                        Step::Claims,
                        Reason::WrongAudience,
                        "aud must be a string or a non-empty array of strings",
                    );
                }
            }
        }
        Some(_) => {
            return reject(
                Step::Claims,
                Reason::WrongAudience,
                "aud must be a string or an array of strings",
            );
        }
    };
    if let Some(untrusted) = auds
        .iter()
        .find(|a| !issuer.audiences.iter().any(|c| c == *a))
    {
        let ours = auds.iter().any(|a| issuer.audiences.iter().any(|c| c == a));
        let detail = if ours {
            format!(
                "aud also names the untrusted audience {:?}",
                bounded(untrusted)
            )
        } else {
            format!(
                "aud {:?} names none of the configured audiences",
                bounded(untrusted)
            )
        };
        return reject(Step::Claims, Reason::WrongAudience, detail);
    }
    Ok(())
}

/// A NumericDate claim, if present; anything else there refuses the token.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match numeric(v) {
            Some(n) => Ok(Some(n)),
            None => reject(
                Step::Claims,
                Reason::MalformedToken,
                format!("{name} is not a number"),
            ),
        },
    }
}

/// Step 4's times: `exp` (+leeway; required per issuer), `iat` not in the future, `nbf` if
/// present, then `iat` not older than the maximum age; every window widened by the leeway.
pub(super) fn check_times(
    issuer: &IssuerSettings,
    claims: &Map<String, Value>,
    now: i64,
) -> Result<(), Rejection> {
    let leeway = issuer.leeway_secs;
    match time_claim(claims, "exp")? {
        Some(exp) if now > exp.saturating_add(leeway) => {
            return reject(
                Step::Claims,
                Reason::Expired,
                format!(
                    "exp {exp} is {}s in the past (leeway {leeway}s)",
                    now.saturating_sub(exp)
                ),
            );
        }
        Some(_) => {}
        None if issuer.require_exp => {
            return reject(Step::Claims, Reason::MissingClaim, "exp is missing");
        }
        None => {}
    }
    let Some(iat) = time_claim(claims, "iat")? else {
        return reject(Step::Claims, Reason::MissingClaim, "iat is missing");
    };
    if iat > now.saturating_add(leeway) {
        return reject(
            Step::Claims,
            Reason::IssuedInFuture,
            format!(
                "iat {iat} is {}s in the future (leeway {leeway}s)",
                iat.saturating_sub(now)
            ),
        );
    }
    if let Some(nbf) = time_claim(claims, "nbf")?
        && nbf > now.saturating_add(leeway)
    {
        return reject(
            Step::Claims,
            Reason::NotYetValid,
            format!(
                "nbf {nbf} is {}s in the future (leeway {leeway}s)",
                nbf.saturating_sub(now)
            ),
        );
    }
    let max_age = issuer.max_token_age_secs.saturating_add(leeway);
    if now.saturating_sub(iat) > max_age {
        return reject(
            Step::Claims,
            Reason::TooOld,
            format!(
                "iat {iat} is {}s old, more than {}s (+{leeway}s leeway)",
                now.saturating_sub(iat),
                issuer.max_token_age_secs
            ),
        );
    }
    Ok(())
}

/// Whether a header `typ` is one a logout token may carry (RFC 8725 §3.11).
fn typ_allowed(typ: &str) -> bool {
    let t = typ.to_ascii_lowercase();
    let t = t.strip_prefix("application/").unwrap_or(&t);
    t == "jwt" || t == "logout+jwt"
}

/// Step 5: `sub` or `sid` (an empty string counts as absent).
pub(super) fn check_subject(claims: &Map<String, Value>) -> Result<(), Rejection> {
    for name in ["sub", "sid"] {
        if claims.get(name).is_some_and(|v| !v.is_string()) {
            return reject(
                Step::SubjectOrSession,
                Reason::MalformedToken,
                format!("{name} is not a string"),
            );
        }
    }
    let named = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if named("sub") || named("sid") {
        Ok(())
    } else {
        reject(
            Step::SubjectOrSession,
            Reason::MissingSubAndSid,
            "neither sub nor sid is present (an empty string counts as absent)",
        )
    }
}

/// Step 6: `events` holds the back-channel logout member, and it is a JSON object.
pub(super) fn check_events(claims: &Map<String, Value>) -> Result<(), Rejection> {
    let Some(events) = claims.get("events") else {
        return reject(Step::Events, Reason::MissingClaim, "events is missing");
    };
    match events.get(BACKCHANNEL_LOGOUT_EVENT) {
        Some(Value::Object(_)) if events.is_object() => Ok(()),
        Some(_) => reject(
            Step::Events,
            Reason::BadEvents,
            "the back-channel logout event is not a JSON object",
        ),
        None => reject(
            Step::Events,
            Reason::BadEvents,
            format!("events has no {BACKCHANNEL_LOGOUT_EVENT} member"),
        ),
    }
}

/// Step 7: a logout token never carries a `nonce`.
pub(super) fn check_nonce(claims: &Map<String, Value>) -> Result<(), Rejection> {
    if claims.contains_key("nonce") {
        return reject(
            Step::Nonce,
            Reason::NoncePresent,
            "a logout token must not contain nonce",
        );
    }
    Ok(())
}

/// Step 8 needs a `jti`; the replay check itself is the store's (it sees every write).
pub(super) fn check_jti(claims: &Map<String, Value>) -> Result<(), Rejection> {
    match claims.get("jti") {
        Some(Value::String(j)) if !j.is_empty() => Ok(()),
        Some(Value::String(_)) => reject(Step::Jti, Reason::MissingClaim, "jti is empty"),
        Some(_) => reject(Step::Jti, Reason::MalformedToken, "jti is not a string"),
        None => reject(Step::Jti, Reason::MissingClaim, "jti is missing"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// An issuer allowing RS256 for two audiences, 60 s leeway, 300 s maximum age.
    pub(crate) fn issuer() -> IssuerSettings {
        IssuerSettings {
            issuer: "https://op.example/".into(),
            audiences: vec!["app".into(), "app2".into()],
            algorithms: vec![Algorithm::RS256],
            jwks_uri: None,
            client_secret: None,
            require_exp: true,
            leeway_secs: 60,
            max_token_age_secs: 300,
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn audience_must_be_ours_and_only_ours() {
        let i = issuer();
        assert!(check_audience(&i, Some(&json!("app"))).is_ok());
        assert!(check_audience(&i, Some(&json!(["app", "app2"]))).is_ok());
        for bad in [
            json!("appINVALID"),
            json!(["app", "evil"]),
            json!([]),
            json!(7),
            json!([1]),
        ] {
            assert_eq!(
                check_audience(&i, Some(&bad)).expect_err("bad").reason,
                Reason::WrongAudience,
                "{bad}"
            );
        }
        assert_eq!(
            check_audience(&i, None).expect_err("none").reason,
            Reason::MissingClaim
        );
    }

    #[test]
    fn leeway_widens_every_window() {
        let i = issuer();
        let now = 1_000_000;
        let ok = |c: Value| check_times(&i, &claims(c), now);
        let code = |c: Value| ok(c).expect_err("rejected").reason;
        assert!(
            ok(json!({"iat": now, "exp": now - 60})).is_ok(),
            "exp within leeway"
        );
        assert_eq!(code(json!({"iat": now, "exp": now - 61})), Reason::Expired);
        assert!(
            ok(json!({"iat": now + 60, "exp": now + 120})).is_ok(),
            "iat within leeway"
        );
        assert_eq!(
            code(json!({"iat": now + 61, "exp": now + 200})),
            Reason::IssuedInFuture
        );
        assert!(
            ok(json!({"iat": now - 360, "exp": now + 10})).is_ok(),
            "age within leeway"
        );
        assert_eq!(
            code(json!({"iat": now - 361, "exp": now + 10})),
            Reason::TooOld
        );
        assert_eq!(code(json!({"iat": now})), Reason::MissingClaim);
        assert_eq!(code(json!({"exp": now + 10})), Reason::MissingClaim);
        assert_eq!(
            code(json!({"exp": "soon", "iat": now})),
            Reason::MalformedToken
        );
        assert!(ok(json!({"iat": now as f64 + 0.5, "exp": now + 10})).is_ok());
        assert!(
            ok(json!({"iat": now, "nbf": now + 60, "exp": now + 120})).is_ok(),
            "nbf within leeway"
        );
        assert_eq!(
            code(json!({"iat": now, "nbf": now + 61, "exp": now + 120})),
            Reason::NotYetValid
        );
        assert_eq!(
            code(json!({"iat": now, "nbf": "later", "exp": now + 120})),
            Reason::MalformedToken
        );
        assert_eq!(
            code(json!({"iat": now + 61, "nbf": now + 61, "exp": now + 200})),
            Reason::IssuedInFuture,
            "iat is checked first"
        );
    }

    #[test]
    fn extreme_times_are_rejected_without_overflow() {
        // Found with the validator fuzz target: the details subtracted without saturating.
        let i = issuer();
        let code = |c: Value| {
            check_times(&i, &claims(c), 1_000_000)
                .expect_err("no")
                .reason
        };
        assert_eq!(
            code(json!({"iat": 1_000_000, "exp": -1e19})),
            Reason::Expired
        );
        assert_eq!(
            code(json!({"iat": -1e19, "exp": 2_000_000})),
            Reason::TooOld
        );
        assert_eq!(
            code(json!({"iat": 1e19, "exp": 2_000_000})),
            Reason::IssuedInFuture
        );
    }

    #[test]
    fn exp_may_be_optional_per_issuer() {
        let mut i = issuer();
        i.require_exp = false;
        assert!(check_times(&i, &claims(json!({"iat": 5})), 5).is_ok());
    }

    #[test]
    fn typ_values() {
        for ok in ["JWT", "jwt", "logout+jwt", "application/logout+jwt"] {
            assert!(typ_allowed(ok), "{ok}");
        }
        for bad in ["at+jwt", "JOSE", "", "secevent+jwt"] {
            assert!(!typ_allowed(bad), "{bad}");
        }
    }
}
