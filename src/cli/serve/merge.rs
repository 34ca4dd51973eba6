//! Where `serve`'s settings are merged, in one place and by one rule ([`layer`]): a flag over
//! the file, the file over the default. clap has already put a flag's `LOGOUT_LEDGER_*` variable
//! in its place when the flag is not given, so the order is flag > environment > file > default.
//!
//! One function per settings group merges and validates it; [`ServeArgs::settings`] calls them
//! in a fixed order, so with several settings wrong the same one is named every time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logout_ledger::config::{
    AdmissionLimits, ApiSettings, ConfigError, ConnectionLimits, DEFAULT_API_LISTEN,
    DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_AGE_SECS, DEFAULT_STORE_TIMEOUT_SECS, EdgeSettings,
    FileConfig, IssuerFile, IssuerSettings, KeyFetchSettings, RawIssuer, Secret, Settings,
    parse_api_tokens, parse_trusted_proxies, read_secret_file, seconds_in, validate_deliveries,
    validate_issuers,
};
use logout_ledger::ledger::checkpoint::{CheckpointSettings, load_signer, parse_interval};

use super::{EdgeArgs, ServeArgs};

/// The precedence of every setting: the flag (or its variable) if given, else the file's value,
/// else the default.
fn layer<T: Clone>(flag: &Option<T>, file: &Option<T>, default: T) -> T {
    first(flag, file).unwrap_or(default)
}

/// [`layer`] for a setting without a default: the flag (or its variable), else the file's value.
fn first<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.as_ref().or(file.as_ref()).cloned()
}

/// Parses a listener address, naming the setting in the error.
fn address(setting: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse()
        .map_err(|e| ConfigError::new(setting, format!("{raw:?}: {e}")))
}

/// Parses a duration such as `30m`, naming the setting in the error.
fn interval(setting: &str, raw: &str) -> Result<Duration, ConfigError> {
    parse_interval(raw).map_err(|e| ConfigError::new(setting, e))
}

/// A count of connections: at least one, at most a million.
fn count(setting: &str, n: usize) -> Result<usize, ConfigError> {
    if (1..=1_000_000).contains(&n) {
        Ok(n)
    } else {
        Err(ConfigError::new(setting, "must be between 1 and 1000000"))
    }
}

impl ServeArgs {
    /// Merges flags, environment and file into validated settings.
    pub(super) fn settings(self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let f = &file;
        let allow_http = self.allow_insecure_http || f.allow_insecure_http.unwrap_or(false);
        let issuers = self.issuers(f, allow_http)?;
        let listen = address(
            "--listen",
            &layer(&self.listen, &f.listen, "127.0.0.1:8080".into()),
        )?;
        let database = self.database(f)?;
        let keys = self.keys(f, allow_http)?;
        let store_timeout = self.store_timeout(f)?;
        let checkpoints = self.checkpoints(f)?;
        let retention = self.retention(f, checkpoints.is_some())?;
        let api = self.api(f, listen)?;
        let edge = self.edge.settings(f)?;
        check_metrics_listen(&edge, listen, &api)?;
        let deliveries = validate_deliveries(&f.deliveries, allow_http)?;
        Ok(Settings {
            deliveries,
            edge,
            api,
            checkpoints,
            retention,
            listen,
            database,
            log_format: layer(&self.log_format, &f.log_format, Default::default()),
            issuers,
            keys,
            store_timeout,
        })
    }

    /// The issuers: the file's `[[issuers]]`, or the one the flags describe (never both).
    fn issuers(
        &self,
        f: &FileConfig,
        allow_http: bool,
    ) -> Result<Vec<IssuerSettings>, ConfigError> {
        let leeway = layer(&self.leeway, &f.leeway, DEFAULT_LEEWAY_SECS);
        let max_age = layer(
            &self.max_token_age,
            &f.max_token_age,
            DEFAULT_MAX_TOKEN_AGE_SECS,
        );
        let single_issuer_flags = self.issuer.is_some()
            || !self.audiences.is_empty()
            || !self.algorithms.is_empty()
            || self.jwks_uri.is_some()
            || self.client_secret_file.is_some();
        let raw = if f.issuers.is_empty() {
            vec![self.raw_issuer(leeway, max_age)?]
        } else if single_issuer_flags {
            return Err(ConfigError::new(
                "--issuer",
                "issuers come from the --config file; drop --issuer/--audience/--algorithms/--jwks-uri/--client-secret-file",
            ));
        } else {
            f.raw_issuers(leeway, max_age)?
        };
        let issuers = raw
            .into_iter()
            .map(|r| r.validate(allow_http))
            .collect::<Result<Vec<_>, _>>()?;
        validate_issuers(&issuers)?;
        Ok(issuers)
    }

    /// The one issuer described by flags and variables.
    fn raw_issuer(&self, leeway: i64, max_age: i64) -> Result<RawIssuer, ConfigError> {
        let client_secret = match &self.client_secret_file {
            Some(p) => Some(read_secret_file("--client-secret-file", p)?),
            None => secret_from_env()?,
        };
        let flags = IssuerFile {
            issuer: self.issuer.clone().unwrap_or_default(),
            audiences: self.audiences.clone(),
            algorithms: self.algorithms.clone(),
            jwks_uri: self.jwks_uri.clone(),
            require_exp: self.require_exp,
            ..IssuerFile::default()
        };
        Ok(flags.raw(String::new(), client_secret, leeway, max_age))
    }

    /// The store URL, with the file's PostgreSQL TLS settings where the URL says none.
    fn database(&self, f: &FileConfig) -> Result<String, ConfigError> {
        let database = layer(
            &self.database,
            &f.database,
            "sqlite://logout-ledger.db".into(),
        );
        let database = logout_ledger::store::with_tls_settings(
            &database,
            f.database_sslmode.as_deref(),
            f.database_sslrootcert.as_deref().and_then(|p| p.to_str()),
        )
        .map_err(|e| ConfigError::new("database_sslmode", e.to_string()))?;
        logout_ledger::store::check_url(&database)
            .map_err(|e| ConfigError::new("--database", e.to_string()))?;
        Ok(database)
    }

    /// How key sets are fetched: the cooldown between fetches and how long a set is trusted.
    fn keys(&self, f: &FileConfig, allow_http: bool) -> Result<KeyFetchSettings, ConfigError> {
        let defaults = KeyFetchSettings::default();
        let cooldown = layer(
            &self.jwks_refresh_cooldown,
            &f.jwks_refresh_cooldown,
            defaults.refresh_cooldown.as_secs(),
        );
        if cooldown == 0 {
            // Zero would let every unknown kid trigger a fetch of the issuer's key set.
            return Err(ConfigError::new(
                "--jwks-refresh-cooldown",
                "must be at least 1 second",
            ));
        }
        let max_key_age = match first(&self.max_key_age, &f.max_key_age) {
            Some(raw) => interval("--max-key-age", &raw)?,
            None => defaults.max_key_age,
        };
        if Duration::from_secs(cooldown) * 2 >= max_key_age {
            // A reachable issuer's set is refreshed at half the max age; the cooldown must allow it.
            return Err(ConfigError::new(
                "--max-key-age",
                format!("must be more than twice --jwks-refresh-cooldown ({cooldown} s)"),
            ));
        }
        Ok(KeyFetchSettings {
            refresh_cooldown: Duration::from_secs(cooldown),
            allow_insecure_http: allow_http,
            max_key_age,
            ..defaults
        })
    }

    /// The longest a store write may take before the request answers 503.
    fn store_timeout(&self, f: &FileConfig) -> Result<Duration, ConfigError> {
        let secs = layer(
            &self.store_timeout,
            &f.store_timeout,
            DEFAULT_STORE_TIMEOUT_SECS,
        );
        if !(1..=60).contains(&secs) {
            return Err(ConfigError::new(
                "--store-timeout",
                "must be between 1 and 60 seconds",
            ));
        }
        Ok(Duration::from_secs(secs))
    }

    /// Signed checkpoints, when a signing key is configured.
    fn checkpoints(&self, f: &FileConfig) -> Result<Option<CheckpointSettings>, ConfigError> {
        let Some(path) = first(&self.signing_key_file, &f.signing_key_file) else {
            return Ok(None);
        };
        let origin = first(&self.checkpoint_origin, &f.checkpoint_origin);
        check_key_private(&path)?;
        let signer = load_signer(&path, origin.as_deref())?;
        let every = layer(
            &self.checkpoint_interval,
            &f.checkpoint_interval,
            "1h".into(),
        );
        Ok(Some(CheckpointSettings {
            signer: Arc::new(signer),
            interval: interval("--checkpoint-interval", &every)?,
            dir: first(&self.checkpoint_dir, &f.checkpoint_dir),
        }))
    }

    /// How long records are kept; retention removes checkpointed ranges only.
    fn retention(
        &self,
        f: &FileConfig,
        checkpoints: bool,
    ) -> Result<Option<Duration>, ConfigError> {
        match first(&self.retention_days, &f.retention_days) {
            None => Ok(None),
            Some(0) => Err(ConfigError::new("--retention-days", "must be at least 1")),
            Some(_) if !checkpoints => Err(ConfigError::new(
                "--retention-days",
                "retention removes checkpointed ranges only: configure --signing-key-file too",
            )),
            Some(d) => Ok(Some(Duration::from_secs(u64::from(d) * 86_400))),
        }
    }

    /// The query API: its listener and tokens, from the flags and the file together.
    fn api(&self, f: &FileConfig, listen: SocketAddr) -> Result<ApiSettings, ConfigError> {
        let api_listen = address(
            "--api-listen",
            &layer(&self.api_listen, &f.api_listen, DEFAULT_API_LISTEN.into()),
        )?;
        let mut tokens = parse_api_tokens("--api-tokens", &self.api_tokens)?;
        for t in parse_api_tokens("api_tokens", &f.api_tokens)? {
            if tokens.iter().any(|x| x.label == t.label) {
                return Err(ConfigError::new(
                    "api_tokens",
                    format!("token label {:?} is configured twice", t.label),
                ));
            }
            tokens.push(t);
        }
        if !tokens.is_empty() && api_listen == listen {
            return Err(ConfigError::new(
                "--api-listen",
                "must differ from --listen: the API has its own listener",
            ));
        }
        Ok(ApiSettings {
            listen: api_listen,
            tokens,
        })
    }
}

impl EdgeArgs {
    /// What an anonymous client may cost: connection limits, record admission, proxies.
    fn settings(&self, f: &FileConfig) -> Result<EdgeSettings, ConfigError> {
        let metrics_listen = first(&self.metrics_listen, &f.metrics_listen)
            .map(|raw| address("--metrics-listen", &raw))
            .transpose()?;
        let mut proxies = self.trusted_proxies.clone();
        proxies.extend(f.trusted_proxies.iter().cloned());
        Ok(EdgeSettings {
            connections: self.connections(f)?,
            admission: self.admission(f),
            trusted_proxies: parse_trusted_proxies("--trusted-proxies", &proxies)?,
            metrics_listen,
        })
    }

    /// How many rejection records found before the signature verified are stored.
    fn admission(&self, f: &FileConfig) -> AdmissionLimits {
        let d = EdgeSettings::default().admission;
        AdmissionLimits {
            per_source_per_sec: layer(
                &self.rejected_records_per_source,
                &f.rejected_records_per_source,
                d.per_source_per_sec,
            ),
            per_source_burst: layer(
                &self.rejected_records_burst,
                &f.rejected_records_burst,
                d.per_source_burst,
            ),
            total_per_sec: layer(
                &self.rejected_records_total,
                &f.rejected_records_total,
                d.total_per_sec,
            ),
        }
    }

    /// Timeouts and connection caps of every listener.
    fn connections(&self, f: &FileConfig) -> Result<ConnectionLimits, ConfigError> {
        let d = EdgeSettings::default().connections;
        let secs = |name: &str, flag: &Option<u64>, file: &Option<u64>, default: Duration| {
            seconds_in(name, layer(flag, file, default.as_secs()), 1..=3600)
        };
        Ok(ConnectionLimits {
            header_read_timeout: secs(
                "--header-read-timeout",
                &self.header_read_timeout,
                &f.header_read_timeout,
                d.header_read_timeout,
            )?,
            request_timeout: secs(
                "--request-timeout",
                &self.request_timeout,
                &f.request_timeout,
                d.request_timeout,
            )?,
            idle_timeout: secs(
                "--idle-timeout",
                &self.idle_timeout,
                &f.idle_timeout,
                d.idle_timeout,
            )?,
            max_connections: count(
                "--max-connections",
                layer(&self.max_connections, &f.max_connections, d.max_connections),
            )?,
            max_connections_per_source: count(
                "--max-connections-per-source",
                layer(
                    &self.max_connections_per_source,
                    &f.max_connections_per_source,
                    d.max_connections_per_source,
                ),
            )?,
        })
    }
}

/// `/metrics` on a listener of its own must not share the public or the API's address.
fn check_metrics_listen(
    edge: &EdgeSettings,
    listen: SocketAddr,
    api: &ApiSettings,
) -> Result<(), ConfigError> {
    match edge.metrics_listen {
        Some(m) if m == listen || (!api.tokens.is_empty() && m == api.listen) => {
            Err(ConfigError::new(
                "--metrics-listen",
                "must differ from --listen and --api-listen",
            ))
        }
        _ => Ok(()),
    }
}

/// The HS256 client secret from `LOGOUT_LEDGER_CLIENT_SECRET` (never a flag value).
fn secret_from_env() -> Result<Option<Secret>, ConfigError> {
    match std::env::var("LOGOUT_LEDGER_CLIENT_SECRET") {
        Ok(s) if !s.is_empty() => Ok(Some(Secret::new(s.into_bytes()))),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(
            "LOGOUT_LEDGER_CLIENT_SECRET",
            "is not valid UTF-8",
        )),
    }
}

/// Refuses a signing key that group or others may read (as ssh refuses such a private key):
/// whoever reads it can sign checkpoints in our name.
fn check_key_private(path: &Path) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Unreadable files fall through: loading the key names that error.
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(ConfigError::new(
                    "--signing-key-file",
                    format!(
                        "{} is accessible by group or others (mode {mode:03o}); \
                         the key must be private: chmod 600 {}",
                        path.display(),
                        path.display()
                    ),
                ));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `serve`'s flags alone, as the binary parses them.
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// A TOML file removed when dropped.
    struct File(std::path::PathBuf);

    impl File {
        fn new(name: &str, text: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "logout-ledger-merge-{}-{name}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).expect("write the file");
            Self(path)
        }
    }

    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The settings for these flags, after `--config` with `file`.
    fn settings(file: &File, flags: &[&str]) -> Result<Settings, ConfigError> {
        let config = file.0.display().to_string();
        let argv = ["serve", "--config", &config]
            .into_iter()
            .chain(flags.iter().copied());
        Serve::try_parse_from(argv)
            .expect("flags parse")
            .args
            .settings()
    }

    const ISSUERS: &str = "[[issuers]]\nissuer = \"https://op.example/\"\naudiences = [\"a\"]\n";

    #[test]
    fn a_flag_beats_the_file_and_the_file_beats_the_default() {
        let file = File::new(
            "layers",
            &format!(
                "listen = \"127.0.0.1:9001\"\nstore_timeout = 7\nmax_connections = 99\n\
                 rejected_records_burst = 5\nmax_key_age = \"2h\"\n{ISSUERS}"
            ),
        );
        let s = settings(
            &file,
            &["--listen", "127.0.0.1:9002", "--max-connections", "12"],
        )
        .expect("valid");
        assert_eq!(s.listen.port(), 9002, "flag over file");
        assert_eq!(s.edge.connections.max_connections, 12, "flag over file");
        assert_eq!(s.store_timeout, Duration::from_secs(7), "file over default");
        assert_eq!(s.edge.admission.per_source_burst, 5, "file over default");
        assert_eq!(
            s.keys.max_key_age,
            Duration::from_secs(7200),
            "file over default"
        );
        assert_eq!(s.database, "sqlite://logout-ledger.db", "default");
        assert_eq!(s.edge.connections.request_timeout, Duration::from_secs(30));
        assert_eq!(s.keys.refresh_cooldown, Duration::from_secs(30));
        assert_eq!(s.issuers[0].issuer, "https://op.example/");
    }

    #[test]
    fn lists_from_flags_and_file_are_joined() {
        let file = File::new(
            "lists",
            &format!("trusted_proxies = [\"10.0.0.0/8\"]\n{ISSUERS}"),
        );
        let s = settings(&file, &["--trusted-proxies", "192.0.2.1/32"]).expect("valid");
        assert_eq!(s.edge.trusted_proxies.len(), 2);
    }

    #[test]
    fn errors_name_the_flag_whichever_layer_the_value_came_from() {
        let file = File::new("bad", &format!("idle_timeout = 0\n{ISSUERS}"));
        let e = settings(&file, &[]).expect_err("zero refused");
        assert_eq!(e.setting, "--idle-timeout");
        let e = settings(&file, &["--issuer", "https://op.example/"]).expect_err("both");
        assert_eq!(
            e.setting, "--issuer",
            "the file's issuers exclude the flags"
        );
    }
}
