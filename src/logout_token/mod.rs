//! Logout-token validation: the rules of OpenID Connect Back-Channel Logout 1.0 §2.6 and
//! RFC 8725, applied in order; the first failing rule names the rejection.

pub mod metadata;
mod rejection;
mod strict_json;
pub mod unverified;

pub use metadata::{MetadataStatus, SessionMetadata};
pub use rejection::{Reason, Rejection};

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::config::IssuerSettings;
use crate::keys::{KeyLookupError, KeyRegistry};

/// The `events` member that marks a logout token.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Longest claim string kept from a token (rejected tokens are attacker-controlled).
const MAX_FIELD_CHARS: usize = 1024;

/// What the audit record says about a token, verified or not. Strings are bounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenFacts {
    /// `iss` claim.
    pub iss: Option<String>,
    /// `sub` claim.
    pub sub: Option<String>,
    /// `sid` claim.
    pub sid: Option<String>,
    /// `jti` claim.
    pub jti: Option<String>,
    /// `aud`, always as a list.
    pub aud: Option<Vec<String>>,
    /// `iat` in seconds.
    pub iat: Option<i64>,
    /// `exp` in seconds.
    pub exp: Option<i64>,
    /// Header `alg`.
    pub alg: Option<String>,
    /// Header `kid`.
    pub kid: Option<String>,
    /// Header `typ`.
    pub typ: Option<String>,
    /// `events` claim as JSON.
    pub events: Option<String>,
    /// The `session_metadata` claim, read against Auth0's limits.
    pub metadata: Option<SessionMetadata>,
    /// Digest of the key set that verified the signature.
    pub key_set_digest: Option<[u8; 32]>,
}

/// The verdict on one token: what it says, and whether every rule held.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The token's fields (unverified unless `result` is `Ok`).
    pub facts: TokenFacts,
    /// `Ok` when every rule of §2.6 (except the replay check, done by the store) held.
    pub result: Result<(), Rejection>,
}

/// A claim string as the audit record keeps it: at most [`MAX_FIELD_CHARS`] bytes, and NUL
/// characters (which PostgreSQL text cannot hold) as U+FFFD, so both backends store the same.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_FIELD_CHARS);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &s[..end];
    if kept.contains('\0') {
        kept.replace('\0', "\u{FFFD}")
    } else {
        kept.to_owned()
    }
}

fn opt_str(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.get(name).and_then(Value::as_str).map(bounded)
}

/// A claim string that counts only when non-empty (`sub: ""` names no subject).
fn opt_nonempty(map: &Map<String, Value>, name: &str) -> Option<String> {
    opt_str(map, name).filter(|s| !s.is_empty())
}

/// The algorithm a JWS `alg` name selects (the key set's parser needs it too, so it lives
/// with the keys).
pub use crate::keys::jws_algorithm;

fn numeric(v: &Value) -> Option<i64> {
    // NumericDate may carry a fraction; the whole seconds are what the rules compare.
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
    })
}

fn read_facts(header: &Map<String, Value>, claims: &Map<String, Value>) -> TokenFacts {
    let aud = match claims.get("aud") {
        Some(Value::String(s)) => Some(vec![bounded(s)]),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .take(32)
                .filter_map(Value::as_str)
                .map(bounded)
                .collect(),
        ),
        _ => None,
    };
    TokenFacts {
        iss: opt_str(claims, "iss"),
        sub: opt_nonempty(claims, "sub"),
        sid: opt_nonempty(claims, "sid"),
        jti: opt_str(claims, "jti"),
        aud,
        iat: claims.get("iat").and_then(numeric),
        exp: claims.get("exp").and_then(numeric),
        alg: opt_str(header, "alg"),
        kid: opt_str(header, "kid"),
        typ: opt_str(header, "typ"),
        events: claims.get("events").map(|v| bounded(&v.to_string())),
        metadata: Some(SessionMetadata::from_claim(claims.get("session_metadata"))),
        key_set_digest: None,
    }
}

/// Checks logout tokens against the configured issuers.
#[derive(Debug, Clone)]
pub struct Validator {
    issuers: Arc<Vec<IssuerSettings>>,
    keys: Arc<KeyRegistry>,
}

fn reject<T>(reason: Reason, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::new(reason, detail))
}

fn typ_allowed(typ: &str) -> bool {
    let t = typ.to_ascii_lowercase();
    let t = t.strip_prefix("application/").unwrap_or(&t);
    t == "jwt" || t == "logout+jwt"
}

impl Validator {
    /// Builds a validator over the configured issuers and their key caches.
    pub fn new(issuers: Arc<Vec<IssuerSettings>>, keys: Arc<KeyRegistry>) -> Self {
        Self { issuers, keys }
    }

    /// Validates one token at `now` (seconds since the epoch).
    pub async fn validate(&self, token: &str, now: i64) -> Verdict {
        let parsed = match unverified::peek(token) {
            Ok(p) => p,
            Err(rejection) => {
                return Verdict {
                    facts: TokenFacts::default(),
                    result: Err(rejection),
                };
            }
        };
        let mut facts = read_facts(&parsed.header, &parsed.claims);
        let result = self.check(&parsed, &mut facts, now).await;
        Verdict { facts, result }
    }

    async fn check(
        &self,
        t: &unverified::UnverifiedToken<'_>,
        facts: &mut TokenFacts,
        now: i64,
    ) -> Result<(), Rejection> {
        let (header, claims) = (&t.header, &t.claims);

        // Header rules that must hold before any key is used (RFC 8725 §3.1, §3.11).
        if header.contains_key("crit") {
            return reject(
                Reason::MalformedToken,
                "crit header present; no JWS extensions are implemented",
            );
        }
        let alg_name = match header.get("alg") {
            Some(Value::String(a)) => a.as_str(),
            Some(_) => return reject(Reason::MalformedToken, "header alg is not a string"),
            None => return reject(Reason::MalformedToken, "header has no alg"),
        };

        // The unverified iss only selects which issuer's rules apply.
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return reject(Reason::MalformedToken, "iss is not a string"),
            // Before the signature, so a rule that counts as unverified (found by fuzzing:
            // `missing_claim` marked an unsigned token's claims and metadata as verified).
            None => {
                return reject(
                    Reason::UnknownIssuer,
                    "iss is missing, so no configured issuer is named",
                );
            }
        };
        // Identifying claims are stored and keyed (replay) whole, so an over-long one is
        // refused, never cut; `iss` before the issuer look-up reads it.
        for name in ["iss", "jti", "sub", "sid"] {
            if let Some(Value::String(v)) = claims.get(name)
                && v.len() > MAX_FIELD_CHARS
            {
                return reject(
                    Reason::MalformedToken,
                    format!("{name} is {} bytes, longer than {MAX_FIELD_CHARS}", v.len()),
                );
            }
        }
        let Some(issuer) = self.issuers.iter().find(|i| i.issuer == iss) else {
            return reject(
                Reason::UnknownIssuer,
                format!("issuer {:?} is not configured", bounded(iss)),
            );
        };

        // §2.6 step 3, checked before the signature so the key is never used with a foreign alg.
        if alg_name.eq_ignore_ascii_case("none") {
            return reject(Reason::UnsupportedAlg, "alg none is never accepted");
        }
        let alg = match jws_algorithm(alg_name) {
            Some(a) if issuer.algorithms.contains(&a) => a,
            _ => {
                return reject(
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
            Some(_) => return reject(Reason::MalformedToken, "kid is not a string"),
        };

        // §2.6 step 2: the signature, with a key of this issuer only.
        let candidates = self.keys_for(issuer, kid, alg, facts).await?;
        let verified = candidates.iter().any(|key| {
            jsonwebtoken::crypto::verify(t.signature, t.signing_input.as_bytes(), key, alg)
                .unwrap_or(false)
        });
        if !verified {
            return reject(Reason::BadSignature, "signature does not verify");
        }

        // §2.6 step 4: iss (exact, already matched), aud, exp, iat.
        check_audience(issuer, claims.get("aud"))?;
        check_times(issuer, claims, now)?;

        // §2.6 step 5: sub or sid.
        for name in ["sub", "sid"] {
            if claims.get(name).is_some_and(|v| !v.is_string()) {
                return reject(Reason::MalformedToken, format!("{name} is not a string"));
            }
        }
        let named = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        };
        if !named("sub") && !named("sid") {
            return reject(
                Reason::MissingSubAndSid,
                "neither sub nor sid is present (an empty string counts as absent)",
            );
        }

        // §2.6 step 6: events.
        let Some(events) = claims.get("events") else {
            return reject(Reason::MissingClaim, "events is missing");
        };
        match events.get(BACKCHANNEL_LOGOUT_EVENT) {
            Some(Value::Object(_)) if events.is_object() => {}
            Some(_) => {
                return reject(
                    Reason::BadEvents,
                    "the back-channel logout event is not a JSON object",
                );
            }
            None => {
                return reject(
                    Reason::BadEvents,
                    format!("events has no {BACKCHANNEL_LOGOUT_EVENT} member"),
                );
            }
        }

        // §2.6 step 7: nonce.
        if claims.contains_key("nonce") {
            return reject(
                Reason::NoncePresent,
                "a logout token must not contain nonce",
            );
        }

        // §2.6 step 8 needs a jti; the replay check itself is the store's (it sees every write).
        match claims.get("jti") {
            Some(Value::String(j)) if !j.is_empty() => Ok(()),
            Some(Value::String(_)) => reject(Reason::MissingClaim, "jti is empty"),
            Some(_) => reject(Reason::MalformedToken, "jti is not a string"),
            None => reject(Reason::MissingClaim, "jti is missing"),
        }
    }

    async fn keys_for(
        &self,
        issuer: &IssuerSettings,
        kid: Option<&str>,
        alg: Algorithm,
        facts: &mut TokenFacts,
    ) -> Result<Vec<DecodingKey>, Rejection> {
        if alg == Algorithm::HS256 {
            // Config validation guarantees the secret when HS256 is allowed.
            return match &issuer.client_secret {
                Some(secret) => Ok(vec![DecodingKey::from_secret(secret.expose())]),
                None => reject(
                    Reason::UnsupportedAlg,
                    "HS256 without a configured client secret",
                ),
            };
        }
        let Some(cache) = self.keys.issuer(&issuer.issuer) else {
            return reject(Reason::UnknownIssuer, "issuer has no key cache");
        };
        let found = self
            .keys
            .lookup(cache, kid, alg)
            .await
            .map_err(|e| match e {
                KeyLookupError::Unknown(d) => Rejection::new(Reason::UnknownKey, d),
                KeyLookupError::Unsuitable(d) => Rejection::new(Reason::UnsupportedAlg, d),
                KeyLookupError::Unavailable(d) => Rejection::new(Reason::KeysUnavailable, d),
            })?;
        facts.key_set_digest = cache.current().map(|s| s.digest);
        Ok(found)
    }
}

fn check_audience(issuer: &IssuerSettings, aud: Option<&Value>) -> Result<(), Rejection> {
    let auds: Vec<&str> = match aud {
        None => return reject(Reason::MissingClaim, "aud is missing"),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => {
            let strs: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            match strs {
                Some(v) if !v.is_empty() => v,
                _ => {
                    return reject(
                        Reason::WrongAudience,
                        "aud must be a string or a non-empty array of strings",
                    );
                }
            }
        }
        Some(_) => {
            return reject(
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
        return reject(Reason::WrongAudience, detail);
    }
    Ok(())
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => numeric(v).map(Some).ok_or_else(|| {
            Rejection::new(Reason::MalformedToken, format!("{name} is not a number"))
        }),
    }
}

fn check_times(
    issuer: &IssuerSettings,
    claims: &Map<String, Value>,
    now: i64,
) -> Result<(), Rejection> {
    let leeway = issuer.leeway_secs;
    match time_claim(claims, "exp")? {
        Some(exp) if now > exp.saturating_add(leeway) => {
            return reject(
                Reason::Expired,
                format!(
                    "exp {exp} is {}s in the past (leeway {leeway}s)",
                    now.saturating_sub(exp)
                ),
            );
        }
        Some(_) => {}
        None if issuer.require_exp => return reject(Reason::MissingClaim, "exp is missing"),
        None => {}
    }
    let Some(iat) = time_claim(claims, "iat")? else {
        return reject(Reason::MissingClaim, "iat is missing");
    };
    if iat > now.saturating_add(leeway) {
        return reject(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issuer() -> IssuerSettings {
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

    #[tokio::test]
    async fn missing_iss_is_refused_as_unverified() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let issuers = vec![issuer()];
        let none: [(String, crate::keys::KeySet); 0] = [];
        let settings = crate::config::KeyFetchSettings::default();
        let keys = KeyRegistry::preloaded(&issuers, settings, none).expect("registry");
        let validator = Validator::new(Arc::new(issuers), Arc::new(keys));
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = json!({"aud": "app", "jti": "j", "sub": "s", "iat": 5,
                            "session_metadata": {"org": "forged"}});
        let token = format!("{}.{}.c2ln", b64(json!({"alg": "RS256"})), b64(claims));
        let verdict = validator.validate(&token, 5).await;
        let r = verdict.result.expect_err("no iss");
        assert_eq!(r.reason, Reason::UnknownIssuer, "{r}");
        assert!(r.reason.is_unverified() && r.detail.contains("iss"), "{r}");
    }

    #[test]
    fn ed25519_is_eddsa() {
        assert_eq!(jws_algorithm("Ed25519"), Some(Algorithm::EdDSA));
        assert_eq!(jws_algorithm("EdDSA"), Some(Algorithm::EdDSA));
        assert_eq!(jws_algorithm("RS256"), Some(Algorithm::RS256));
        assert_eq!(jws_algorithm("ed25519"), None);
        assert_eq!(jws_algorithm("Ed448"), None);
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
