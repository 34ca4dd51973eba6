//! Target `jwks`: the key-set parser and key selection.
//!
//! Input: a key-set document. The lookups tried are every algorithm, with no `kid`, with each
//! `kid` the set holds, and with one that it does not.
//!
//! What must hold: no panic; a document is refused exactly when it is not a JSON object with a
//! `keys` array; at most `MAX_KEYS` keys are read; the digest is SHA-256 of the bytes; a
//! selection returns only keys that fit the algorithm (kind and own `alg`), one per `kid`.

use aws_lc_rs::digest;
use jsonwebtoken::Algorithm;
use logout_ledger::keys::jwks::MAX_KEYS;
use logout_ledger::keys::{KeyMatch, KeySet};
use serde_json::Value;

const ALGS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Runs one input through the key-set parser and selection and checks what must hold.
pub fn check(data: &[u8]) {
    let is_set = serde_json::from_slice::<Value>(data)
        .ok()
        .is_some_and(|v| v.get("keys").is_some_and(Value::is_array));
    let (set, skipped) = match KeySet::parse(data) {
        Ok(parsed) => parsed,
        Err(_) => {
            assert!(!is_set, "refused a JSON object with a keys array");
            return;
        }
    };
    assert!(is_set, "accepted a document without a keys array");
    assert!(set.keys.len() + skipped.len() <= MAX_KEYS);
    let sha = digest::digest(&digest::SHA256, data);
    assert_eq!(&set.digest[..], sha.as_ref());
    assert_eq!(set.digest_hex().len(), 64);

    let mut kids: Vec<Option<&str>> = set.keys.iter().map(|k| k.kid.as_deref()).collect();
    kids.push(None);
    kids.push(Some("\u{0}no-such-kid"));
    for alg in ALGS {
        for kid in &kids {
            let fitting = |k: &&logout_ledger::keys::VerificationKey| {
                k.kind.fits(alg) && k.alg.is_none_or(|a| a == alg)
            };
            match (set.select(*kid, alg), kid) {
                (KeyMatch::Found(found), Some(kid)) => {
                    let first = set.keys.iter().find(|k| k.kid.as_deref() == Some(*kid));
                    assert!(first.is_some_and(|k| fitting(&k)), "{kid:?} does not fit");
                    assert_eq!(found.len(), 1);
                }
                (KeyMatch::Found(found), None) => {
                    let n = set.keys.iter().filter(fitting).count();
                    assert!(n > 0 && found.len() == n, "{alg:?}: {} of {n}", found.len());
                }
                (KeyMatch::Unsuitable(_), Some(kid)) => {
                    let first = set.keys.iter().find(|k| k.kid.as_deref() == Some(*kid));
                    assert!(first.is_some_and(|k| !fitting(&k)));
                }
                (KeyMatch::Unsuitable(_), None) => panic!("unsuitable without a kid"),
                (KeyMatch::NotFound, Some(kid)) => {
                    assert!(set.keys.iter().all(|k| k.kid.as_deref() != Some(*kid)));
                }
                (KeyMatch::NotFound, None) => {
                    assert!(!set.keys.iter().any(|k| fitting(&k)), "{alg:?} missed");
                }
            }
        }
    }
}
