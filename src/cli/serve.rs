//! `logout-ledger serve`: flags and environment (one issuer) or a TOML file (several), merged
//! into validated settings (`merge.rs`), then the application runs until SIGINT or SIGTERM.

mod merge;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use logout_ledger::clock::SystemClock;
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
