//! Fixed keys (deterministic Ed25519 seeds, committed P-256 and RSA test keys, an HS256
//! secret), the key set that publishes them, and a signer, so a crash always reproduces.

use std::sync::OnceLock;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// The issuer whose key set is loaded.
pub const ISSUER: &str = "https://op.example/";
/// A second configured issuer with no key set loaded (its lookups are `keys_unavailable`).
pub const OTHER_ISSUER: &str = "https://other.example/";
/// Audiences of [`ISSUER`].
pub const AUDIENCES: [&str; 2] = ["app", "app2"];
/// The fixed clock every validation runs at (seconds since the epoch).
pub const NOW: i64 = 1_800_000_000;
/// HS256 client secret of [`ISSUER`].
pub const CLIENT_SECRET: &[u8] = b"fuzz-client-secret-0123456789abcdef";

const P256_PKCS8: &[u8] = include_bytes!("../keys/p256.pk8.der");
const RSA_PKCS8: &[u8] = include_bytes!("../keys/rsa2048.pk8.der");

/// Which fixed key signs a structured token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// Ed25519, `kid` "ed", EdDSA.
    Ed25519,
    /// P-256, `kid` "ec", ES256.
    P256,
    /// RSA 2048, `kid` "rsa", RS256.
    RsaPkcs1,
    /// RSA 2048, `kid` "rsa", PS256.
    RsaPss,
    /// The client secret, HS256.
    Hs256,
    /// An Ed25519 key NOT in the set: nothing it signs may ever be accepted.
    Outsider,
}

impl Signer {
    /// Every signer, indexed by a fuzz input's mode byte.
    pub const ALL: [Signer; 6] = [
        Signer::Ed25519,
        Signer::P256,
        Signer::RsaPkcs1,
        Signer::RsaPss,
        Signer::Hs256,
        Signer::Outsider,
    ];

    /// The header `alg` that names this signer's algorithm.
    pub fn alg(self) -> &'static str {
        match self {
            Signer::Ed25519 | Signer::Outsider => "EdDSA",
            Signer::P256 => "ES256",
            Signer::RsaPkcs1 => "RS256",
            Signer::RsaPss => "PS256",
            Signer::Hs256 => "HS256",
        }
    }

    /// The `kid` a well-formed header names (HS256 has none).
    pub fn kid(self) -> Option<&'static str> {
        match self {
            Signer::Ed25519 | Signer::Outsider => Some("ed"),
            Signer::P256 => Some("ec"),
            Signer::RsaPkcs1 | Signer::RsaPss => Some("rsa"),
            Signer::Hs256 => None,
        }
    }
}

/// The fixed key material.
pub struct Keys {
    ed25519: Ed25519KeyPair,
    outsider: Ed25519KeyPair,
    p256: EcdsaKeyPair,
    rsa: RsaKeyPair,
    hmac: hmac::Key,
}

/// The fixed keys, built once per process.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        ed25519: Ed25519KeyPair::from_seed_unchecked(&[0x11; 32]).expect("ed25519 seed"),
        outsider: Ed25519KeyPair::from_seed_unchecked(&[0x22; 32]).expect("ed25519 seed"),
        p256: EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, P256_PKCS8)
            .expect("p256 test key"),
        rsa: RsaKeyPair::from_pkcs8(RSA_PKCS8).expect("rsa test key"),
        hmac: hmac::Key::new(hmac::HMAC_SHA256, CLIENT_SECRET),
    })
}

/// Base64url without padding, as JWS uses it.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Keys {
    /// Signs `message` with one fixed key (ES256 and PS256 are randomised, the rest are not).
    pub fn sign(&self, signer: Signer, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match signer {
            Signer::Ed25519 => self.ed25519.sign(message).as_ref().to_vec(),
            Signer::Outsider => self.outsider.sign(message).as_ref().to_vec(),
            Signer::P256 => self
                .p256
                .sign(&rng, message)
                .expect("ecdsa sign")
                .as_ref()
                .to_vec(),
            Signer::RsaPkcs1 | Signer::RsaPss => {
                let padding: &'static dyn signature::RsaEncoding = if signer == Signer::RsaPss {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut sig = vec![0; self.rsa.public_modulus_len()];
                self.rsa
                    .sign(padding, &rng, message, &mut sig)
                    .expect("rsa sign");
                sig
            }
            Signer::Hs256 => hmac::sign(&self.hmac, message).as_ref().to_vec(),
        }
    }

    /// `b64(header) "." b64(claims) "." b64(signature)` over raw header and claims bytes.
    pub fn token(&self, signer: Signer, header: &[u8], claims: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = self.sign(signer, input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// Independent oracle: whether `signature` over `input` verifies under `alg` with any key
    /// in the set (or the secret), checked with aws-lc-rs directly, not through the validator.
    pub fn any_key_verifies(&self, alg: &str, input: &[u8], signature: &[u8]) -> bool {
        use signature::{UnparsedPublicKey, VerificationAlgorithm};
        let check = |algorithm: &'static dyn VerificationAlgorithm, public: &[u8]| {
            UnparsedPublicKey::new(algorithm, public)
                .verify(input, signature)
                .is_ok()
        };
        match alg {
            "EdDSA" => check(&signature::ED25519, self.ed25519.public_key().as_ref()),
            "ES256" => check(
                &signature::ECDSA_P256_SHA256_FIXED,
                self.p256.public_key().as_ref(),
            ),
            "RS256" => check(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                self.rsa.public_key().as_ref(),
            ),
            "PS256" => check(
                &signature::RSA_PSS_2048_8192_SHA256,
                self.rsa.public_key().as_ref(),
            ),
            "HS256" => hmac::verify(&self.hmac, input, signature).is_ok(),
            _ => false,
        }
    }

    /// The published key set: Ed25519 "ed", P-256 "ec", RSA "rsa" (no `alg`, so RS256 and
    /// PS256 both fit), plus an encryption key and a symmetric key that must be ignored.
    pub fn jwks(&self) -> Value {
        let point = self.p256.public_key().as_ref();
        let half = (point.len() - 1) / 2;
        let rsa = self.rsa.public_key();
        json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "use": "sig", "alg": "EdDSA",
             "x": b64(self.ed25519.public_key().as_ref())},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
             "x": b64(&point[1..=half]), "y": b64(&point[1 + half..])},
            {"kty": "RSA", "kid": "rsa", "use": "sig",
             "n": b64(rsa.modulus().big_endian_without_leading_zero()),
             "e": b64(rsa.exponent().big_endian_without_leading_zero())},
            {"kty": "RSA", "kid": "enc", "use": "enc",
             "n": b64(rsa.modulus().big_endian_without_leading_zero()), "e": "AQAB"},
            {"kty": "oct", "kid": "sym", "k": b64(CLIENT_SECRET)}
        ]})
    }
}

/// A header and claims set that every rule accepts at [`NOW`].
pub fn valid_parts(signer: Signer) -> (Value, Value) {
    let mut header = json!({"alg": signer.alg(), "typ": "logout+jwt"});
    if let Some(kid) = signer.kid() {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": ISSUER, "aud": "app", "iat": NOW - 5, "exp": NOW + 115,
        "jti": "jti-1", "sub": "auth0|alice", "sid": "sid-1",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        "session_metadata": {"org_slug": "acme", "tier": "gold"}
    });
    (header, claims)
}
