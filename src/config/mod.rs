//! Validated settings: parsed once from flags, `LOGOUT_LEDGER_*` variables or a TOML file, and
//! passed to the rest of the program as plain, already-checked types.

mod api;
mod checkpoint;
mod delivery;
mod edge;
mod file;

pub use api::{ApiSettings, ApiToken, DEFAULT_API_LISTEN, TOKEN_PREFIX, parse_api_tokens};
pub use checkpoint::{CheckpointSettings, parse_interval};
pub use delivery::{
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONCURRENCY, DEFAULT_MAX_AGE, DeliveryFile, DeliveryKind,
    DeliverySettings, validate_deliveries, webhook_key,
};
pub use edge::{
    AdmissionLimits, ConnectionLimits, EdgeSettings, IpNet, canonical, parse_trusted_proxies,
    seconds_in,
};
pub use file::{FileConfig, IssuerFile};

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use reqwest::Url;

use crate::telemetry::LogFormat;

/// Largest accepted request body on the logout endpoint.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Default longest wait for a store write before a request answers 503: under the providers'
/// own delivery timeouts (oidc-provider gives up after 2.5 s, Auth0 after 5 s).
pub const DEFAULT_STORE_TIMEOUT_SECS: u64 = 2;

/// Clock skew allowed on every time rule when neither flag nor file sets it, in seconds.
pub const DEFAULT_LEEWAY_SECS: i64 = 60;

/// How old `iat` may be when neither flag nor file sets it, in seconds.
pub const DEFAULT_MAX_TOKEN_AGE_SECS: i64 = 300;

/// Why the configuration was refused, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {message}")]
pub struct ConfigError {
    /// The setting's name as the user wrote it (flag or TOML key).
    pub setting: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `setting`.
    pub fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// Secret bytes (an HS256 client secret) whose `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret itself, for the one place that needs it (HMAC verification).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The rules for one trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// The exact `iss` value, as the provider publishes it (Auth0's ends with `/`).
    pub issuer: String,
    /// Client ids this receiver serves; `aud` must name one and nothing else.
    pub audiences: Vec<String>,
    /// The algorithms this issuer may sign with; the token's `alg` never widens this.
    pub algorithms: Vec<Algorithm>,
    /// Key-set location; `None` means "ask discovery".
    pub jwks_uri: Option<Url>,
    /// The application's client secret, required only when HS256 is allowed.
    pub client_secret: Option<Secret>,
    /// Whether `exp` must be present (Back-Channel Logout errata 1 made it required).
    pub require_exp: bool,
    /// Clock skew allowed on every time rule, in seconds; it only ever widens a window.
    pub leeway_secs: i64,
    /// How old `iat` may be, in seconds.
    pub max_token_age_secs: i64,
}

impl IssuerSettings {
    /// How long after its acceptance a token of this issuer can still pass validation: its
    /// `iat` may be up to the leeway ahead of the acceptance, and is `too_old` once more than
    /// the maximum age plus the leeway behind. The replay window must cover this.
    pub fn validity_after_acceptance(&self) -> Duration {
        let secs = self
            .max_token_age_secs
            .saturating_add(self.leeway_secs.saturating_mul(2));
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }
}

/// How the key cache talks to issuers.
#[derive(Debug, Clone)]
pub struct KeyFetchSettings {
    /// Cache lifetime when the issuer sends no `Cache-Control: max-age`.
    pub default_ttl: Duration,
    /// Shortest time between two fetches of one issuer's key set.
    pub refresh_cooldown: Duration,
    /// Whole-request timeout for discovery and key-set fetches.
    pub timeout: Duration,
    /// Largest discovery document or key set accepted.
    pub max_bytes: usize,
    /// Whether `http://` issuer and key-set URLs are allowed (development and tests only).
    pub allow_insecure_http: bool,
    /// Longest a key set is trusted after its last successful fetch; past it tokens get 503.
    pub max_key_age: Duration,
}

impl Default for KeyFetchSettings {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(600),
            refresh_cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            allow_insecure_http: false,
            max_key_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address of the public logout endpoint.
    pub listen: SocketAddr,
    /// Store location, e.g. `sqlite://logout-ledger.db`.
    pub database: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// The trusted issuers; a token naming any other is rejected without a fetch.
    pub issuers: Vec<IssuerSettings>,
    /// Key cache behaviour.
    pub keys: KeyFetchSettings,
    /// Upper bound on one store write (lock wait included) before the request answers 503.
    pub store_timeout: Duration,
    /// Signed checkpoints, when a signing key is configured.
    pub checkpoints: Option<CheckpointSettings>,
    /// Remove records older than this (whole checkpointed ranges); `None` keeps them forever.
    pub retention: Option<Duration>,
    /// The query API (`/api/v1/`); it starts only when a token is configured.
    pub api: ApiSettings,
    /// What an anonymous client may cost: connection limits, record admission, proxies.
    pub edge: EdgeSettings,
    /// Where accepted logouts are delivered (`[[deliveries]]`).
    pub deliveries: Vec<DeliverySettings>,
}

/// Parses an algorithm list such as `RS256,PS256`, refusing `none` and unsupported names.
pub fn parse_algorithms(setting: &str, list: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    let mut out = Vec::new();
    for name in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let alg = match name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            // RFC 9864's fully-specified name; only Ed25519 keys are accepted for EdDSA.
            "EdDSA" | "Ed25519" => Algorithm::EdDSA,
            "HS256" => Algorithm::HS256,
            other => {
                return Err(ConfigError::new(
                    setting,
                    format!(
                        "unsupported algorithm {other:?} (supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, Ed25519, HS256)"
                    ),
                ));
            }
        };
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            setting,
            "at least one algorithm is required",
        ));
    }
    Ok(out)
}

/// Checks a URL used to reach an issuer: absolute, http(s), https unless allowed otherwise.
pub fn parse_fetch_url(setting: &str, raw: &str, allow_http: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::new(setting, format!("{raw:?}: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => {
            return Err(ConfigError::new(
                setting,
                format!(
                    "{raw:?} uses http://; use https:// (or --allow-insecure-http for development)"
                ),
            ));
        }
        other => {
            return Err(ConfigError::new(
                setting,
                format!("{raw:?}: unsupported scheme {other:?}"),
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(setting, format!("{raw:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            setting,
            format!("{raw:?} must not carry a query or fragment"),
        ));
    }
    Ok(url)
}

/// Reads a client secret from a file, trimming one trailing newline.
pub fn read_secret_file(setting: &str, path: &Path) -> Result<Secret, ConfigError> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(ConfigError::new(
            setting,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(bytes))
}

/// The raw, not yet validated description of one issuer, from flags or the file.
#[derive(Debug, Clone, Default)]
pub struct RawIssuer {
    /// Prefix for error messages, e.g. `issuers[1].` in a file, empty for flags.
    pub prefix: String,
    /// `iss` value.
    pub issuer: Option<String>,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// Algorithm names.
    pub algorithms: Vec<String>,
    /// Explicit key-set URL.
    pub jwks_uri: Option<String>,
    /// Client secret, already read.
    pub client_secret: Option<Secret>,
    /// `exp` required.
    pub require_exp: bool,
    /// Leeway in seconds.
    pub leeway_secs: i64,
    /// Largest `iat` age in seconds.
    pub max_token_age_secs: i64,
}

impl RawIssuer {
    /// Validates one issuer's settings.
    pub fn validate(self, allow_http: bool) -> Result<IssuerSettings, ConfigError> {
        let p = &self.prefix;
        let issuer = self
            .issuer
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ConfigError::new(format!("{p}issuer"), "an issuer URL is required"))?;
        parse_fetch_url(&format!("{p}issuer"), &issuer, allow_http)?;
        let audiences: Vec<String> = self
            .audiences
            .iter()
            .flat_map(|a| a.split(','))
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(ConfigError::new(
                format!("{p}audience"),
                "at least one audience (client id) is required",
            ));
        }
        let algorithms = parse_algorithms(&format!("{p}algorithms"), &self.algorithms)?;
        if algorithms.contains(&Algorithm::HS256) && self.client_secret.is_none() {
            return Err(ConfigError::new(
                format!("{p}algorithms"),
                "HS256 needs the client secret (LOGOUT_LEDGER_CLIENT_SECRET or client secret file)",
            ));
        }
        let jwks_uri = self
            .jwks_uri
            .map(|u| parse_fetch_url(&format!("{p}jwks_uri"), &u, allow_http))
            .transpose()?;
        if !(0..=3600).contains(&self.leeway_secs) {
            return Err(ConfigError::new(
                format!("{p}leeway"),
                "must be between 0 and 3600 seconds",
            ));
        }
        if !(1..=86_400 * 7).contains(&self.max_token_age_secs) {
            return Err(ConfigError::new(
                format!("{p}max_token_age"),
                "must be between 1 second and 7 days",
            ));
        }
        Ok(IssuerSettings {
            issuer,
            audiences,
            algorithms,
            jwks_uri,
            client_secret: self.client_secret,
            require_exp: self.require_exp,
            leeway_secs: self.leeway_secs,
            max_token_age_secs: self.max_token_age_secs,
        })
    }
}

/// Checks the issuer list as a whole: at least one, no issuer twice.
pub fn validate_issuers(issuers: &[IssuerSettings]) -> Result<(), ConfigError> {
    if issuers.is_empty() {
        return Err(ConfigError::new(
            "issuer",
            "at least one issuer is required (--issuer or --config)",
        ));
    }
    for (i, a) in issuers.iter().enumerate() {
        if issuers[..i].iter().any(|b| b.issuer == a.issuer) {
            return Err(ConfigError::new(
                format!("issuers[{i}].issuer"),
                format!("{:?} is configured twice", a.issuer),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawIssuer {
        RawIssuer {
            issuer: Some("https://tenant.eu.auth0.com/".into()),
            audiences: vec!["client-1".into()],
            algorithms: vec!["RS256".into()],
            require_exp: true,
            leeway_secs: 60,
            max_token_age_secs: 300,
            ..RawIssuer::default()
        }
    }

    #[test]
    fn accepts_a_plain_auth0_issuer() {
        let s = raw().validate(false).expect("valid");
        assert_eq!(s.algorithms, vec![Algorithm::RS256]);
        assert_eq!(s.audiences, vec!["client-1"]);
    }

    #[test]
    fn refuses_none_and_unknown_algorithms_naming_the_setting() {
        let mut r = raw();
        r.algorithms = vec!["RS256,none".into()];
        let e = r.validate(false).expect_err("none refused");
        assert_eq!(e.setting, "algorithms");
        let mut r = raw();
        r.algorithms = vec!["HS512".into()];
        assert!(r.validate(false).is_err());
    }

    #[test]
    fn ed25519_is_the_fully_specified_eddsa() {
        let algs = parse_algorithms("algorithms", &["Ed25519,EdDSA,RS256".into()]).expect("ok");
        assert_eq!(algs, vec![Algorithm::EdDSA, Algorithm::RS256]);
        assert!(parse_algorithms("algorithms", &["Ed448".into()]).is_err());
    }

    #[test]
    fn hs256_needs_a_secret() {
        let mut r = raw();
        r.algorithms = vec!["HS256".into()];
        assert!(r.clone().validate(false).is_err());
        r.client_secret = Some(Secret::new(b"s3cret".to_vec()));
        assert!(r.validate(false).is_ok());
    }

    #[test]
    fn http_issuers_need_the_insecure_flag() {
        let mut r = raw();
        r.issuer = Some("http://127.0.0.1:9/".into());
        assert_eq!(
            r.clone().validate(false).expect_err("http").setting,
            "issuer"
        );
        assert!(r.validate(true).is_ok());
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new(b"x".to_vec())),
            "Secret([redacted])"
        );
    }
}
