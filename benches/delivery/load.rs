//! The open-loop load: pre-signed logout tokens, sent at a fixed rate whatever the answers'
//! latency (a tick every `1/rate`, missed ticks sent at once), with at most `in_flight`
//! requests outstanding.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use logout_ledger::local_issuer::LocalIssuer;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::MissedTickBehavior;

use crate::support;

/// The `jti` of token `i` (the webhook, NATS and relayed records are matched back by it).
pub(crate) fn jti(i: usize) -> String {
    format!("bench-{i:08}")
}

/// The token index of a `jti` made by [`jti`].
pub(crate) fn index(jti: &str) -> Option<usize> {
    jti.strip_prefix("bench-")?.parse().ok()
}

/// Signs `n` RS256 logout tokens as form bodies on every core, before any timing starts.
pub(crate) fn mint_bodies(issuer: &LocalIssuer, n: usize) -> anyhow::Result<Vec<String>> {
    let threads = support::cores().max(1);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(|i| {
                            let mut claims = support::fresh_claims(issuer)?;
                            claims.insert("jti".into(), json!(jti(i)));
                            claims.insert(
                                "sub".into(),
                                json!(format!("auth0|user-{:06}", i % 50_000)),
                            );
                            support::logout_body(issuer, &claims)
                        })
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for w in workers {
            out.extend(
                w.join()
                    .map_err(|_| anyhow::anyhow!("a minting thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// One request's end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// The token's index.
    pub(crate) idx: usize,
    /// The HTTP status, 0 for a transport error.
    pub(crate) status: u16,
    /// From the send to the whole answer, in microseconds.
    pub(crate) latency_us: u32,
    /// How late the send was against its scheduled tick, in microseconds.
    pub(crate) lag_us: u32,
    /// When the whole answer was read.
    pub(crate) done: Instant,
}

/// What one open-loop run saw.
pub(crate) struct Run {
    /// Every request's end, in no particular order.
    pub(crate) samples: Vec<Sample>,
    /// The first scheduled send.
    pub(crate) started: Instant,
    /// From the first scheduled send to the last answer.
    pub(crate) elapsed: Duration,
    /// One transport error or non-200 answer, for diagnosis.
    pub(crate) example: Option<String>,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Sends `bodies[range]` to `url`, one every `1/rate` seconds, at most `in_flight` at once.
pub(crate) async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    bodies: &Arc<Vec<String>>,
    range: Range<usize>,
    rate: f64,
    in_flight: usize,
) -> anyhow::Result<Run> {
    let url: Arc<str> = Arc::from(url);
    let semaphore = Arc::new(Semaphore::new(in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Sample, Option<String>)>();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let n = range.len();
    let started = Instant::now();
    for idx in range {
        let scheduled = ticker.tick().await.into_std();
        let permit = Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .context("semaphore closed")?;
        let (client, url, bodies, tx) = (
            client.clone(),
            Arc::clone(&url),
            Arc::clone(bodies),
            tx.clone(),
        );
        tokio::spawn(async move {
            let sent = Instant::now();
            let lag_us = micros(sent.saturating_duration_since(scheduled));
            let body = bodies.get(idx).cloned().unwrap_or_default();
            let (status, example) = match support::post_form(&client, &url, body).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.bytes().await {
                        Ok(_) if status == 200 => (status, None),
                        Ok(b) => (
                            status,
                            Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&b))),
                        ),
                        Err(e) => (0, Some(format!("reading the answer: {e}"))),
                    }
                }
                Err(e) => (0, Some(format!("transport error: {e:#}"))),
            };
            let done = Instant::now();
            let sample = Sample {
                idx,
                status,
                latency_us: micros(done - sent),
                lag_us,
                done,
            };
            let _ = tx.send((sample, example));
            drop(permit);
        });
    }
    drop(tx);
    let mut samples = Vec::with_capacity(n);
    let mut example = None;
    let mut last = started;
    while let Some((s, e)) = rx.recv().await {
        last = last.max(s.done);
        samples.push(s);
        if example.is_none() {
            example = e;
        }
    }
    Ok(Run {
        samples,
        started,
        elapsed: last - started,
        example,
    })
}
