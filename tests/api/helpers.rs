//! Test harness: a real receiver on port 0, a real issuer over HTTP, a real SQLite file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use logout_ledger::clock::SystemClock;
use logout_ledger::config::{
    ApiSettings, ApiToken, IssuerSettings, KeyFetchSettings, Secret, Settings,
};
use logout_ledger::local_issuer::{LocalIssuer, random_id};
use logout_ledger::startup::Application;
use logout_ledger::store::{AuditStore, EventFilter, KindFilter, Order, StoredRecord};
use logout_ledger::telemetry::LogFormat;
use serde_json::{Map, Value};

/// The client id the test receiver serves.
pub(crate) const AUDIENCE: &str = "test-client";
/// The query API token of the test receiver started by [`spawn_api_app`], and its label.
pub(crate) const API_TOKEN: &str = "llq_test-token-of-the-auditor";
pub(crate) const API_LABEL: &str = "auditor";
/// The HS256 client secret used when HS256 is allowed.
pub(crate) const CLIENT_SECRET: &[u8] = b"a-client-secret-of-reasonable-length-0123456789";

/// A directory removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        let p = std::env::temp_dir().join(format!("logout-ledger-test-{}", random_id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Issuer settings for `op` with every supported algorithm family allowed (RS256 only unless changed).
pub(crate) fn issuer_settings(op: &LocalIssuer) -> IssuerSettings {
    IssuerSettings {
        issuer: op.issuer().to_owned(),
        audiences: vec![AUDIENCE.into()],
        algorithms: vec![Algorithm::RS256],
        jwks_uri: None,
        client_secret: None,
        require_exp: true,
        leeway_secs: 60,
        max_token_age_secs: 300,
    }
}

/// Settings for a receiver on port 0 writing to `db`.
pub(crate) fn settings(op: &LocalIssuer, db: &Path) -> Settings {
    Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: format!("sqlite://{}", db.display()),
        log_format: LogFormat::Text,
        issuers: vec![issuer_settings(op)],
        keys: KeyFetchSettings {
            allow_insecure_http: true,
            refresh_cooldown: Duration::from_secs(30),
            ..KeyFetchSettings::default()
        },
        store_timeout: Duration::from_secs(5),
        checkpoints: None,
        retention: None,
        api: ApiSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: Vec::new(),
        },
    }
}

/// Every algorithm the receiver supports, with the HS256 secret.
pub(crate) fn all_algorithms(s: &mut Settings) {
    s.issuers[0].algorithms = vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::HS256,
    ];
    s.issuers[0].client_secret = Some(Secret::new(CLIENT_SECRET.to_vec()));
}

/// A running receiver with its issuer and store.
pub(crate) struct TestApp {
    pub addr: SocketAddr,
    /// The query API's address, when a token is configured.
    pub api: Option<SocketAddr>,
    pub op: Arc<LocalIssuer>,
    pub db: PathBuf,
    pub client: reqwest::Client,
    pub settings: Settings,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub dir: Arc<TempDir>,
}

/// An answer, read whole.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The rejection code at the start of `error_description`.
    pub(crate) fn code(&self) -> &str {
        self.body
            .get("error_description")
            .and_then(Value::as_str)
            .and_then(|d| d.split(':').next())
            .unwrap_or("")
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Starts issuer and receiver with default settings, waiting until keys are loaded.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts issuer and receiver with the query API on port 0, [`API_TOKEN`] configured.
pub(crate) async fn spawn_api_app() -> TestApp {
    spawn_app_with(with_api).await
}

/// Configures the query API on port 0 with [`API_TOKEN`].
pub(crate) fn with_api(s: &mut Settings) {
    s.api.tokens = vec![ApiToken::for_token(API_LABEL, API_TOKEN)];
}

/// Starts issuer and receiver with settings changed by `change`.
pub(crate) async fn spawn_app_with(change: impl FnOnce(&mut Settings)) -> TestApp {
    let op = Arc::new(LocalIssuer::start().await.expect("issuer starts"));
    let dir = Arc::new(TempDir::new());
    let db = dir.0.join("audit.db");
    let mut s = settings(&op, &db);
    change(&mut s);
    start(op, dir, db, s, true).await
}

/// Starts a receiver with explicit parts (used for restarts on the same store).
pub(crate) async fn start(
    op: Arc<LocalIssuer>,
    dir: Arc<TempDir>,
    db: PathBuf,
    settings: Settings,
    wait_keys: bool,
) -> TestApp {
    let app = Application::build(settings.clone(), Arc::new(SystemClock))
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let api = app.api_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let t = TestApp {
        addr,
        api,
        op,
        db,
        client: reqwest::Client::new(),
        settings,
        stop: Some(stop),
        server: Some(server),
        dir,
    };
    if wait_keys {
        t.wait_ready().await;
    }
    t
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("receiver not ready");
    }

    /// Baseline valid claims for this receiver.
    pub(crate) fn claims(&self) -> Map<String, Value> {
        self.op.claims(AUDIENCE)
    }

    /// Signs with the issuer's RSA key and RS256.
    pub(crate) fn sign(&self, claims: &Map<String, Value>) -> String {
        self.op.sign("rsa-1", "RS256", claims).expect("sign")
    }

    /// A fresh valid token.
    pub(crate) fn valid_token(&self) -> String {
        self.sign(&self.claims())
    }

    /// The URL of a query API path.
    pub(crate) fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api.expect("the query API runs"))
    }

    /// `GET` on the query API with [`API_TOKEN`]; the body read whole (JSON, else null).
    pub(crate) async fn api_get(&self, path: &str) -> Answer {
        self.api_get_as(path, Some(API_TOKEN)).await
    }

    /// `GET` on the query API with a given bearer token (or none).
    pub(crate) async fn api_get_as(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = self.client.get(self.api_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body");
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// `GET` on the query API with [`API_TOKEN`]: status and the body as text.
    pub(crate) async fn api_text(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.api_url(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    }

    /// Posts a raw body with a content type.
    pub(crate) async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        post_raw(
            &self.client,
            &self.url("/backchannel-logout"),
            content_type,
            body.into(),
        )
        .await
    }

    /// Posts every token at once (one task each) and returns the answers in order.
    pub(crate) async fn post_concurrently(&self, tokens: Vec<String>) -> Vec<Answer> {
        let url = self.url("/backchannel-logout");
        let tasks: Vec<_> = tokens
            .into_iter()
            .map(|t| {
                let (client, url) = (self.client.clone(), url.clone());
                let body = format!("logout_token={}", urlencode(&t));
                tokio::spawn(async move {
                    post_raw(
                        &client,
                        &url,
                        "application/x-www-form-urlencoded",
                        body.into(),
                    )
                    .await
                })
            })
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.expect("request task"));
        }
        out
    }

    /// Posts a token as the form field `logout_token`.
    pub(crate) async fn post_token(&self, token: &str) -> Answer {
        let body = format!("logout_token={}", urlencode(token));
        self.post_raw("application/x-www-form-urlencoded", body)
            .await
    }

    /// Every record, oldest first.
    pub(crate) async fn records(&self) -> Vec<StoredRecord> {
        records_in(&self.db).await
    }

    /// Every record of any kind, oldest first.
    pub(crate) async fn all_records(&self) -> Vec<StoredRecord> {
        all_records_in(&self.db).await
    }

    /// The newest logout record.
    pub(crate) async fn last_record(&self) -> StoredRecord {
        let mut all = self.records().await;
        all.pop().expect("at least one record")
    }

    /// Stops the receiver (graceful) and waits for it.
    pub(crate) async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.expect("server task").expect("server ran");
        }
    }

    /// Stops this receiver and starts another on the same store, issuer and settings.
    pub(crate) async fn restart(mut self, change: impl FnOnce(&mut Settings)) -> TestApp {
        self.shutdown().await;
        let mut s = self.settings.clone();
        change(&mut s);
        start(
            Arc::clone(&self.op),
            Arc::clone(&self.dir),
            self.db.clone(),
            s,
            true,
        )
        .await
    }
}

/// Reads every record of any kind (logout, access, system), oldest first.
pub(crate) async fn all_records_in(db: &Path) -> Vec<StoredRecord> {
    let reader = AuditStore::open_reader(&format!("sqlite://{}", db.display()))
        .await
        .expect("reader");
    reader
        .query(&EventFilter {
            kind: KindFilter::All,
            order: Order::Asc,
            limit: 10_000,
            ..EventFilter::default()
        })
        .await
        .expect("query")
}

/// Reads every logout record of a store file, oldest first.
pub(crate) async fn records_in(db: &Path) -> Vec<StoredRecord> {
    let reader = AuditStore::open_reader(&format!("sqlite://{}", db.display()))
        .await
        .expect("reader");
    reader
        .query(&EventFilter {
            order: Order::Asc,
            limit: 10_000,
            ..EventFilter::default()
        })
        .await
        .expect("query")
}

/// Posts a body to a URL and reads the whole answer.
pub(crate) async fn post_raw(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: reqwest::Body,
) -> Answer {
    let r = client
        .post(url)
        .header("content-type", content_type)
        .header("user-agent", "Auth0/test")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// Percent-encodes a form value.
pub(crate) fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
