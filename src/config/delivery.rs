//! Delivery targets (`[[deliveries]]` in the configuration file): which applications learn of
//! each accepted logout, how, and which records each one gets. Checked whole at start-up, so a
//! wrong target stops the service naming the setting instead of failing at its first delivery.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use reqwest::Url;
use serde::Deserialize;

use super::{ConfigError, Secret, parse_interval, read_secret_file};

/// Default time a delivery is retried before it is dead.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(72 * 3600);
/// Default attempts in flight per target.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Default time one attempt may take.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One `[[deliveries]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFile {
    /// Unique name: metrics, the API and the CLI use it.
    pub name: String,
    /// `webhook`, `backchannel` or `nats`.
    pub kind: String,
    /// Webhook or back-channel URL.
    pub url: Option<String>,
    /// Webhook signing secret file (`whsec_` + base64).
    pub secret_file: Option<PathBuf>,
    /// Only records of these issuers.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Only records whose `aud` names one of these.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Only records whose valid session metadata holds every pair.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// Outcomes delivered: `accepted` (default) and/or `duplicate`.
    #[serde(default)]
    pub outcomes: Vec<String>,
    /// How long a delivery is retried, e.g. `72h`.
    pub max_age: Option<String>,
    /// Attempts in flight at once.
    pub concurrency: Option<usize>,
    /// Longest one attempt may take, e.g. `10s`.
    pub timeout: Option<String>,
    /// NATS servers.
    #[serde(default)]
    pub servers: Vec<String>,
    /// NATS subject.
    pub subject: Option<String>,
    /// JetStream stream expected to capture the subject.
    pub stream: Option<String>,
    /// Whether to create the stream when missing.
    pub create_stream: Option<bool>,
}

/// How a target is reached.
#[derive(Debug, Clone)]
pub enum DeliveryKind {
    /// A Standard Webhooks POST of the JSON event.
    Webhook {
        /// Where.
        url: Url,
        /// The signing key (decoded bytes).
        key: Secret,
    },
    /// The original logout token relayed to the application's own back-channel logout URI.
    Backchannel {
        /// Where.
        url: Url,
    },
    /// A JetStream publish of the JSON event.
    Nats {
        /// `host:port` of each server.
        servers: Vec<String>,
        /// The subject.
        subject: String,
        /// The stream, created when missing if `create_stream`.
        stream: Option<String>,
        /// Whether to create the stream.
        create_stream: bool,
    },
}

impl DeliveryKind {
    /// The kind's name, as configured.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Webhook { .. } => "webhook",
            Self::Backchannel { .. } => "backchannel",
            Self::Nats { .. } => "nats",
        }
    }
}

/// One validated delivery target.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Unique name.
    pub name: String,
    /// How it is reached.
    pub kind: DeliveryKind,
    /// Issuers it gets (empty: all).
    pub issuers: Vec<String>,
    /// Audiences it gets (empty: all).
    pub audiences: Vec<String>,
    /// Metadata pairs every record it gets must hold.
    pub meta: BTreeMap<String, String>,
    /// Whether duplicate records are delivered too (type `logout.duplicate`).
    pub duplicates: bool,
    /// Whether accepted records are delivered.
    pub accepted: bool,
    /// How long a delivery is retried.
    pub max_age: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    /// Longest one attempt may take.
    pub timeout: Duration,
}

impl DeliverySettings {
    /// A target with the file's defaults: every accepted logout of every issuer, retried for
    /// [`DEFAULT_MAX_AGE`], [`DEFAULT_CONCURRENCY`] attempts at once of at most
    /// [`DEFAULT_ATTEMPT_TIMEOUT`] each (for settings built in code: tests, benchmarks).
    pub fn new(name: impl Into<String>, kind: DeliveryKind) -> Self {
        Self {
            name: name.into(),
            kind,
            issuers: Vec::new(),
            audiences: Vec::new(),
            meta: BTreeMap::new(),
            duplicates: false,
            accepted: true,
            max_age: DEFAULT_MAX_AGE,
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }
}

/// Validates every `[[deliveries]]` table; `allow_http` permits `http://` URLs and NATS on a
/// host other than loopback (no TLS).
pub fn validate_deliveries(
    tables: &[DeliveryFile],
    allow_http: bool,
) -> Result<Vec<DeliverySettings>, ConfigError> {
    let mut names = HashSet::new();
    tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let prefix = format!("deliveries[{i}].");
            let settings = t.validate(&prefix, allow_http)?;
            if !names.insert(settings.name.clone()) {
                return Err(ConfigError::new(
                    format!("{prefix}name"),
                    format!("{:?} is used by another target", settings.name),
                ));
            }
            Ok(settings)
        })
        .collect()
}

impl DeliveryFile {
    /// Checks this table; every error names the setting.
    fn validate(&self, prefix: &str, allow_http: bool) -> Result<DeliverySettings, ConfigError> {
        let err = |key: &str, msg: String| ConfigError::new(format!("{prefix}{key}"), msg);
        check_name(&self.name).map_err(|m| err("name", m))?;
        let kind = match self.kind.as_str() {
            "webhook" => {
                let url = self.url(prefix, allow_http)?;
                let path = self
                    .secret_file
                    .as_deref()
                    .ok_or_else(|| err("secret_file", "a webhook needs a signing secret".into()))?;
                let text = read_secret_file(&format!("{prefix}secret_file"), path)?;
                let key = webhook_key(text.expose()).map_err(|m| err("secret_file", m))?;
                DeliveryKind::Webhook { url, key }
            }
            "backchannel" => {
                self.refuse(prefix, "secret_file", self.secret_file.is_some())?;
                DeliveryKind::Backchannel {
                    url: self.url(prefix, allow_http)?,
                }
            }
            "nats" => self.nats(prefix, allow_http)?,
            other => {
                return Err(err(
                    "kind",
                    format!("{other:?} is not one of webhook, backchannel, nats"),
                ));
            }
        };
        if !matches!(kind, DeliveryKind::Nats { .. }) {
            for (key, given) in [
                ("servers", !self.servers.is_empty()),
                ("subject", self.subject.is_some()),
                ("stream", self.stream.is_some()),
                ("create_stream", self.create_stream.is_some()),
            ] {
                self.refuse(prefix, key, given)?;
            }
        }
        let (mut accepted, mut duplicates) = (self.outcomes.is_empty(), false);
        for o in &self.outcomes {
            match o.as_str() {
                "accepted" => accepted = true,
                "duplicate" => duplicates = true,
                other => {
                    return Err(err(
                        "outcomes",
                        format!("{other:?}: only accepted and duplicate logouts are delivered"),
                    ));
                }
            }
        }
        let duration = |key: &str, raw: &Option<String>, default: Duration| {
            raw.as_deref()
                .map_or(Ok(default), parse_interval)
                .map_err(|m| err(key, m))
        };
        let timeout = duration("timeout", &self.timeout, DEFAULT_ATTEMPT_TIMEOUT)?;
        // A lease lasts two attempts' bounds (timeout + 2 s each) and 5 s more, and a replica
        // that dies must hand its deliveries on within a minute.
        if timeout > Duration::from_secs(20) {
            return Err(err("timeout", "at most 20s".into()));
        }
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=256).contains(&concurrency) {
            return Err(err("concurrency", "must be between 1 and 256".into()));
        }
        Ok(DeliverySettings {
            issuers: self.issuers.clone(),
            audiences: self.audiences.clone(),
            meta: self.meta.clone(),
            duplicates,
            accepted,
            max_age: duration("max_age", &self.max_age, DEFAULT_MAX_AGE)?,
            concurrency,
            timeout,
            ..DeliverySettings::new(self.name.clone(), kind)
        })
    }

    /// Refuses a setting this kind does not read (a typo would otherwise pass silently).
    fn refuse(&self, prefix: &str, key: &str, given: bool) -> Result<(), ConfigError> {
        if given {
            return Err(ConfigError::new(
                format!("{prefix}{key}"),
                format!("not read by kind {:?}", self.kind),
            ));
        }
        Ok(())
    }

    /// The target URL: https, or http with `allow_insecure_http`.
    fn url(&self, prefix: &str, allow_http: bool) -> Result<Url, ConfigError> {
        let setting = format!("{prefix}url");
        let raw = self
            .url
            .as_deref()
            .ok_or_else(|| ConfigError::new(&setting, format!("kind {} needs a url", self.kind)))?;
        let url =
            Url::parse(raw).map_err(|e| ConfigError::new(&setting, format!("{raw:?}: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => {
                return Err(ConfigError::new(
                    &setting,
                    format!("{raw:?} is not https (use --allow-insecure-http for development)"),
                ));
            }
            other => {
                return Err(ConfigError::new(
                    &setting,
                    format!("{raw:?}: scheme {other:?} is not https"),
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new(&setting, format!("{raw:?} names no host")));
        }
        Ok(url)
    }

    /// A NATS target: servers, a subject without wildcards, an optional stream.
    fn nats(&self, prefix: &str, allow_http: bool) -> Result<DeliveryKind, ConfigError> {
        let err = |key: &str, msg: String| ConfigError::new(format!("{prefix}{key}"), msg);
        self.refuse(prefix, "url", self.url.is_some())?;
        self.refuse(prefix, "secret_file", self.secret_file.is_some())?;
        if self.servers.is_empty() {
            return Err(err(
                "servers",
                "a nats target needs at least one server".into(),
            ));
        }
        let mut servers = Vec::new();
        for raw in &self.servers {
            let addr = raw.strip_prefix("nats://").unwrap_or(raw);
            let host = addr
                .rsplit_once(':')
                .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .ok_or_else(|| err("servers", format!("{raw:?} is not nats://host:port")))?;
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback && !allow_http {
                return Err(err(
                    "servers",
                    format!(
                        "{raw:?}: NATS is reached without TLS, so only on loopback unless \
                         --allow-insecure-http"
                    ),
                ));
            }
            servers.push(addr.to_owned());
        }
        let subject = self
            .subject
            .clone()
            .ok_or_else(|| err("subject", "a nats target needs a subject".into()))?;
        let token_ok = |t: &str, extra: &[char]| {
            !t.is_empty()
                && t.len() <= 255
                && !t
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || extra.contains(&c))
        };
        if !token_ok(&subject, &['*', '>']) || subject.split('.').any(str::is_empty) {
            return Err(err(
                "subject",
                format!("{subject:?} is not a subject without wildcards"),
            ));
        }
        if let Some(s) = &self.stream
            && !token_ok(s, &['.', '*', '>'])
        {
            return Err(err("stream", format!("{s:?} is not a stream name")));
        }
        let create_stream = self.create_stream.unwrap_or(false);
        if create_stream && self.stream.is_none() {
            return Err(err("create_stream", "needs stream".into()));
        }
        Ok(DeliveryKind::Nats {
            servers,
            subject,
            stream: self.stream.clone(),
            create_stream,
        })
    }
}

/// A name usable in metrics labels, URLs and the CLI.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Decodes a Standard Webhooks secret (`whsec_` + base64, whitespace around it ignored); the
/// message never repeats the secret.
pub fn webhook_key(text: &[u8]) -> Result<Secret, String> {
    let text = std::str::from_utf8(text)
        .map_err(|_| "the secret is not text".to_owned())?
        .trim();
    let b64 = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
        .map_err(|_| "the secret is not \"whsec_\" followed by base64".to_owned())?;
    if key.len() < 16 {
        return Err(format!(
            "the secret decodes to {} bytes; at least 16 are needed",
            key.len()
        ));
    }
    Ok(Secret::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(kind: &str) -> DeliveryFile {
        DeliveryFile {
            name: "t".into(),
            kind: kind.into(),
            url: Some("https://app.example/logout".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_mistake_names_its_setting() {
        let cases: Vec<(DeliveryFile, &str)> = vec![
            (table("carrier-pigeon"), "deliveries[0].kind"),
            (table("webhook"), "deliveries[0].secret_file"),
            (
                DeliveryFile {
                    url: Some("http://app.example/".into()),
                    ..table("backchannel")
                },
                "deliveries[0].url",
            ),
            (
                DeliveryFile {
                    url: None,
                    ..table("backchannel")
                },
                "deliveries[0].url",
            ),
            (
                DeliveryFile {
                    name: "a b".into(),
                    ..table("backchannel")
                },
                "deliveries[0].name",
            ),
            (
                DeliveryFile {
                    outcomes: vec!["rejected".into()],
                    ..table("backchannel")
                },
                "deliveries[0].outcomes",
            ),
            (
                DeliveryFile {
                    max_age: Some("forever".into()),
                    ..table("backchannel")
                },
                "deliveries[0].max_age",
            ),
            (
                DeliveryFile {
                    concurrency: Some(0),
                    ..table("backchannel")
                },
                "deliveries[0].concurrency",
            ),
            (
                DeliveryFile {
                    url: None,
                    servers: vec!["nats://10.0.0.1:4222".into()],
                    subject: Some("a.b".into()),
                    ..table("nats")
                },
                "deliveries[0].servers",
            ),
            (
                DeliveryFile {
                    url: None,
                    servers: vec!["nats://127.0.0.1:4222".into()],
                    subject: Some("a.*".into()),
                    ..table("nats")
                },
                "deliveries[0].subject",
            ),
            (
                DeliveryFile {
                    subject: Some("a".into()),
                    ..table("backchannel")
                },
                "deliveries[0].subject",
            ),
        ];
        for (t, setting) in cases {
            let e = validate_deliveries(&[t], false).expect_err(setting);
            assert_eq!(e.setting, setting, "{e}");
        }
        let e = validate_deliveries(&[table("backchannel"), table("backchannel")], false)
            .expect_err("duplicate name");
        assert_eq!(e.setting, "deliveries[1].name");
    }

    #[test]
    fn defaults_and_http_with_the_flag() {
        let t = DeliveryFile {
            url: Some("http://127.0.0.1:9/logout".into()),
            ..table("backchannel")
        };
        let s = validate_deliveries(&[t], true).expect("valid");
        assert_eq!(s[0].max_age, DEFAULT_MAX_AGE);
        assert_eq!(s[0].concurrency, DEFAULT_CONCURRENCY);
        assert!(s[0].accepted && !s[0].duplicates);
    }

    #[test]
    fn webhook_secrets() {
        let key = webhook_key(b"  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").expect("valid");
        assert_eq!(key.expose().len(), 24);
        let e = webhook_key(b"whsec_not base64!").expect_err("invalid");
        assert!(!e.contains("not base64!"), "{e}");
        assert!(webhook_key(b"whsec_c2hvcnQ=").is_err());
    }
}
