//! `logout-ledger serve`: flags and environment (one issuer) or a TOML file (several), merged
//! into validated settings, then the application runs until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use logout_ledger::clock::SystemClock;
use logout_ledger::config::{
    AdmissionLimits, ApiSettings, ConfigError, ConnectionLimits, DEFAULT_API_LISTEN,
    DEFAULT_STORE_TIMEOUT_SECS, EdgeSettings, FileConfig, KeyFetchSettings, RawIssuer, Secret,
    Settings, parse_api_tokens, parse_trusted_proxies, read_secret_file, seconds_in,
    validate_issuers,
};
use logout_ledger::ledger::checkpoint::{CheckpointSettings, load_signer, parse_interval};
use logout_ledger::startup::{Application, shutdown_signal};
use logout_ledger::telemetry::{self, LogFormat};

/// Flags of `serve`; each also reads a `LOGOUT_LEDGER_*` variable.
#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// TOML file with the same settings and several `[[issuers]]`.
    #[arg(long, env = "LOGOUT_LEDGER_CONFIG")]
    config: Option<PathBuf>,
    /// The issuer's exact `iss` (Auth0: `https://TENANT.REGION.auth0.com/`).
    #[arg(long, env = "LOGOUT_LEDGER_ISSUER")]
    issuer: Option<String>,
    /// A client id the tokens must be for; repeat or comma-separate for several.
    #[arg(
        long = "audience",
        env = "LOGOUT_LEDGER_AUDIENCE",
        value_delimiter = ','
    )]
    audiences: Vec<String>,
    /// Allowed signing algorithms [default: RS256].
    #[arg(long, env = "LOGOUT_LEDGER_ALGORITHMS", value_delimiter = ',')]
    algorithms: Vec<String>,
    /// Key-set URL; by default found through OIDC discovery.
    #[arg(long, env = "LOGOUT_LEDGER_JWKS_URI")]
    jwks_uri: Option<String>,
    /// Audit store URL [default: sqlite://logout-ledger.db].
    #[arg(long, env = "LOGOUT_LEDGER_DATABASE")]
    database: Option<String>,
    /// Address of the logout endpoint [default: 127.0.0.1:8080].
    #[arg(long, env = "LOGOUT_LEDGER_LISTEN")]
    listen: Option<String>,
    /// Clock skew allowed on exp, iat and the age limit, in seconds [default: 60].
    #[arg(long, env = "LOGOUT_LEDGER_LEEWAY")]
    leeway: Option<i64>,
    /// How old `iat` may be, in seconds [default: 300].
    #[arg(long, env = "LOGOUT_LEDGER_MAX_TOKEN_AGE")]
    max_token_age: Option<i64>,
    /// Whether `exp` is required [default: true].
    #[arg(long, env = "LOGOUT_LEDGER_REQUIRE_EXP")]
    require_exp: Option<bool>,
    /// Permit `http://` issuer URLs (development and tests only).
    #[arg(long, env = "LOGOUT_LEDGER_ALLOW_INSECURE_HTTP")]
    allow_insecure_http: bool,
    /// Log format [default: text].
    #[arg(long, env = "LOGOUT_LEDGER_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// File holding the client secret for HS256 (or set LOGOUT_LEDGER_CLIENT_SECRET).
    #[arg(long, env = "LOGOUT_LEDGER_CLIENT_SECRET_FILE")]
    client_secret_file: Option<PathBuf>,
    /// Shortest time between two key-set fetches of one issuer, in seconds [default: 30].
    #[arg(long, env = "LOGOUT_LEDGER_JWKS_REFRESH_COOLDOWN")]
    jwks_refresh_cooldown: Option<u64>,
    /// Longest a key set is trusted after its last successful fetch, e.g. 3600, 30m, 24h
    /// [default: 24h]; past it tokens get 503 keys_unavailable and /readyz is 503.
    #[arg(long, env = "LOGOUT_LEDGER_MAX_KEY_AGE")]
    max_key_age: Option<String>,
    /// Ed25519 key (PKCS#8 PEM, from `keygen`) that signs checkpoints; none: no checkpoints.
    #[arg(long, env = "LOGOUT_LEDGER_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// Time between signed checkpoints, e.g. 3600, 30m, 1h [default: 1h].
    #[arg(long, env = "LOGOUT_LEDGER_CHECKPOINT_INTERVAL")]
    checkpoint_interval: Option<String>,
    /// Directory receiving a copy of every checkpoint (one file each).
    #[arg(long, env = "LOGOUT_LEDGER_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Checkpoint origin (the key's name) [default: the name in KEY.pub, else logout-ledger].
    #[arg(long, env = "LOGOUT_LEDGER_CHECKPOINT_ORIGIN")]
    checkpoint_origin: Option<String>,
    /// Keep records this many days, then remove whole checkpointed ranges [default: forever].
    #[arg(long, env = "LOGOUT_LEDGER_RETENTION_DAYS")]
    retention_days: Option<u32>,
    /// Longest a store write may take before the request answers 503, in seconds [default: 2].
    #[arg(long, env = "LOGOUT_LEDGER_STORE_TIMEOUT")]
    store_timeout: Option<u64>,
    /// Address of the query API, /api/v1/ [default: 127.0.0.1:8081].
    #[arg(long, env = "LOGOUT_LEDGER_API_LISTEN")]
    api_listen: Option<String>,
    /// Query API tokens, LABEL:SHA256HEX, comma-separated (from `api-token new`); none: no API.
    #[arg(long, env = "LOGOUT_LEDGER_API_TOKENS", value_delimiter = ',')]
    api_tokens: Vec<String>,
    #[command(flatten)]
    edge: EdgeArgs,
}

/// Flags that bound what an anonymous client may cost.
#[derive(Debug, Args)]
struct EdgeArgs {
    /// Address serving /metrics [default: the query API's listener].
    #[arg(long, env = "LOGOUT_LEDGER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Records of unverified rejections stored per second per source (IPv4 /32, IPv6 /64);
    /// the rest are counted [default: 10].
    #[arg(long, env = "LOGOUT_LEDGER_REJECTED_RECORDS_PER_SOURCE")]
    rejected_records_per_source: Option<u32>,
    /// Such records one source may spend at once [default: 50].
    #[arg(long, env = "LOGOUT_LEDGER_REJECTED_RECORDS_BURST")]
    rejected_records_burst: Option<u32>,
    /// Such records per second from all sources together [default: 200].
    #[arg(long, env = "LOGOUT_LEDGER_REJECTED_RECORDS_TOTAL")]
    rejected_records_total: Option<u32>,
    /// Proxies (CIDR, comma-separated) allowed to name the client in X-Forwarded-For/Forwarded.
    #[arg(long, env = "LOGOUT_LEDGER_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// Seconds to receive a request's header [default: 10].
    #[arg(long, env = "LOGOUT_LEDGER_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<u64>,
    /// Seconds one request may take from its header to its answer [default: 30].
    #[arg(long, env = "LOGOUT_LEDGER_REQUEST_TIMEOUT")]
    request_timeout: Option<u64>,
    /// Seconds a kept-alive connection may sit idle [default: 60].
    #[arg(long, env = "LOGOUT_LEDGER_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// Open connections per listener [default: 4096].
    #[arg(long, env = "LOGOUT_LEDGER_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections per source address; trusted proxies are exempt [default: 128].
    #[arg(long, env = "LOGOUT_LEDGER_MAX_CONNECTIONS_PER_SOURCE")]
    max_connections_per_source: Option<usize>,
}

impl EdgeArgs {
    /// Merges these flags with the file into validated settings.
    fn settings(self, f: Option<&FileConfig>) -> Result<EdgeSettings, ConfigError> {
        let defaults = EdgeSettings::default();
        let metrics_listen = match self
            .metrics_listen
            .or(f.and_then(|f| f.metrics_listen.clone()))
        {
            None => None,
            Some(raw) => Some(
                raw.parse::<SocketAddr>()
                    .map_err(|e| ConfigError::new("--metrics-listen", format!("{raw:?}: {e}")))?,
            ),
        };
        let a = defaults.admission;
        let admission = AdmissionLimits {
            per_source_per_sec: self
                .rejected_records_per_source
                .or(f.and_then(|f| f.rejected_records_per_source))
                .unwrap_or(a.per_source_per_sec),
            per_source_burst: self
                .rejected_records_burst
                .or(f.and_then(|f| f.rejected_records_burst))
                .unwrap_or(a.per_source_burst),
            total_per_sec: self
                .rejected_records_total
                .or(f.and_then(|f| f.rejected_records_total))
                .unwrap_or(a.total_per_sec),
        };
        let mut proxies = self.trusted_proxies;
        proxies.extend(f.map_or(&[][..], |f| &f.trusted_proxies).iter().cloned());
        let c = defaults.connections;
        let secs = |flag: Option<u64>, file: Option<u64>, default: Duration, name: &str| {
            seconds_in(name, flag.or(file).unwrap_or(default.as_secs()), 1..=3600)
        };
        let count = |flag: Option<usize>, file: Option<usize>, default: usize, name: &str| {
            let n = flag.or(file).unwrap_or(default);
            if (1..=1_000_000).contains(&n) {
                Ok(n)
            } else {
                Err(ConfigError::new(name, "must be between 1 and 1000000"))
            }
        };
        let connections = ConnectionLimits {
            header_read_timeout: secs(
                self.header_read_timeout,
                f.and_then(|f| f.header_read_timeout),
                c.header_read_timeout,
                "--header-read-timeout",
            )?,
            request_timeout: secs(
                self.request_timeout,
                f.and_then(|f| f.request_timeout),
                c.request_timeout,
                "--request-timeout",
            )?,
            idle_timeout: secs(
                self.idle_timeout,
                f.and_then(|f| f.idle_timeout),
                c.idle_timeout,
                "--idle-timeout",
            )?,
            max_connections: count(
                self.max_connections,
                f.and_then(|f| f.max_connections),
                c.max_connections,
                "--max-connections",
            )?,
            max_connections_per_source: count(
                self.max_connections_per_source,
                f.and_then(|f| f.max_connections_per_source),
                c.max_connections_per_source,
                "--max-connections-per-source",
            )?,
        };
        Ok(EdgeSettings {
            connections,
            admission,
            trusted_proxies: parse_trusted_proxies("--trusted-proxies", &proxies)?,
            metrics_listen,
        })
    }
}

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

impl ServeArgs {
    /// Merges flags, environment and file into validated settings.
    pub(super) fn settings(self) -> Result<Settings, ConfigError> {
        let file = match &self.config {
            Some(path) => Some(FileConfig::load(path)?),
            None => None,
        };
        let f = file.as_ref();
        let allow_http =
            self.allow_insecure_http || f.and_then(|f| f.allow_insecure_http).unwrap_or(false);
        let leeway = self.leeway.or(f.and_then(|f| f.leeway)).unwrap_or(60);
        let max_age = self
            .max_token_age
            .or(f.and_then(|f| f.max_token_age))
            .unwrap_or(300);
        let single_issuer_flags = self.issuer.is_some()
            || !self.audiences.is_empty()
            || !self.algorithms.is_empty()
            || self.jwks_uri.is_some()
            || self.client_secret_file.is_some();
        let raw = match f {
            Some(f) if !f.issuers.is_empty() => {
                if single_issuer_flags {
                    return Err(ConfigError::new(
                        "--issuer",
                        "issuers come from the --config file; drop --issuer/--audience/--algorithms/--jwks-uri/--client-secret-file",
                    ));
                }
                f.raw_issuers(leeway, max_age)?
            }
            _ => {
                let client_secret = match &self.client_secret_file {
                    Some(p) => Some(read_secret_file("--client-secret-file", p)?),
                    None => secret_from_env()?,
                };
                vec![RawIssuer {
                    prefix: String::new(),
                    issuer: self.issuer,
                    audiences: self.audiences,
                    algorithms: if self.algorithms.is_empty() {
                        vec!["RS256".into()]
                    } else {
                        self.algorithms
                    },
                    jwks_uri: self.jwks_uri,
                    client_secret,
                    require_exp: self.require_exp.unwrap_or(true),
                    leeway_secs: leeway,
                    max_token_age_secs: max_age,
                }]
            }
        };
        let issuers = raw
            .into_iter()
            .map(|r| r.validate(allow_http))
            .collect::<Result<Vec<_>, _>>()?;
        validate_issuers(&issuers)?;
        let listen_raw = self
            .listen
            .or(f.and_then(|f| f.listen.clone()))
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_raw
            .parse()
            .map_err(|e| ConfigError::new("--listen", format!("{listen_raw:?}: {e}")))?;
        let database = self
            .database
            .or(f.and_then(|f| f.database.clone()))
            .unwrap_or_else(|| "sqlite://logout-ledger.db".into());
        let database = logout_ledger::store::with_tls_settings(
            &database,
            f.and_then(|f| f.database_sslmode.as_deref()),
            f.and_then(|f| f.database_sslrootcert.as_deref())
                .and_then(|p| p.to_str()),
        )
        .map_err(|e| ConfigError::new("database_sslmode", e.to_string()))?;
        logout_ledger::store::check_url(&database)
            .map_err(|e| ConfigError::new("--database", e.to_string()))?;
        let cooldown = self
            .jwks_refresh_cooldown
            .or(f.and_then(|f| f.jwks_refresh_cooldown))
            .unwrap_or(30);
        if cooldown == 0 {
            // Zero would let every unknown kid trigger a fetch of the issuer's key set.
            return Err(ConfigError::new(
                "--jwks-refresh-cooldown",
                "must be at least 1 second",
            ));
        }
        let max_key_age = match self.max_key_age.or(f.and_then(|f| f.max_key_age.clone())) {
            Some(raw) => parse_interval(&raw).map_err(|e| ConfigError::new("--max-key-age", e))?,
            None => KeyFetchSettings::default().max_key_age,
        };
        if Duration::from_secs(cooldown) * 2 >= max_key_age {
            // A reachable issuer's set is refreshed at half the max age; the cooldown must allow it.
            return Err(ConfigError::new(
                "--max-key-age",
                format!("must be more than twice --jwks-refresh-cooldown ({cooldown} s)"),
            ));
        }
        let store_timeout = self
            .store_timeout
            .or(f.and_then(|f| f.store_timeout))
            .unwrap_or(DEFAULT_STORE_TIMEOUT_SECS);
        if !(1..=60).contains(&store_timeout) {
            return Err(ConfigError::new(
                "--store-timeout",
                "must be between 1 and 60 seconds",
            ));
        }
        let key_file = self
            .signing_key_file
            .or(f.and_then(|f| f.signing_key_file.clone()));
        let checkpoints = match key_file {
            None => None,
            Some(path) => {
                let origin = self
                    .checkpoint_origin
                    .or(f.and_then(|f| f.checkpoint_origin.clone()));
                check_key_private(&path)?;
                let signer = load_signer(&path, origin.as_deref())?;
                let interval_raw = self
                    .checkpoint_interval
                    .or(f.and_then(|f| f.checkpoint_interval.clone()))
                    .unwrap_or_else(|| "1h".into());
                let interval = parse_interval(&interval_raw)
                    .map_err(|e| ConfigError::new("--checkpoint-interval", e))?;
                Some(CheckpointSettings {
                    signer: Arc::new(signer),
                    interval,
                    dir: self
                        .checkpoint_dir
                        .or(f.and_then(|f| f.checkpoint_dir.clone())),
                })
            }
        };
        let retention_days = self.retention_days.or(f.and_then(|f| f.retention_days));
        let retention = match retention_days {
            None => None,
            Some(0) => return Err(ConfigError::new("--retention-days", "must be at least 1")),
            Some(_) if checkpoints.is_none() => {
                return Err(ConfigError::new(
                    "--retention-days",
                    "retention removes checkpointed ranges only: configure --signing-key-file too",
                ));
            }
            Some(d) => Some(Duration::from_secs(u64::from(d) * 86_400)),
        };
        let api_listen_raw = self
            .api_listen
            .or(f.and_then(|f| f.api_listen.clone()))
            .unwrap_or_else(|| DEFAULT_API_LISTEN.into());
        let api_listen: SocketAddr = api_listen_raw
            .parse()
            .map_err(|e| ConfigError::new("--api-listen", format!("{api_listen_raw:?}: {e}")))?;
        let mut api_tokens = parse_api_tokens("--api-tokens", &self.api_tokens)?;
        for t in parse_api_tokens("api_tokens", f.map_or(&[][..], |f| &f.api_tokens))? {
            if api_tokens.iter().any(|x| x.label == t.label) {
                return Err(ConfigError::new(
                    "api_tokens",
                    format!("token label {:?} is configured twice", t.label),
                ));
            }
            api_tokens.push(t);
        }
        if !api_tokens.is_empty() && api_listen == listen {
            return Err(ConfigError::new(
                "--api-listen",
                "must differ from --listen: the API has its own listener",
            ));
        }
        let edge = self.edge.settings(f)?;
        if let Some(m) = edge.metrics_listen
            && (m == listen || (!api_tokens.is_empty() && m == api_listen))
        {
            return Err(ConfigError::new(
                "--metrics-listen",
                "must differ from --listen and --api-listen",
            ));
        }
        Ok(Settings {
            edge,
            api: ApiSettings {
                listen: api_listen,
                tokens: api_tokens,
            },
            checkpoints,
            retention,
            listen,
            database,
            log_format: self
                .log_format
                .or(f.and_then(|f| f.log_format))
                .unwrap_or_default(),
            issuers,
            keys: KeyFetchSettings {
                refresh_cooldown: Duration::from_secs(cooldown),
                allow_insecure_http: allow_http,
                max_key_age,
                ..KeyFetchSettings::default()
            },
            store_timeout: Duration::from_secs(store_timeout),
        })
    }
}

/// Refuses a signing key that group or others may read (as ssh refuses such a private key):
/// whoever reads it can sign checkpoints in our name.
fn check_key_private(path: &std::path::Path) -> Result<(), ConfigError> {
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

/// Runs the receiver until SIGINT or SIGTERM.
pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    telemetry::init(settings.log_format, "info");
    for i in &settings.issuers {
        tracing::info!(
            issuer = %i.issuer,
            audiences = ?i.audiences,
            algorithms = ?i.algorithms,
            require_exp = i.require_exp,
            leeway = i.leeway_secs,
            max_token_age = i.max_token_age_secs,
            "issuer configured"
        );
    }
    let app = Application::build(settings, Arc::new(SystemClock))
        .await
        .context("cannot start")?;
    tracing::info!(addr = %app.local_addr(), "listening for back-channel logouts on POST /backchannel-logout");
    if let Some(addr) = app.api_addr() {
        tracing::info!(%addr, "query API listening on /api/v1/ (bearer tokens)");
    }
    app.run_until(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}
