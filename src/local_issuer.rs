//! An in-process OpenID Provider on loopback: its own generated keys, a discovery document and
//! a key set served over real HTTP, and a signer for logout tokens (valid or deliberately not).
//! `demo`, the integration tests and the load benchmark use it in place of Auth0.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::clock::{Clock, SystemClock};
use crate::logout_token::BACKCHANNEL_LOGOUT_EVENT;

/// Why the local issuer could not start or sign.
#[derive(Debug, thiserror::Error)]
pub enum LocalIssuerError {
    /// Key generation or signing failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// Binding the listener failed.
    #[error("cannot bind: {0}")]
    Bind(#[from] std::io::Error),
    /// No key with this kid.
    #[error("no signing key {0:?}")]
    NoKey(String),
}

enum Material {
    Rsa(RsaKeyPair),
    P256(EcdsaKeyPair),
    P384(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One signing key with its published form.
struct SigningKey {
    kid: String,
    material: Material,
    /// Whether the key set currently publishes it.
    published: bool,
    /// The `key_ops` member the key set gives it, if any.
    key_ops: Option<Vec<String>>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn crypto<E: std::fmt::Debug>(e: E) -> LocalIssuerError {
    LocalIssuerError::Crypto(format!("{e:?}"))
}

impl SigningKey {
    fn generate(kid: &str, kind: &str) -> Result<Self, LocalIssuerError> {
        let material = match kind {
            "RSA" => Material::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(crypto)?),
            "P-256" => Material::P256(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(crypto)?,
            ),
            "P-384" => Material::P384(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING)
                    .map_err(crypto)?,
            ),
            _ => Material::Ed25519(Ed25519KeyPair::generate().map_err(crypto)?),
        };
        Ok(Self {
            kid: kid.to_owned(),
            material,
            published: true,
            key_ops: None,
        })
    }

    fn jwk(&self) -> Value {
        let mut jwk = self.bare_jwk();
        if let (Some(ops), Value::Object(m)) = (&self.key_ops, &mut jwk) {
            m.insert("key_ops".into(), json!(ops));
        }
        jwk
    }

    fn bare_jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(k) => {
                let p = k.public_key();
                json!({"kty": "RSA", "use": "sig", "kid": self.kid,
                       "n": b64(p.modulus().big_endian_without_leading_zero()),
                       "e": b64(p.exponent().big_endian_without_leading_zero())})
            }
            Material::P256(k) | Material::P384(k) => {
                let point = k.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                let crv = if matches!(self.material, Material::P256(_)) {
                    "P-256"
                } else {
                    "P-384"
                };
                json!({"kty": "EC", "use": "sig", "kid": self.kid, "crv": crv,
                       "x": b64(&point[1..=half]), "y": b64(&point[1 + half..])})
            }
            Material::Ed25519(k) => {
                json!({"kty": "OKP", "use": "sig", "kid": self.kid, "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
        }
    }

    fn sign(&self, alg: &str, message: &[u8]) -> Result<Vec<u8>, LocalIssuerError> {
        let rng = SystemRandom::new();
        match &self.material {
            Material::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, message, &mut sig).map_err(crypto)?;
                Ok(sig)
            }
            Material::P256(k) | Material::P384(k) => {
                Ok(k.sign(&rng, message).map_err(crypto)?.as_ref().to_vec())
            }
            Material::Ed25519(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }
}

/// The natural algorithm of each default key.
pub const DEFAULT_KEYS: [(&str, &str, &str); 4] = [
    ("rsa-1", "RSA", "RS256"),
    ("ec-p256", "P-256", "ES256"),
    ("ec-p384", "P-384", "ES384"),
    ("ed-1", "Ed25519", "EdDSA"),
];

struct Shared {
    issuer: String,
    keys: RwLock<Vec<SigningKey>>,
    available: AtomicBool,
    discovery_issuer: RwLock<Option<String>>,
    jwks_fetches: AtomicU64,
    discovery_fetches: AtomicU64,
}

/// A running local issuer. Dropping it stops its server.
pub struct LocalIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl Drop for LocalIssuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    s.discovery_fetches.fetch_add(1, Ordering::Relaxed);
    if !s.available.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let issuer = s
        .discovery_issuer
        .read()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_else(|| s.issuer.clone());
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{}.well-known/jwks.json", s.issuer),
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    }))
    .into_response()
}

async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::Relaxed);
    if !s.available.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let keys: Vec<Value> = s
        .keys
        .read()
        .map(|k| {
            k.iter()
                .filter(|k| k.published)
                .map(SigningKey::jwk)
                .collect()
        })
        .unwrap_or_default();
    (
        [(header::CACHE_CONTROL, "max-age=600")],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

impl LocalIssuer {
    /// Generates the default keys (RSA, P-256, P-384, Ed25519) and serves them on `127.0.0.1:0`.
    pub async fn start() -> Result<Self, LocalIssuerError> {
        let keys = tokio::task::spawn_blocking(|| {
            DEFAULT_KEYS
                .iter()
                .map(|(kid, kind, _)| SigningKey::generate(kid, kind))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(crypto)??;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}/"),
            keys: RwLock::new(keys),
            available: AtomicBool::new(true),
            discovery_issuer: RwLock::new(None),
            jwks_fetches: AtomicU64::new(0),
            discovery_fetches: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            shared,
            addr,
            server,
        })
    }

    /// The issuer identifier, `http://127.0.0.1:PORT/` (trailing slash, like Auth0's).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many times the key set was requested.
    pub fn jwks_fetches(&self) -> u64 {
        self.shared.jwks_fetches.load(Ordering::Relaxed)
    }

    /// How many times discovery was requested.
    pub fn discovery_fetches(&self) -> u64 {
        self.shared.discovery_fetches.load(Ordering::Relaxed)
    }

    /// Makes discovery and the key set answer 503 (`false`) or normally (`true`).
    pub fn set_available(&self, available: bool) {
        self.shared.available.store(available, Ordering::Relaxed);
    }

    /// Makes discovery claim another issuer value (to test the exact-match rule).
    pub fn set_discovery_issuer(&self, issuer: Option<String>) {
        if let Ok(mut g) = self.shared.discovery_issuer.write() {
            *g = issuer;
        }
    }

    /// Adds a new RSA key `kid` to the published set, optionally unpublishing the others.
    pub async fn rotate_rsa(&self, kid: &str, retire_others: bool) -> Result<(), LocalIssuerError> {
        let kid_owned = kid.to_owned();
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(&kid_owned, "RSA"))
            .await
            .map_err(crypto)??;
        if let Ok(mut keys) = self.shared.keys.write() {
            if retire_others {
                for k in keys
                    .iter_mut()
                    .filter(|k| matches!(k.material, Material::Rsa(_)))
                {
                    k.published = false;
                }
            }
            keys.push(key);
        }
        Ok(())
    }

    /// Adds an RSA key that signs but is never published (a forger's key), under `kid`.
    pub async fn add_unpublished_rsa(&self, kid: &str) -> Result<(), LocalIssuerError> {
        let kid_owned = kid.to_owned();
        let mut key = tokio::task::spawn_blocking(move || SigningKey::generate(&kid_owned, "RSA"))
            .await
            .map_err(crypto)??;
        key.published = false;
        if let Ok(mut keys) = self.shared.keys.write() {
            keys.push(key);
        }
        Ok(())
    }

    /// Publishes key `kid` with this `key_ops` list (or none), to test keys not meant for
    /// verification.
    pub fn set_key_ops(&self, kid: &str, ops: Option<&[&str]>) -> Result<(), LocalIssuerError> {
        let mut keys = self
            .shared
            .keys
            .write()
            .map_err(|_| LocalIssuerError::NoKey(kid.into()))?;
        let key = keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| LocalIssuerError::NoKey(kid.into()))?;
        key.key_ops = ops.map(|o| o.iter().map(|s| (*s).to_owned()).collect());
        Ok(())
    }

    /// The published key set, as served.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .shared
            .keys
            .read()
            .map(|k| {
                k.iter()
                    .filter(|k| k.published)
                    .map(SigningKey::jwk)
                    .collect()
            })
            .unwrap_or_default();
        json!({ "keys": keys })
    }

    /// The RSA public key `kid` as PKCS#1 DER, for algorithm-confusion tests (HS256 keyed
    /// with the public key).
    pub fn rsa_public_key_der(&self, kid: &str) -> Result<Vec<u8>, LocalIssuerError> {
        let keys = self
            .shared
            .keys
            .read()
            .map_err(|_| LocalIssuerError::NoKey(kid.into()))?;
        match keys.iter().find(|k| k.kid == kid).map(|k| &k.material) {
            Some(Material::Rsa(k)) => Ok(k.public_key().as_ref().to_vec()),
            _ => Err(LocalIssuerError::NoKey(kid.into())),
        }
    }

    /// A baseline logout token's claims for `aud`: iss, aud, iat, exp = iat + 120, a fresh jti,
    /// sub, sid and the back-channel logout event (the conformance suite's baseline).
    pub fn claims(&self, aud: &str) -> Map<String, Value> {
        let now = SystemClock.now_secs();
        let mut m = Map::new();
        m.insert("iss".into(), json!(self.shared.issuer));
        m.insert("aud".into(), json!(aud));
        m.insert("iat".into(), json!(now));
        m.insert("exp".into(), json!(now + 120));
        m.insert("jti".into(), json!(random_id()));
        m.insert("sub".into(), json!("auth0|user-1"));
        m.insert("sid".into(), json!(format!("sid-{}", random_id())));
        m.insert("events".into(), json!({ BACKCHANNEL_LOGOUT_EVENT: {} }));
        m
    }

    /// Signs claims with key `kid` and algorithm `alg`, header `{"alg","kid","typ":"JWT"}`.
    pub fn sign(
        &self,
        kid: &str,
        alg: &str,
        claims: &Map<String, Value>,
    ) -> Result<String, LocalIssuerError> {
        let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
        self.sign_with_header(kid, &header, claims)
    }

    /// Signs claims under an arbitrary header with key `kid` (the header's `alg` picks padding).
    pub fn sign_with_header(
        &self,
        kid: &str,
        header: &Value,
        claims: &Map<String, Value>,
    ) -> Result<String, LocalIssuerError> {
        let input = signing_input(header, claims);
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("RS256");
        self.sign_input(kid, alg, input)
    }

    /// Signs a header and claims given as raw JSON text (which may repeat a member name, as
    /// a `Value` cannot) with key `kid`; `alg` picks the RSA padding.
    pub fn sign_raw_json(
        &self,
        kid: &str,
        alg: &str,
        header_json: &str,
        claims_json: &str,
    ) -> Result<String, LocalIssuerError> {
        let input = format!(
            "{}.{}",
            b64(header_json.as_bytes()),
            b64(claims_json.as_bytes())
        );
        self.sign_input(kid, alg, input)
    }

    fn sign_input(&self, kid: &str, alg: &str, input: String) -> Result<String, LocalIssuerError> {
        let keys = self
            .shared
            .keys
            .read()
            .map_err(|_| LocalIssuerError::NoKey(kid.into()))?;
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| LocalIssuerError::NoKey(kid.into()))?;
        let sig = key.sign(alg, input.as_bytes())?;
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

/// `base64url(header) "." base64url(claims)`.
pub fn signing_input(header: &Value, claims: &Map<String, Value>) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(Value::Object(claims.clone()).to_string().as_bytes())
    )
}

/// Signs claims with HMAC-SHA256 under `secret` (HS256), with the given header.
pub fn sign_hs256(secret: &[u8], header: &Value, claims: &Map<String, Value>) -> String {
    let input = signing_input(header, claims);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// A random 128-bit identifier in UUID form (kept here for callers of the former path).
pub use crate::util::random_id;
