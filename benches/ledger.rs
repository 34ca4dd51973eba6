//! Ledger benchmark: fills a store through the real group-commit writer with realistic
//! records, signs a checkpoint, then times `verify` (every entry hash, the chain and the Merkle
//! root) and `prove`. Before `verify` it measures the bounds that limit it on this machine:
//! SHA-256 alone over the store's own canonical record sizes on 1 and on every core, and the
//! read path alone (rows read, encoded and content-hashed, nothing chained).
//! Run: `cargo bench --bench ledger -- [--records N] [--keep DIR]`
//! (`--keep DIR`: fill `DIR/audit.db` once and reuse it on later runs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logout_ledger::clock::{Clock, SystemClock};
use logout_ledger::ledger::{prove, verify};
use logout_ledger::local_issuer::random_id;
use logout_ledger::logout_token::{Reason, Rejection, SessionMetadata, TokenFacts};
use logout_ledger::store::{AuditStore, CheckpointRequest, NewRecord};
use logout_ledger::tlog::NoteSigner;
use logout_ledger::tlog::note::generate_pkcs8;
use serde_json::json;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(i: u64, now: i64) -> NewRecord {
    let org = ["acme", "globex", "initech", "umbrella", "hooli"][(i % 5) as usize];
    let jti = random_id();
    let metadata = json!({"org_id": format!("org_{org}"), "org_slug": org, "deviceName": "MacBook Pro", "loginRegion": "DE"});
    let rejected = i % 10 == 9;
    // A realistic RS256 token is ~900 bytes; its exact content does not matter to the ledger.
    let token = format!(
        "eyJhbGciOiJSUzI1NiIsImtpZCI6InJzYS0xIiwidHlwIjoiSldUIn0.{}.{}",
        "x".repeat(600),
        "s".repeat(342)
    );
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut sha = [0u8; 32];
    sha.copy_from_slice(d.as_ref());
    NewRecord {
        received_at: now,
        verdict: if rejected {
            Err(Rejection::new(Reason::Expired, "exp is 400s in the past"))
        } else {
            Ok(())
        },
        facts: TokenFacts {
            iss: Some("https://tenant.eu.auth0.com/".into()),
            sub: Some(format!("auth0|user-{}", i % 50_000)),
            sid: Some(format!("sid-{jti}")),
            jti: Some(jti),
            aud: Some(vec!["app".into()]),
            iat: Some(now / 1000),
            exp: Some(now / 1000 + 120),
            alg: Some("RS256".into()),
            kid: Some("rsa-1".into()),
            typ: Some("JWT".into()),
            events: Some(r#"{"http://schemas.openid.net/event/backchannel-logout":{}}"#.into()),
            metadata: Some(SessionMetadata::from_claim(Some(&metadata))),
            key_set_digest: Some([7; 32]),
        },
        token: Some(token),
        token_sha256: Some(sha),
        token_bytes: None,
        source_ip: Some("203.0.113.9".into()),
        user_agent: Some("Auth0/1.0".into()),
        request_id: None,
    }
}

fn keep_dir() -> Option<PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--records", 200_000);
    let keep = keep_dir();
    let dir = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ledger-bench-{}", random_id())));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("audit.db");
    let url = format!("sqlite://{}", db.display());
    let reused = keep.is_some() && db.exists();
    if !reused {
        fill(&url, n).await?;
    }
    let size = std::fs::metadata(&db)?.len();
    println!(
        "store: {} ({} MiB){}",
        db.display(),
        size >> 20,
        if reused { ", reused" } else { "" }
    );
    bounds(&url).await?;
    verify_and_prove(&url).await?;
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Appends `n` records through the real writer from 256 concurrent tasks, then a checkpoint.
async fn fill(url: &str, n: u64) -> anyhow::Result<()> {
    let (store, writer) = AuditStore::open(
        url,
        logout_ledger::store::WriterSettings::with_timeout(Duration::from_secs(30)),
    )
    .await?;
    let store = Arc::new(store);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 256u64;
    for w in 0..workers {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut i = w;
            while i < n {
                store.append(record(i, SystemClock.now_millis())).await?;
                i += workers;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let fill = started.elapsed();
    let signer = Arc::new(NoteSigner::new("bench.logout-ledger", &generate_pkcs8()?)?);
    store
        .checkpoint(CheckpointRequest {
            signer,
            at: SystemClock.now_millis(),
        })
        .await?;
    drop(store);
    writer.finished().await;
    println!(
        "filled {n} records in {fill:.2?} ({:.0}/s through the writer, {workers} concurrent appenders)",
        n as f64 / fill.as_secs_f64()
    );
    Ok(())
}

/// Times `verify` (twice: cold and warm page cache) and `prove`.
async fn verify_and_prove(url: &str) -> anyhow::Result<()> {
    let reader = AuditStore::open_reader(url).await?;
    let opts = verify::Options::default();
    for round in 1..=2 {
        let (t, cpu) = (Instant::now(), cpu_secs());
        let report = verify::run(&reader, &opts).await?;
        let (e, cpu) = (t.elapsed(), cpu_secs() - cpu);
        println!(
            "verify (round {round}): {} records, {} problems, {} checkpoint(s), {e:.2?} = {:.0} records/s (CPU {cpu:.2} s)",
            report.chain.records,
            report.problems.len(),
            report.checkpoints_checked,
            report.chain.records as f64 / e.as_secs_f64()
        );
    }
    let t = Instant::now();
    let size = reader
        .checkpoints()
        .await?
        .last()
        .map_or(1, |c| c.tree_size);
    let proof = prove::prove(&reader, size / 2, None, None).await?;
    println!(
        "prove record {} in a tree of {}: {:.2?}",
        proof.id,
        proof.tree_size,
        t.elapsed()
    );
    Ok(())
}

/// CPU time this process has used so far, all threads (Linux `/proc/self/stat`, 100 Hz ticks),
/// or zero elsewhere: with the wall time it shows how much of the two cores a run could use.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let ticks: Vec<f64> = after_name
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    ticks.iter().sum::<f64>() / 100.0
}

/// SHA-256 of every record's hash input (prefix, canonical encoding, previous hash), as
/// `threads` threads share `total` records: records/s and bytes/s.
fn sha_rate(inputs: &[Vec<u8>], total: usize, threads: usize) -> (f64, f64) {
    let t = Instant::now();
    std::thread::scope(|s| {
        for k in 0..threads {
            s.spawn(move || {
                let mut acc = 0u8;
                for i in (k..total).step_by(threads) {
                    let d = aws_lc_rs::digest::digest(
                        &aws_lc_rs::digest::SHA256,
                        &inputs[i % inputs.len()],
                    );
                    acc ^= d.as_ref()[0];
                }
                std::hint::black_box(acc);
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let bytes: usize = (0..total).map(|i| inputs[i % inputs.len()].len()).sum();
    (total as f64 / secs, bytes as f64 / secs)
}

/// What bounds `verify` here: SHA-256 alone over the store's own records (1 core, every core),
/// and the read path alone (read, encode and content-hash every row, nothing chained).
async fn bounds(url: &str) -> anyhow::Result<()> {
    let reader = AuditStore::open_reader(url).await?;
    let sample = reader.chain_rows(0, 20_000).await?;
    let inputs: Vec<Vec<u8>> = sample
        .iter()
        .map(|r| {
            let mut b = logout_ledger::store::chain::DOMAIN.to_vec();
            r.row.encode(&mut b);
            b.extend_from_slice(&[0; 32]);
            b
        })
        .collect();
    let mean = inputs.iter().map(Vec::len).sum::<usize>() / inputs.len().max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        let (rate, bytes) = sha_rate(&inputs, 1_000_000, threads);
        println!(
            "SHA-256 alone, {threads} thread(s), {mean}-byte hash inputs: {rate:.0} records/s ({:.2} GB/s)",
            bytes / 1e9
        );
    }
    for round in 1..=2 {
        let (t, cpu) = (Instant::now(), cpu_secs());
        let (mut rows, mut after) = (0u64, 0);
        loop {
            let page = reader.chain_digests(after, 20_000).await?;
            let Some(last) = page.last() else { break };
            after = match last {
                Ok(d) => d.id,
                Err((id, _)) => *id,
            };
            rows += page.len() as u64;
        }
        let (e, cpu) = (t.elapsed(), cpu_secs() - cpu);
        println!(
            "read path alone (round {round}): {rows} rows read, encoded and content-hashed in {e:.2?} = {:.0} records/s (CPU {cpu:.2} s)",
            rows as f64 / e.as_secs_f64()
        );
    }
    Ok(())
}
