//! A fetched JSON Web Key Set, turned into verification keys and searchable by `kid` and `alg`.

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Most keys read from one set; the rest are ignored (a set is a handful of keys).
pub const MAX_KEYS: usize = 64;

/// The kind of public key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `kty: RSA`: RS* and PS*.
    Rsa,
    /// `kty: EC, crv: P-256`: ES256.
    P256,
    /// `kty: EC, crv: P-384`: ES384.
    P384,
    /// `kty: OKP, crv: Ed25519`: EdDSA.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this kind can verify `alg`.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

/// One usable signature-verification key.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    /// The key's id, if the set gives one.
    pub kid: Option<String>,
    /// Its kind.
    pub kind: KeyKind,
    /// The key's own `alg`, which then must match the token's.
    pub alg: Option<Algorithm>,
    /// The key, ready for `jsonwebtoken::crypto::verify`.
    pub key: DecodingKey,
}

/// A parsed key set.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// Usable keys (encryption keys and unknown types dropped).
    pub keys: Vec<VerificationKey>,
    /// SHA-256 of the key set document as fetched, naming this set in logs and the archive.
    pub digest: [u8; 32],
}

/// What a key search found.
#[derive(Debug)]
pub enum KeyMatch<'a> {
    /// Keys to try, in order (one when the token names a `kid`).
    Found(Vec<&'a DecodingKey>),
    /// The `kid` exists but cannot verify this `alg`; the text says why.
    Unsuitable(String),
    /// No key with this `kid` (or, without `kid`, no key of the right kind).
    NotFound,
}

/// Why a key-set document was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    #[error("key set is not a JSON object with a \"keys\" array")]
    NotAKeySet,
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

/// The algorithm a JWS `alg` name selects; `Ed25519` (RFC 9864) is the fully-specified
/// name of what `EdDSA` means for an Ed25519 key, the only EdDSA curve accepted here.
pub fn jws_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "Ed25519" => Some(Algorithm::EdDSA),
        other => other.parse::<Algorithm>().ok(),
    }
}

fn parse_key(v: &Value) -> Option<Result<VerificationKey, String>> {
    if str_field(v, "use").is_some_and(|u| u != "sig") {
        return None; // encryption keys never verify signatures
    }
    // RFC 7517 §4.3: a key whose listed operations leave out `verify` is not for us.
    match v.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if !ops.iter().any(|op| op.as_str() == Some("verify")) => {
            return None;
        }
        Some(Value::Array(_)) => {}
        Some(_) => return Some(Err("key_ops is not an array".into())),
    }
    let kid = str_field(v, "kid").map(str::to_owned);
    let alg = match str_field(v, "alg") {
        None => None,
        Some(name) => match jws_algorithm(name) {
            Some(a) => Some(a),
            None => return Some(Err(format!("unknown alg {name:?}"))),
        },
    };
    let built = match (str_field(v, "kty"), str_field(v, "crv")) {
        (Some("RSA"), _) => match (str_field(v, "n"), str_field(v, "e")) {
            (Some(n), Some(e)) => DecodingKey::from_rsa_components(n, e).map(|k| (KeyKind::Rsa, k)),
            _ => return Some(Err("RSA key without n/e".into())),
        },
        (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
            match (str_field(v, "x"), str_field(v, "y")) {
                (Some(x), Some(y)) => DecodingKey::from_ec_components(x, y).map(|k| {
                    let kind = if crv == "P-256" {
                        KeyKind::P256
                    } else {
                        KeyKind::P384
                    };
                    (kind, k)
                }),
                _ => return Some(Err("EC key without x/y".into())),
            }
        }
        (Some("OKP"), Some("Ed25519")) => match str_field(v, "x") {
            Some(x) => DecodingKey::from_ed_components(x).map(|k| (KeyKind::Ed25519, k)),
            None => return Some(Err("OKP key without x".into())),
        },
        // Symmetric keys are never taken from a published set; other types are not ours.
        _ => return None,
    };
    Some(match built {
        Ok((kind, key)) => Ok(VerificationKey {
            kid,
            kind,
            alg,
            key,
        }),
        Err(e) => Err(e.to_string()),
    })
}

impl KeySet {
    /// Parses a key-set document; bad individual keys are skipped and reported.
    pub fn parse(body: &[u8]) -> Result<(Self, Vec<String>), JwksError> {
        let doc: Value = serde_json::from_slice(body).map_err(|_| JwksError::NotAKeySet)?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAKeySet)?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, v) in list.iter().take(MAX_KEYS).enumerate() {
            match parse_key(v) {
                Some(Ok(k)) => keys.push(k),
                Some(Err(why)) => skipped.push(format!("key #{i}: {why}")),
                None => {}
            }
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        Ok((Self { keys, digest: d }, skipped))
    }

    /// Finds the keys that may verify a token with this `kid` and `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> KeyMatch<'_> {
        match kid {
            Some(kid) => {
                let Some(k) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) else {
                    return KeyMatch::NotFound;
                };
                if !k.kind.fits(alg) {
                    return KeyMatch::Unsuitable(format!(
                        "key {kid:?} is {:?} and cannot verify {alg:?}",
                        k.kind
                    ));
                }
                if k.alg.is_some_and(|a| a != alg) {
                    return KeyMatch::Unsuitable(format!(
                        "key {kid:?} is for {:?}, token says {alg:?}",
                        k.alg
                    ));
                }
                KeyMatch::Found(vec![&k.key])
            }
            None => {
                let found: Vec<_> = self
                    .keys
                    .iter()
                    .filter(|k| k.kind.fits(alg) && k.alg.is_none_or(|a| a == alg))
                    .map(|k| &k.key)
                    .collect();
                if found.is_empty() {
                    KeyMatch::NotFound
                } else {
                    KeyMatch::Found(found)
                }
            }
        }
    }

    /// Lowercase hex of the digest.
    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }
}

/// Lowercase hex of bytes (kept here for callers of the former path).
pub use crate::util::hex;

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = r#"{"keys":[
        {"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
        {"kty":"RSA","kid":"enc1","use":"enc","n":"AQAB","e":"AQAB"},
        {"kty":"oct","kid":"h","k":"c2VjcmV0"},
        {"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
    ]}"#;

    #[test]
    fn drops_encryption_and_symmetric_keys() {
        let (set, skipped) = KeySet::parse(SET.as_bytes()).expect("parses");
        assert!(skipped.is_empty(), "{skipped:?}");
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec![Some("r1"), Some("e1")]);
    }

    #[test]
    fn selects_by_kid_and_checks_kind_and_alg() {
        let (set, _) = KeySet::parse(SET.as_bytes()).expect("parses");
        assert!(
            matches!(set.select(Some("r1"), Algorithm::RS256), KeyMatch::Found(v) if v.len() == 1)
        );
        assert!(matches!(
            set.select(Some("r1"), Algorithm::PS256),
            KeyMatch::Unsuitable(_)
        ));
        assert!(matches!(
            set.select(Some("r1"), Algorithm::ES256),
            KeyMatch::Unsuitable(_)
        ));
        assert!(matches!(
            set.select(Some("e1"), Algorithm::ES256),
            KeyMatch::Found(_)
        ));
        assert!(matches!(
            set.select(Some("h"), Algorithm::HS256),
            KeyMatch::NotFound
        ));
        assert!(matches!(
            set.select(Some("nope"), Algorithm::RS256),
            KeyMatch::NotFound
        ));
        assert!(matches!(set.select(None, Algorithm::ES256), KeyMatch::Found(v) if v.len() == 1));
        assert!(matches!(
            set.select(None, Algorithm::EdDSA),
            KeyMatch::NotFound
        ));
    }

    #[test]
    fn key_ops_without_verify_drop_the_key() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let doc = format!(
            r#"{{"keys":[
            {{"kty":"OKP","crv":"Ed25519","kid":"sign-only","key_ops":["sign"],"x":"{x}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"none","key_ops":[],"x":"{x}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"odd","key_ops":"verify","x":"{x}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"both","key_ops":["sign","verify"],"x":"{x}"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"fs","alg":"Ed25519","x":"{x}"}}
        ]}}"#
        );
        let (set, skipped) = KeySet::parse(doc.as_bytes()).expect("parses");
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec![Some("both"), Some("fs")]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(set.keys[1].alg, Some(Algorithm::EdDSA));
        assert!(matches!(
            set.select(Some("sign-only"), Algorithm::EdDSA),
            KeyMatch::NotFound
        ));
    }

    #[test]
    fn refuses_documents_that_are_not_key_sets() {
        assert!(KeySet::parse(b"[]").is_err());
        assert!(KeySet::parse(b"{\"keys\":{}}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
    }
}
