//! Target `validator`: the logout-token rules with a fixed key set and a fixed clock.
//!
//! Input: one mode byte, then the rest. Modes 0-5 (mod 8) pick a fixed signer and read the
//! rest as `HEADER "\n" CLAIMS` (raw bytes, usually JSON): the target signs them, so mutations
//! reach the rules after the signature. Modes 6-7 read the rest as the token text itself.
//!
//! What must hold: no panic, no key-set fetch (no network), an accepted token's signature
//! verifies with a key of the set (checked independently with aws-lc-rs) and was not made by
//! the outsider key, every rule of an accepted token holds at the fixed clock, a rejection
//! named after the signature step implies a verifying signature, and details stay bounded.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use logout_ledger::config::{IssuerSettings, KeyFetchSettings, Secret};
use logout_ledger::keys::{KeyRegistry, KeySet};
use logout_ledger::logout_token::{Reason, Validator, Verdict};
use serde_json::Value;

use crate::fixtures::{self, AUDIENCES, ISSUER, NOW, OTHER_ISSUER, Signer};

/// Longest rejection detail allowed: a few bounded claim strings, each Debug-escaped.
pub const MAX_DETAIL_BYTES: usize = 8 * 1024 + 256;

struct Harness {
    runtime: tokio::runtime::Runtime,
    validator: Validator,
    registry: Arc<KeyRegistry>,
    digest: [u8; 32],
}

fn issuers() -> Vec<IssuerSettings> {
    // A loopback key-set URL that nothing serves, in case a fetch ever slipped through.
    let jwks_uri = "http://127.0.0.1:9/jwks".parse().ok();
    vec![
        IssuerSettings {
            issuer: ISSUER.into(),
            audiences: AUDIENCES.iter().map(|a| (*a).to_owned()).collect(),
            algorithms: vec![
                Algorithm::EdDSA,
                Algorithm::ES256,
                Algorithm::RS256,
                Algorithm::PS256,
                Algorithm::HS256,
            ],
            jwks_uri: jwks_uri.clone(),
            client_secret: Some(Secret::new(fixtures::CLIENT_SECRET.to_vec())),
            require_exp: true,
            leeway_secs: 60,
            max_token_age_secs: 300,
        },
        IssuerSettings {
            issuer: OTHER_ISSUER.into(),
            audiences: vec!["app".into()],
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
            jwks_uri,
            client_secret: None,
            require_exp: false,
            leeway_secs: 0,
            max_token_age_secs: 60,
        },
    ]
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let document = fixtures::keys().jwks().to_string();
        let (set, skipped) = KeySet::parse(document.as_bytes()).expect("fixed key set");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            set.keys.len(),
            3,
            "ed, ec and rsa are usable; enc and sym are not"
        );
        let digest = set.digest;
        let settings = KeyFetchSettings {
            refresh_cooldown: Duration::from_secs(10 * 365 * 86_400),
            allow_insecure_http: true,
            ..KeyFetchSettings::default()
        };
        let issuers = issuers();
        let registry = runtime.block_on(async {
            KeyRegistry::preloaded(&issuers, settings, [(ISSUER.to_owned(), set)])
                .expect("registry")
        });
        let registry = Arc::new(registry);
        let validator = Validator::new(Arc::new(issuers), Arc::clone(&registry));
        Harness {
            runtime,
            validator,
            registry,
            digest,
        }
    })
}

/// Builds the token a fuzz input stands for, and the signer when the target signed it.
pub fn token_of(data: &[u8]) -> Option<(String, Option<Signer>)> {
    let (&mode, rest) = data.split_first()?;
    match Signer::ALL.get(usize::from(mode % 8)) {
        Some(&signer) => {
            let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let (header, claims) = (&rest[..cut], rest.get(cut + 1..).unwrap_or_default());
            let token = fixtures::keys().token(signer, header, claims);
            Some((token, Some(signer)))
        }
        None => Some((String::from_utf8_lossy(rest).into_owned(), None)),
    }
}

/// Whether the token's own signature verifies with a key of the set, per the oracle.
fn signature_holds(token: &str) -> bool {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [h, c, s] = parts[..] else { return false };
    let header: Option<Value> = URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let Some(alg) = header
        .as_ref()
        .and_then(|v| v.get("alg"))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(s) else {
        return false;
    };
    fixtures::keys().any_key_verifies(alg, format!("{h}.{c}").as_bytes(), &sig)
}

fn check_accepted(v: &Verdict, signer: Option<Signer>, token: &str, digest: [u8; 32]) {
    assert_ne!(signer, Some(Signer::Outsider), "accepted a forged token");
    assert!(
        signature_holds(token),
        "accepted a token no key of the set signed"
    );
    let f = &v.facts;
    assert_eq!(f.iss.as_deref(), Some(ISSUER), "only ISSUER has keys");
    let aud = f.aud.as_ref().expect("aud");
    assert!(!aud.is_empty() && aud.iter().all(|a| AUDIENCES.contains(&a.as_str())));
    let (iat, exp) = (f.iat.expect("iat"), f.exp.expect("exp is required"));
    let (now, iat, exp) = (i128::from(NOW), i128::from(iat), i128::from(exp));
    assert!(now <= exp + 60, "expired");
    assert!(iat <= now + 60 && now - iat <= 360, "iat out of window");
    assert!(f.sub.is_some() || f.sid.is_some(), "neither sub nor sid");
    assert!(f.jti.as_ref().is_some_and(|j| !j.is_empty()), "no jti");
    assert!(f.events.is_some(), "no events");
    let alg = f.alg.as_deref().expect("alg");
    if alg == "HS256" {
        assert_eq!(f.key_set_digest, None, "HS256 uses no key set");
    } else {
        assert_eq!(f.key_set_digest, Some(digest), "digest of the loaded set");
    }
    if let Some(s) = signer {
        assert_eq!(
            alg,
            s.alg(),
            "accepted under another algorithm than it was signed"
        );
    }
}

/// Runs one input through the validator and checks what must hold.
pub fn check(data: &[u8]) {
    let Some((token, signer)) = token_of(data) else {
        return;
    };
    let h = harness();
    let verdict = h.runtime.block_on(h.validator.validate(&token, NOW));
    assert_eq!(h.registry.fetch_count(), 0, "a key-set fetch was attempted");
    match &verdict.result {
        Ok(()) => check_accepted(&verdict, signer, &token, h.digest),
        Err(r) => {
            assert!(
                r.detail.len() <= MAX_DETAIL_BYTES,
                "{} detail of {} bytes",
                r.reason,
                r.detail.len()
            );
            assert!(!r.body_too_large);
            let transient = r.reason == Reason::KeysUnavailable;
            assert_eq!(r.http_status(), if transient { 503 } else { 400 });
            assert!(!matches!(
                r.reason,
                Reason::MalformedRequest | Reason::Replay | Reason::StoreUnavailable
            ));
            if !r.reason.is_unverified() {
                assert_ne!(
                    signer,
                    Some(Signer::Outsider),
                    "forgery got past the signature"
                );
                assert!(
                    signature_holds(&token),
                    "{} without a valid signature",
                    r.reason
                );
            }
        }
    }
}

/// Whether the validator accepts the token an input stands for (after [`check`] held).
pub fn accepts(data: &[u8]) -> bool {
    check(data);
    let Some((token, _)) = token_of(data) else {
        return false;
    };
    let h = harness();
    let verdict = h.runtime.block_on(h.validator.validate(&token, NOW));
    verdict.result.is_ok()
}
