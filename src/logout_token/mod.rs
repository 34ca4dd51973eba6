//! Logout-token validation: the rules of OpenID Connect Back-Channel Logout 1.0 §2.6 and
//! RFC 8725, applied in order; the first failing rule names the rejection.

pub mod metadata;
mod rejection;
mod rules;
mod step;
mod strict_json;
pub mod unverified;

pub use metadata::{MetadataStatus, SessionMetadata};
pub use rejection::{Reason, Rejection};
pub use step::Step;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::config::IssuerSettings;
use crate::keys::{KeyLookupError, KeyRegistry};
use rules::{
    check_audience, check_events, check_jti, check_nonce, check_subject, check_times, header_alg,
    header_rules,
};

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

/// A rule of `step` refuses the token.
fn reject<T>(step: Step, reason: Reason, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::new(reason, detail).at(step))
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
                    result: Err(rejection.at(Step::Decrypt)),
                };
            }
        };
        let mut facts = read_facts(&parsed.header, &parsed.claims);
        let result = self.check(&parsed, &mut facts, now).await;
        Verdict { facts, result }
    }

    /// Every rule after the unverified peek, each tagged with its step of §2.6 (see
    /// [`Step`] for why the steps run in this order).
    async fn check(
        &self,
        t: &unverified::UnverifiedToken<'_>,
        facts: &mut TokenFacts,
        now: i64,
    ) -> Result<(), Rejection> {
        let (header, claims) = (&t.header, &t.claims);
        let alg_name = header_alg(header)?;
        let issuer = self.issuer_named(claims)?;
        let (alg, kid) = header_rules(issuer, header, alg_name)?;
        self.check_signature(t, issuer, kid, alg, facts).await?;
        check_audience(issuer, claims.get("aud"))?;
        check_times(issuer, claims, now)?;
        check_subject(claims)?;
        check_events(claims)?;
        check_nonce(claims)?;
        check_jti(claims)
    }

    /// Step 4's `iss`, read unverified and used only to pick the issuer whose rules apply;
    /// identifying claims over [`MAX_FIELD_CHARS`] are refused here, before `iss` is looked up.
    fn issuer_named(&self, claims: &Map<String, Value>) -> Result<&IssuerSettings, Rejection> {
        let iss = match claims.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return reject(Step::Claims, Reason::MalformedToken, "iss is not a string"),
            // Before the signature, so a rule that counts as unverified (found by fuzzing:
            // `missing_claim` marked an unsigned token's claims and metadata as verified).
            None => {
                return reject(
                    Step::Claims,
                    Reason::UnknownIssuer,
                    "iss is missing, so no configured issuer is named",
                );
            }
        };
        // Identifying claims are stored and keyed (replay) whole, so an over-long one is
        // refused, never cut; each under the step that reads its claim.
        for (name, step) in [
            ("iss", Step::Claims),
            ("jti", Step::Jti),
            ("sub", Step::SubjectOrSession),
            ("sid", Step::SubjectOrSession),
        ] {
            if let Some(Value::String(v)) = claims.get(name)
                && v.len() > MAX_FIELD_CHARS
            {
                return reject(
                    step,
                    Reason::MalformedToken,
                    format!("{name} is {} bytes, longer than {MAX_FIELD_CHARS}", v.len()),
                );
            }
        }
        match self.issuers.iter().find(|i| i.issuer == iss) {
            Some(issuer) => Ok(issuer),
            None => reject(
                Step::Claims,
                Reason::UnknownIssuer,
                format!("issuer {:?} is not configured", bounded(iss)),
            ),
        }
    }

    /// Step 2: the signature, with a key of this issuer only.
    async fn check_signature(
        &self,
        t: &unverified::UnverifiedToken<'_>,
        issuer: &IssuerSettings,
        kid: Option<&str>,
        alg: Algorithm,
        facts: &mut TokenFacts,
    ) -> Result<(), Rejection> {
        let candidates = self.keys_for(issuer, kid, alg, facts).await?;
        let verified = candidates.iter().any(|key| {
            jsonwebtoken::crypto::verify(t.signature, t.signing_input.as_bytes(), key, alg)
                .unwrap_or(false)
        });
        if verified {
            Ok(())
        } else {
            reject(
                Step::Signature,
                Reason::BadSignature,
                "signature does not verify",
            )
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
                    Step::Signature,
                    Reason::UnsupportedAlg,
                    "HS256 without a configured client secret",
                ),
            };
        }
        let Some(cache) = self.keys.issuer(&issuer.issuer) else {
            return reject(
                Step::Signature,
                Reason::UnknownIssuer,
                "issuer has no key cache",
            );
        };
        let found = self
            .keys
            .lookup(cache, kid, alg)
            .await
            .map_err(|e| match e {
                KeyLookupError::Unknown(d) => Rejection::new(Reason::UnknownKey, d),
                KeyLookupError::Unsuitable(d) => Rejection::new(Reason::UnsupportedAlg, d),
                KeyLookupError::Unavailable(d) => Rejection::new(Reason::KeysUnavailable, d),
            })
            .map_err(|r| r.at(Step::Signature))?;
        facts.key_set_digest = cache.current().map(|s| s.digest);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::rules::tests::issuer;
    use super::*;
    use serde_json::json;

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

    /// A compact JWS over `header` and `claims`, HMAC-SHA256 with `secret`.
    fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// A validator for one HS256 issuer, and what it says of tokens built from a valid one.
    struct Steps(Validator);

    impl Steps {
        const SECRET: &[u8] = b"a-client-secret-for-the-step-tests";
        const NOW: i64 = 1_000_000;

        fn new() -> Self {
            let mut i = issuer();
            i.algorithms = vec![Algorithm::HS256];
            i.client_secret = Some(crate::config::Secret::new(Self::SECRET.to_vec()));
            let issuers = vec![i];
            let none: [(String, crate::keys::KeySet); 0] = [];
            let settings = crate::config::KeyFetchSettings::default();
            let keys = KeyRegistry::preloaded(&issuers, settings, none).expect("registry");
            Self(Validator::new(Arc::new(issuers), Arc::new(keys)))
        }

        /// The reason and step refusing `token` (`None` for an accepted one).
        async fn of(&self, token: &str) -> Option<(Reason, Step)> {
            let r = self.0.validate(token, Self::NOW).await.result.err()?;
            Some((r.reason, r.step.expect("every rule names its step")))
        }

        /// [`Steps::of`] a token with `header`: the valid claims with each `(name, value)` set,
        /// or removed where the value is `None`; signed with the issuer's secret.
        async fn with(
            &self,
            header: Value,
            edits: &[(&str, Option<Value>)],
        ) -> Option<(Reason, Step)> {
            self.of(&Self::token(Self::SECRET, &header, edits)).await
        }

        /// The token [`Steps::with`] judges, signed with `secret`.
        fn token(secret: &[u8], header: &Value, edits: &[(&str, Option<Value>)]) -> String {
            let mut claims = json!({"iss": "https://op.example/", "aud": "app",
                "iat": Self::NOW, "exp": Self::NOW + 120, "jti": "j-1", "sub": "s", "sid": "x",
                "events": {BACKCHANNEL_LOGOUT_EVENT: {}}});
            for (name, value) in edits {
                match value {
                    Some(v) => claims[*name] = v.clone(),
                    None => {
                        if let Some(m) = claims.as_object_mut() {
                            m.remove(*name);
                        }
                    }
                }
            }
            hs256(secret, header, &claims)
        }

        /// [`Steps::with`] the header `{"alg": "HS256"}`.
        async fn claims(&self, edits: &[(&str, Option<Value>)]) -> Option<(Reason, Step)> {
            self.with(json!({"alg": "HS256"}), edits).await
        }
    }

    #[tokio::test]
    async fn header_rules_name_steps_1_to_3() {
        use {Reason::*, Step::*};
        let s = Steps::new();
        assert_eq!(s.of("a.b").await, Some((MalformedToken, Decrypt)));
        assert_eq!(s.of("a.b.c.d.e").await, Some((MalformedToken, Decrypt)));
        let crit = json!({"alg": "HS256", "crit": ["x"]});
        assert_eq!(s.with(crit, &[]).await, Some((MalformedToken, Signature)));
        assert_eq!(
            s.with(json!({}), &[]).await,
            Some((MalformedToken, Algorithm))
        );
        let none = json!({"alg": "none"});
        assert_eq!(s.with(none, &[]).await, Some((UnsupportedAlg, Algorithm)));
        let rs = json!({"alg": "RS256"});
        assert_eq!(s.with(rs, &[]).await, Some((UnsupportedAlg, Algorithm)));
        let typ = json!({"alg": "HS256", "typ": "at+jwt"});
        assert_eq!(s.with(typ, &[]).await, Some((BadTyp, Algorithm)));
        let kid = json!({"alg": "HS256", "kid": 7});
        assert_eq!(s.with(kid, &[]).await, Some((MalformedToken, Signature)));
        let forged = Steps::token(b"another-secret", &json!({"alg": "HS256"}), &[]);
        assert_eq!(s.of(&forged).await, Some((BadSignature, Signature)));
        assert_eq!(s.claims(&[]).await, None, "the valid token passes");
    }

    #[tokio::test]
    async fn claim_rules_name_steps_4_to_8() {
        use {Reason::*, Step::*};
        let s = Steps::new();
        let set = |name, v: Value| [(name, Some(v))];
        let other = json!("https://other.example/");
        assert_eq!(
            s.claims(&set("iss", other)).await,
            Some((UnknownIssuer, Claims))
        );
        assert_eq!(
            s.claims(&[("iss", None)]).await,
            Some((UnknownIssuer, Claims))
        );
        let long = json!("x".repeat(2000));
        assert_eq!(
            s.claims(&set("jti", long.clone())).await,
            Some((MalformedToken, Jti))
        );
        let sid = set("sid", long);
        assert_eq!(
            s.claims(&sid).await,
            Some((MalformedToken, SubjectOrSession))
        );
        assert_eq!(
            s.claims(&set("aud", json!("nope"))).await,
            Some((WrongAudience, Claims))
        );
        let old = set("exp", json!(Steps::NOW - 600));
        assert_eq!(s.claims(&old).await, Some((Expired, Claims)));
        assert_eq!(
            s.claims(&[("iat", None)]).await,
            Some((MissingClaim, Claims))
        );
        let sub = set("sub", json!(1));
        assert_eq!(
            s.claims(&sub).await,
            Some((MalformedToken, SubjectOrSession))
        );
        let nobody = [("sub", Some(json!(""))), ("sid", None)];
        assert_eq!(
            s.claims(&nobody).await,
            Some((MissingSubAndSid, SubjectOrSession))
        );
        assert_eq!(
            s.claims(&[("events", None)]).await,
            Some((MissingClaim, Events))
        );
        let events = set("events", json!({"x": {}}));
        assert_eq!(s.claims(&events).await, Some((BadEvents, Events)));
        assert_eq!(
            s.claims(&set("nonce", json!("n"))).await,
            Some((NoncePresent, Nonce))
        );
        assert_eq!(s.claims(&[("jti", None)]).await, Some((MissingClaim, Jti)));
        assert_eq!(
            s.claims(&set("jti", json!(""))).await,
            Some((MissingClaim, Jti))
        );
    }

    #[test]
    fn ed25519_is_eddsa() {
        assert_eq!(jws_algorithm("Ed25519"), Some(Algorithm::EdDSA));
        assert_eq!(jws_algorithm("EdDSA"), Some(Algorithm::EdDSA));
        assert_eq!(jws_algorithm("RS256"), Some(Algorithm::RS256));
        assert_eq!(jws_algorithm("ed25519"), None);
        assert_eq!(jws_algorithm("Ed448"), None);
    }
}
