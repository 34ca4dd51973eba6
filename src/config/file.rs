//! The TOML configuration file: the same settings as the flags, plus several issuers.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, RawIssuer, Secret};
use crate::telemetry::LogFormat;

/// The whole file. Unknown keys are refused so a typo cannot silently weaken a rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Public listener address.
    pub listen: Option<String>,
    /// Store URL.
    pub database: Option<String>,
    /// PostgreSQL `sslmode` where the store URL does not say one.
    pub database_sslmode: Option<String>,
    /// PostgreSQL CA file (PEM) where the store URL does not name one.
    pub database_sslrootcert: Option<PathBuf>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Permit `http://` issuers (development only).
    pub allow_insecure_http: Option<bool>,
    /// Default leeway for issuers that set none.
    pub leeway: Option<i64>,
    /// Default largest `iat` age for issuers that set none.
    pub max_token_age: Option<i64>,
    /// Seconds between key-set fetches of one issuer.
    pub jwks_refresh_cooldown: Option<u64>,
    /// Longest a key set is trusted after its last successful fetch, e.g. `24h`.
    pub max_key_age: Option<String>,
    /// Seconds a store write may take before the request answers 503.
    pub store_timeout: Option<u64>,
    /// Ed25519 checkpoint signing key (PKCS#8 PEM).
    pub signing_key_file: Option<PathBuf>,
    /// Time between checkpoints, e.g. `1h`.
    pub checkpoint_interval: Option<String>,
    /// Directory receiving checkpoint copies.
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoint origin (key name).
    pub checkpoint_origin: Option<String>,
    /// Days to keep records (default: forever).
    pub retention_days: Option<u32>,
    /// Query API listener address.
    pub api_listen: Option<String>,
    /// Address serving `/metrics` (default: the query API's listener).
    pub metrics_listen: Option<String>,
    /// Rejection records per second per source address, stored one by one.
    pub rejected_records_per_source: Option<u32>,
    /// Rejection records one source may spend at once.
    pub rejected_records_burst: Option<u32>,
    /// Rejection records per second from all sources together.
    pub rejected_records_total: Option<u32>,
    /// Proxies (CIDR) allowed to name the client in `X-Forwarded-For` / `Forwarded`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Seconds to receive a request's header.
    pub header_read_timeout: Option<u64>,
    /// Seconds one request may take in all.
    pub request_timeout: Option<u64>,
    /// Seconds a kept-alive connection may sit idle.
    pub idle_timeout: Option<u64>,
    /// Open connections per listener.
    pub max_connections: Option<usize>,
    /// Open connections per source address.
    pub max_connections_per_source: Option<usize>,
    /// Query API tokens, `label:sha256hex` each.
    #[serde(default)]
    pub api_tokens: Vec<String>,
    /// The trusted issuers.
    #[serde(default)]
    pub issuers: Vec<IssuerFile>,
    /// Where accepted logouts are delivered.
    #[serde(default)]
    pub deliveries: Vec<super::DeliveryFile>,
}

/// One `[[issuers]]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted client ids.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed algorithms (default RS256).
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Explicit key-set URL.
    pub jwks_uri: Option<String>,
    /// File holding the client secret (HS256).
    pub client_secret_file: Option<PathBuf>,
    /// Whether `exp` is required (default true).
    pub require_exp: Option<bool>,
    /// Leeway in seconds.
    pub leeway: Option<i64>,
    /// Largest `iat` age in seconds.
    pub max_token_age: Option<i64>,
}

impl FileConfig {
    /// Reads and parses a file, naming it in the error.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::new("--config", format!("{}: {e}", path.display())))
    }

    /// The issuers as raw descriptions, defaults filled in.
    pub fn raw_issuers(&self, leeway: i64, max_age: i64) -> Result<Vec<RawIssuer>, ConfigError> {
        self.issuers
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let prefix = format!("issuers[{i}].");
                let client_secret = f
                    .client_secret_file
                    .as_deref()
                    .map(|p| super::read_secret_file(&format!("{prefix}client_secret_file"), p))
                    .transpose()?;
                Ok(f.raw(prefix, client_secret, leeway, max_age))
            })
            .collect()
    }
}

impl IssuerFile {
    /// This issuer as a raw description, whether it came from the file or from the flags:
    /// RS256 unless algorithms are named, `exp` required unless said otherwise, and the
    /// global leeway and maximum age unless it sets its own.
    pub fn raw(
        &self,
        prefix: String,
        client_secret: Option<Secret>,
        leeway: i64,
        max_age: i64,
    ) -> RawIssuer {
        RawIssuer {
            prefix,
            // Empty means absent: validation asks for an issuer URL either way.
            issuer: Some(self.issuer.clone()).filter(|i| !i.is_empty()),
            audiences: self.audiences.clone(),
            algorithms: if self.algorithms.is_empty() {
                vec!["RS256".into()]
            } else {
                self.algorithms.clone()
            },
            jwks_uri: self.jwks_uri.clone(),
            client_secret,
            require_exp: self.require_exp.unwrap_or(true),
            leeway_secs: self.leeway.unwrap_or(leeway),
            max_token_age_secs: self.max_token_age.unwrap_or(max_age),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_two_issuers_and_refuses_typos() {
        let cfg: FileConfig = toml::from_str(
            r#"
            database = "sqlite://x.db"
            [[issuers]]
            issuer = "https://a.example/"
            audiences = ["app-a"]
            [[issuers]]
            issuer = "https://b.example"
            audiences = ["app-b", "app-c"]
            algorithms = ["PS256", "ES256"]
            require_exp = false
            "#,
        )
        .expect("parses");
        let raw = cfg.raw_issuers(60, 300).expect("raw");
        assert_eq!(raw.len(), 2);
        assert_eq!(raw[0].algorithms, vec!["RS256"]);
        assert!(!raw[1].require_exp);
        assert!(toml::from_str::<FileConfig>("issuerz = []").is_err());
    }
}
