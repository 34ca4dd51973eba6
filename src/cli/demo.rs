//! `logout-ledger demo`: the real receiver against an in-process issuer on loopback. Sends a
//! few realistic logouts (with session metadata, a re-delivery, a replay, a forgery) and prints
//! what landed in the audit store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use logout_ledger::clock::{Clock, SystemClock};
use logout_ledger::config::{ApiSettings, ApiToken, IssuerSettings, KeyFetchSettings, Settings};
use logout_ledger::ledger::checkpoint::CheckpointSettings;
use logout_ledger::ledger::verify;
use logout_ledger::local_issuer::LocalIssuer;
use logout_ledger::startup::Application;
use logout_ledger::store::{AuditStore, EventFilter, Order};
use logout_ledger::telemetry::{self, LogFormat};
use logout_ledger::tlog::NoteSigner;
use logout_ledger::tlog::note::generate_pkcs8;
use serde_json::{Map, Value, json};

use super::output::{self, Format};

/// Flags of `demo`.
#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// Store to write to [default: a new file in the temporary directory].
    #[arg(long)]
    database: Option<String>,
    /// Keep the receiver, the query API and the console running after the demo's logouts
    /// (until Ctrl-C), with a fresh API token printed for signing in.
    #[arg(long)]
    serve: bool,
    /// With --serve: the query API's and console's address.
    #[arg(long, default_value = "127.0.0.1:8081", requires = "serve")]
    api_listen: SocketAddr,
}

const AUDIENCE: &str = "demo-app";

struct Step {
    what: &'static str,
    token: String,
}

async fn steps(op: &LocalIssuer) -> anyhow::Result<Vec<Step>> {
    let with = |f: &dyn Fn(&mut Map<String, Value>)| {
        let mut c = op.claims(AUDIENCE);
        f(&mut c);
        c
    };
    let alice = with(&|c| {
        c.insert("sub".into(), json!("auth0|alice"));
        c.insert(
            "session_metadata".into(),
            json!({"org_id": "org_acme", "org_slug": "acme", "deviceName": "Alice's MacBook", "loginRegion": "DE"}),
        );
    });
    let alice_token = op.sign("rsa-1", "RS256", &alice)?;
    let bob = with(&|c| {
        c.insert("sub".into(), json!("auth0|bob"));
        c.remove("sid");
        c.insert(
            "session_metadata".into(),
            json!({"org_id": "org_globex", "deviceName": "Pixel 9"}),
        );
    });
    let replay = with(&|c| {
        c.insert("jti".into(), alice["jti"].clone());
        c.insert("sub".into(), json!("auth0|mallory"));
    });
    op.add_unpublished_rsa("forger").await?;
    let forged_claims = with(&|c| {
        c.insert("sub".into(), json!("auth0|carol"));
    });
    let forged_input = json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"});
    // Signed with a key the issuer never published, under the issuer's real kid.
    let forged = op.sign_with_header("forger", &forged_input, &forged_claims)?;
    let expired = with(&|c| {
        let now = SystemClock.now_secs();
        c.insert("sub".into(), json!("auth0|dave"));
        c.insert("iat".into(), json!(now - 3600));
        c.insert("exp".into(), json!(now - 3480));
    });
    Ok(vec![
        Step {
            what: "logout of alice's session (with session metadata)",
            token: alice_token.clone(),
        },
        Step {
            what: "logout of all of bob's sessions (no sid)",
            token: op.sign("rsa-1", "RS256", &bob)?,
        },
        Step {
            what: "re-delivery of alice's logout (issuer retry)",
            token: alice_token,
        },
        Step {
            what: "replay: another token reusing alice's jti",
            token: op.sign("rsa-1", "RS256", &replay)?,
        },
        Step {
            what: "forgery: signed with an unpublished key",
            token: forged,
        },
        Step {
            what: "expired token",
            token: op.sign("rsa-1", "RS256", &expired)?,
        },
    ])
}

async fn wait_ready(client: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the receiver did not become ready")
}

/// The receiver's settings: `op` as the one issuer, a checkpoint key made for the run.
fn demo_settings(op: &LocalIssuer, database: &str, serve: bool) -> anyhow::Result<Settings> {
    Ok(Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        database: database.to_owned(),
        log_format: LogFormat::Text,
        issuers: vec![IssuerSettings {
            issuer: op.issuer().to_owned(),
            audiences: vec![AUDIENCE.into()],
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            jwks_uri: None,
            client_secret: None,
            require_exp: true,
            leeway_secs: 60,
            max_token_age_secs: 300,
        }],
        keys: KeyFetchSettings {
            allow_insecure_http: true,
            ..KeyFetchSettings::default()
        },
        store_timeout: Duration::from_secs(5),
        retention: None,
        api: ApiSettings::default(),
        edge: logout_ledger::config::EdgeSettings::default(),
        deliveries: Vec::new(),
        checkpoints: Some(CheckpointSettings {
            signer: Arc::new(NoteSigner::new(
                "demo.logout-ledger.example",
                &generate_pkcs8()?,
            )?),
            // Serving, a checkpoint soon covers the demo's records (the console's proofs).
            interval: Duration::from_secs(if serve { 10 } else { 3600 }),
            dir: None,
        }),
    })
}

/// Runs the demo.
pub(super) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Text, "warn");
    let database = match args.database {
        Some(d) => d,
        None => {
            let path: PathBuf =
                std::env::temp_dir().join(format!("logout-ledger-demo-{}.db", std::process::id()));
            format!("sqlite://{}", path.display())
        }
    };
    println!("Starting an in-process OpenID Provider with freshly generated keys...");
    let op = LocalIssuer::start().await.context("local issuer")?;
    let mut settings = demo_settings(&op, &database, args.serve)?;
    let api_token = if args.serve {
        let (token, entry) = ApiToken::generate("demo-auditor")?;
        settings.api = ApiSettings {
            listen: args.api_listen,
            tokens: vec![entry],
        };
        Some(token)
    } else {
        None
    };
    let app = Application::build(settings, Arc::new(SystemClock))
        .await
        .context("cannot start the receiver")?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    println!("issuer:   {}", op.issuer());
    println!("receiver: http://{addr}/backchannel-logout");
    println!("store:    {database}\n");
    let client = reqwest::Client::new();
    wait_ready(&client, addr).await?;
    for step in steps(&op).await? {
        let resp = client
            .post(format!("http://{addr}/backchannel-logout"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("logout_token={}", step.token))
            .send()
            .await
            .context("request failed")?;
        let status = resp.status().as_u16();
        let body: Value =
            serde_json::from_slice(&resp.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
        let said = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        println!("{status}  {:<52} {said}", step.what);
    }
    if let Some(token) = api_token {
        println!(
            "\nServing until Ctrl-C. Console: http://{}/console/ (a checkpoint covers the records \
             within 10 s)\nAPI token (sign in with it): {token}\nMore logouts: POST to \
             http://{addr}/backchannel-logout, signed by the issuer above.",
            args.api_listen
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop.send(());
    server.await.context("server task")?.context("server")?;
    println!("\nWhat the audit store holds (logout-ledger query --database {database}):\n");
    let reader = AuditStore::open_reader(&database).await?;
    let records = reader
        .query(&EventFilter {
            order: Order::Asc,
            ..EventFilter::default()
        })
        .await?;
    output::write(&mut std::io::stdout().lock(), &records, Format::Table)?;
    let chain = verify::chain(&reader, |_, _| {}).await?;
    println!(
        "\nThe hash chain over all {} records (logout, system and access) verifies with {} problem(s);\n\
         a signed checkpoint was written at shutdown. Check it yourself:\n  logout-ledger verify --database {database}",
        chain.records,
        chain.problems.len()
    );
    Ok(())
}
