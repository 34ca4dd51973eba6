//! Realistic logout records, generated from their index alone (so a re-delivery can rebuild
//! the token it repeats), written through the store's own group-commit writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use logout_ledger::logout_token::{Reason, Rejection, SessionMetadata, TokenFacts};
use logout_ledger::store::{AuditStore, NewRecord};
use serde_json::json;

/// The issuers records come from (weights 6:3:1).
pub(crate) const ISSUERS: [&str; 3] = [
    "https://acme.example/",
    "https://login.globex.example/",
    "https://id.initech.example/",
];
pub(crate) const ORGS: u64 = 500;
pub(crate) const SUBJECTS: u64 = 200_000;
pub(crate) const DAYS: i64 = 90;
const DEVICES: [&str; 8] = [
    "MacBook Pro",
    "iPhone 15",
    "Pixel 8",
    "Windows 11 / Edge",
    "iPad Air",
    "Galaxy S24",
    "Linux / Firefox",
    "ThinkPad / Chrome",
];
pub(crate) const REGIONS: [&str; 5] = [
    "eu-west-1",
    "eu-central-1",
    "us-east-1",
    "us-west-2",
    "ap-southeast-2",
];
const APPS: [&str; 3] = ["web", "admin", "mobile"];

/// splitmix64: a fast, good-enough hash of an index into random bits.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Organisation of record `i`'s subject: a skewed distribution (a few large tenants).
pub(crate) fn org_of(subject: u64) -> u64 {
    let r = mix(subject ^ 0x0A6) % 1000;
    if r < 400 {
        r % 10
    } else {
        10 + mix(subject) % (ORGS - 10)
    }
}

/// The subject of record `i`.
pub(crate) fn subject_of(i: u64) -> u64 {
    mix(i ^ 0x5B) % SUBJECTS
}

/// Issuer of a subject.
pub(crate) fn issuer_of(subject: u64) -> &'static str {
    match mix(subject ^ 0x155) % 10 {
        0..=5 => ISSUERS[0],
        6..=8 => ISSUERS[1],
        _ => ISSUERS[2],
    }
}

/// The `sid` of record `i` (a session logged out at most once).
pub(crate) fn sid_of(i: u64) -> String {
    format!("sid-{:016x}", mix(i ^ 0x51D))
}

/// Whether record `i` logs out all of its subject's sessions (no `sid`): 5%.
pub(crate) fn subject_wide(i: u64) -> bool {
    mix(i ^ 0xA11) % 100 < 5
}

/// When record `i` arrives: spread over [`DAYS`] days ending at `end`, jittered by up to a second.
pub(crate) fn received_at(i: u64, n: u64, end: i64) -> i64 {
    let span = DAYS * 86_400_000;
    let base = end - span + (i as i64) * span / (n as i64).max(1);
    base + (mix(i ^ 0x717) % 1000) as i64 - 500
}

fn token_for(i: u64, claims: &serde_json::Value) -> String {
    let header = json!({"alg": "RS256", "kid": "key-2026-01", "typ": "logout+jwt"});
    let sig: Vec<u8> = (0..256u64).map(|k| mix(i * 256 + k) as u8).collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Record `i` of `n`: 90% accepted (1% of them re-deliveries of an earlier token, 5% without
/// `sid`), 10% rejected for assorted reasons (replays reuse an earlier `jti`).
pub(crate) fn record(i: u64, n: u64, end: i64) -> NewRecord {
    let roll = mix(i ^ 0xD1CE) % 1000;
    if (900..910).contains(&roll) && i >= 1000 {
        return NewRecord {
            received_at: received_at(i, n, end),
            ..record(i - 1000, n, end)
        };
    }
    let subject = subject_of(i);
    let iss = issuer_of(subject);
    let org = org_of(subject);
    let at = received_at(i, n, end);
    let iat = at / 1000 - 2;
    let jti_of = |k: u64| format!("{:016x}-{:016x}", mix(k ^ 0x7717), mix(k ^ 0x1771));
    let jti = if (910..920).contains(&roll) && i >= 5000 {
        jti_of(i - 5000)
    } else {
        jti_of(i)
    };
    let sid = (!subject_wide(i)).then(|| sid_of(i));
    let meta = json!({
        "org_id": format!("org_{org:04}"),
        "org_slug": format!("tenant-{org}"),
        "deviceName": DEVICES[(mix(i ^ 0xDE) % DEVICES.len() as u64) as usize],
        "loginRegion": REGIONS[(mix(subject ^ 0x4E) % REGIONS.len() as u64) as usize],
        "app": APPS[(mix(i ^ 0xA9) % APPS.len() as u64) as usize],
    });
    let claims = json!({
        "iss": iss, "aud": "web-app", "iat": iat, "exp": iat + 120, "jti": jti,
        "sub": format!("auth0|{subject:012x}"), "sid": sid,
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        "session_metadata": meta,
    });
    let token = token_for(i, &claims);
    let mut sha = [0u8; 32];
    sha.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    let verdict = match roll {
        0..=39 => Err(Rejection::new(Reason::Expired, "exp + leeway has passed")),
        40..=59 => Err(Rejection::new(
            Reason::BadSignature,
            "the signature does not verify",
        )),
        60..=69 => Err(Rejection::new(
            Reason::WrongAudience,
            "aud names no configured client",
        )),
        70..=79 => Err(Rejection::new(Reason::UnknownKey, "kid not in the key set")),
        80..=89 => Err(Rejection::new(
            Reason::TooOld,
            "iat is older than the maximum age",
        )),
        _ => Ok(()),
    };
    let facts = TokenFacts {
        iss: Some(iss.into()),
        sub: claims["sub"].as_str().map(str::to_owned),
        sid,
        jti: Some(jti),
        aud: Some(vec!["web-app".into()]),
        iat: Some(iat),
        exp: Some(iat + 120),
        alg: Some("RS256".into()),
        kid: Some("key-2026-01".into()),
        typ: Some("logout+jwt".into()),
        events: Some(claims["events"].to_string()),
        metadata: Some(SessionMetadata::from_claim(Some(
            &claims["session_metadata"],
        ))),
        key_set_digest: Some([7; 32]),
    };
    NewRecord {
        received_at: at,
        verdict,
        facts,
        token: Some(token),
        token_sha256: Some(sha),
        token_bytes: None,
        source_ip: Some(format!("34.76.{}.{}", mix(i) % 4, 10 + mix(i ^ 9) % 20)),
        user_agent: Some("Auth0/backchannel-logout".into()),
        request_id: None,
    }
}

/// Appends records `from..n` through the writer with `concurrency` appends in flight.
/// Returns the rate (records/s).
pub(crate) async fn fill(url: &str, from: u64, n: u64, end: i64) -> anyhow::Result<f64> {
    let (store, writer) = AuditStore::open(
        url,
        logout_ledger::store::WriterSettings::with_timeout(Duration::from_secs(30)),
    )
    .await?;
    let next = Arc::new(AtomicU64::new(from));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1024 {
        let (store, next) = (store.clone(), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                store.append(record(i, n, end)).await?;
                if i % 100_000 == 0 && i > from {
                    eprintln!("  filled {i} records");
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = (n - from) as f64 / started.elapsed().as_secs_f64();
    drop(store);
    writer.finished().await;
    Ok(rate)
}
