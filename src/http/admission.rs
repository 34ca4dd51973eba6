//! Admission of rejection records: a request rejected before its signature verified is stored
//! one by one only within token buckets per source (IPv4 /32, IPv6 /64) and in all; beyond
//! them it gets the same answer but is only counted, and the counts are chained as
//! `rejections_suppressed` system records (see [`flusher`]). Accepted and duplicate logouts,
//! and rejections after the signature, never come here.
//!
//! Every decision is a short critical section on a plain mutex: the handler never awaits it.

mod flusher;
mod window;

pub use flusher::{FLUSH_EVERY, Flusher};
pub use window::ACTION;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use self::window::{Part, Suppressed, Window};
use super::client_addr::{client_addr, source_key};
use crate::config::{AdmissionLimits, EdgeSettings, IpNet};
use crate::logout_token::Reason;

/// Most per-source buckets kept; past it, a new source is judged by the total bucket alone.
const MAX_BUCKETS: usize = 65_536;
/// Shortest time between two sweeps of a full bucket table for stale buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Hashes of recently accepted tokens remembered, so their re-deliveries are never suppressed.
const RECENT_ACCEPTED: usize = 16_384;

/// Whether a rejection is stored as its own record or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the limits: store the record.
    Record,
    /// Beyond them: answer alike, count it.
    Count,
}

/// The shared admission state: buckets, the open window's counts, recently accepted tokens.
#[derive(Debug)]
pub struct Admission {
    trusted_proxies: Vec<IpNet>,
    limiter: Mutex<Limiter>,
    window: Mutex<Window>,
    recent: Mutex<RecentTokens>,
}

impl Admission {
    /// Admission under the edge settings' limits and trusted proxies.
    pub fn new(edge: &EdgeSettings) -> Self {
        Self {
            trusted_proxies: edge.trusted_proxies.clone(),
            limiter: Mutex::new(Limiter::new(edge.admission, Instant::now())),
            window: Mutex::new(Window::default()),
            recent: Mutex::new(RecentTokens::default()),
        }
    }

    /// The request's client address (see [`client_addr`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        client_addr(peer, headers, &self.trusted_proxies)
    }

    /// Decides whether an unverified rejection from `client` is stored; counts it if not.
    pub fn admit(&self, client: IpAddr, reason: Reason, bytes: u64, at: i64) -> Decision {
        self.admit_at(client, reason, bytes, at, Instant::now())
    }

    fn admit_at(
        &self,
        client: IpAddr,
        reason: Reason,
        bytes: u64,
        at: i64,
        now: Instant,
    ) -> Decision {
        let source = source_key(client);
        let verdict = lock(&self.limiter).take(source, now);
        let s = Suppressed {
            source,
            reason,
            bytes,
            at,
        };
        let mut window = lock(&self.window);
        match verdict {
            Verdict::Admitted => return Decision::Record,
            Verdict::OverSource => window.over_source_limit(&s),
            Verdict::OverTotal => window.over_total_limit(&s),
        }
        Decision::Count
    }

    /// Remembers an accepted token, so a later delivery of it is never suppressed.
    pub fn accepted(&self, token_sha256: [u8; 32]) {
        lock(&self.recent).insert(token_sha256);
    }

    /// Whether this token was accepted recently (its re-delivery may be a duplicate).
    pub fn recently_accepted(&self, token_sha256: &[u8; 32]) -> bool {
        lock(&self.recent).contains(token_sha256)
    }

    /// Closes the window (and drops buckets that have refilled): what to write.
    fn close_window(&self) -> Vec<Part> {
        lock(&self.limiter).sweep(Instant::now());
        std::mem::take(&mut *lock(&self.window)).into_parts()
    }

    /// Gives back a part that could not be written.
    fn restore(&self, part: Part) {
        lock(&self.window).restore(part);
    }
}

/// A poisoned lock still holds consistent counters (every update is a few plain writes).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the buckets say about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Admitted,
    OverSource,
    OverTotal,
}

/// A token bucket: `rate` tokens a second up to `capacity`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, capacity: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.last = now;
    }

    /// Whether it would be full by `now` (so forgetting it changes nothing).
    fn refilled(&self, rate: f64, capacity: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= capacity
    }
}

/// The buckets.
#[derive(Debug)]
struct Limiter {
    source_rate: f64,
    source_capacity: f64,
    total_rate: f64,
    total_capacity: f64,
    total: Bucket,
    sources: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

impl Limiter {
    fn new(limits: AdmissionLimits, now: Instant) -> Self {
        let total_capacity = f64::from(limits.total_per_sec);
        Self {
            source_rate: f64::from(limits.per_source_per_sec),
            source_capacity: f64::from(limits.per_source_burst),
            total_rate: f64::from(limits.total_per_sec),
            total_capacity,
            total: Bucket::full(total_capacity, now),
            sources: HashMap::new(),
            last_sweep: now,
        }
    }

    fn take(&mut self, source: IpAddr, now: Instant) -> Verdict {
        self.total.refill(self.total_rate, self.total_capacity, now);
        if !self.sources.contains_key(&source)
            && self.sources.len() >= MAX_BUCKETS
            && now.saturating_duration_since(self.last_sweep) >= SWEEP_EVERY
        {
            self.sweep(now);
        }
        let (rate, capacity) = (self.source_rate, self.source_capacity);
        let room = self.sources.len() < MAX_BUCKETS;
        let bucket = match self.sources.get_mut(&source) {
            Some(b) => {
                b.refill(rate, capacity, now);
                Some(b)
            }
            None if room => Some(
                self.sources
                    .entry(source)
                    .or_insert_with(|| Bucket::full(capacity, now)),
            ),
            // No bucket can be kept for it: the total bucket alone decides.
            None => None,
        };
        match bucket {
            Some(b) if b.tokens < 1.0 => Verdict::OverSource,
            _ if self.total.tokens < 1.0 => Verdict::OverTotal,
            Some(b) => {
                b.tokens -= 1.0;
                self.total.tokens -= 1.0;
                Verdict::Admitted
            }
            None => {
                self.total.tokens -= 1.0;
                Verdict::Admitted
            }
        }
    }

    /// Forgets every bucket that has refilled: a fresh one would be the same.
    fn sweep(&mut self, now: Instant) {
        let (rate, capacity) = (self.source_rate, self.source_capacity);
        self.sources.retain(|_, b| !b.refilled(rate, capacity, now));
        self.last_sweep = now;
    }
}

/// A bounded set of recently accepted token hashes, oldest forgotten first.
#[derive(Debug, Default)]
struct RecentTokens {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl RecentTokens {
    fn insert(&mut self, hash: [u8; 32]) {
        if self.set.insert(hash) {
            self.order.push_back(hash);
            if self.order.len() > RECENT_ACCEPTED
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, hash: &[u8; 32]) -> bool {
        self.set.contains(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(per_source: u32, burst: u32, total: u32) -> EdgeSettings {
        EdgeSettings {
            admission: AdmissionLimits {
                per_source_per_sec: per_source,
                per_source_burst: burst,
                total_per_sec: total,
            },
            ..EdgeSettings::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn counted(parts: &[Part]) -> u64 {
        parts.iter().map(Part::count).sum()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let a = Admission::new(&edge(2, 3, 1_000));
        let t0 = Instant::now();
        let d: Vec<_> = (0..5)
            .map(|_| a.admit_at(ip("192.0.2.1"), Reason::MalformedToken, 1, 0, t0))
            .collect();
        assert_eq!(d.iter().filter(|d| **d == Decision::Record).count(), 3);
        // Half a second later: one more token (2/s).
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(
            a.admit_at(ip("192.0.2.1"), Reason::MalformedToken, 1, 0, t1),
            Decision::Record
        );
        assert_eq!(
            a.admit_at(ip("192.0.2.1"), Reason::MalformedToken, 1, 0, t1),
            Decision::Count
        );
        // Another source is untouched by the first one's spending.
        assert_eq!(
            a.admit_at(ip("192.0.2.2"), Reason::MalformedToken, 1, 0, t1),
            Decision::Record
        );
        assert_eq!(counted(&a.close_window()), 3);
    }

    #[test]
    fn one_ipv6_64_is_one_source() {
        let a = Admission::new(&edge(1, 1, 1_000));
        let t = Instant::now();
        assert_eq!(
            a.admit_at(ip("2001:db8:1:2::1"), Reason::BadTyp, 0, 0, t),
            Decision::Record
        );
        assert_eq!(
            a.admit_at(ip("2001:db8:1:2::ffff"), Reason::BadTyp, 0, 0, t),
            Decision::Count
        );
        assert_eq!(
            a.admit_at(ip("2001:db8:1:3::1"), Reason::BadTyp, 0, 0, t),
            Decision::Record
        );
    }

    #[test]
    fn the_total_cap_spans_sources_and_counts_into_the_all_sources_record() {
        let a = Admission::new(&edge(100, 100, 5));
        let t = Instant::now();
        let recorded = (0..20u8)
            .filter(|i| {
                a.admit_at(ip(&format!("10.0.0.{i}")), Reason::UnknownKey, 3, 0, t)
                    == Decision::Record
            })
            .count();
        assert_eq!(recorded, 5);
        let parts = a.close_window();
        assert_eq!(parts.len(), 1, "only the all-sources record");
        let d = parts[0].note(0).details;
        assert_eq!(d["scope"], "all_sources");
        assert_eq!(d["over_total_limit"], 15);
        assert_eq!(d["bytes"], 45);
        assert!(a.close_window().is_empty(), "a closed window starts empty");
    }

    #[test]
    fn refilled_buckets_are_forgotten() {
        let a = Admission::new(&edge(10, 10, 1_000));
        let t = Instant::now();
        for i in 0..50u8 {
            a.admit_at(
                ip(&format!("10.0.1.{i}")),
                Reason::MalformedRequest,
                0,
                0,
                t,
            );
        }
        assert_eq!(lock(&a.limiter).sources.len(), 50);
        lock(&a.limiter).sweep(t + Duration::from_millis(50));
        assert_eq!(lock(&a.limiter).sources.len(), 50, "not refilled yet");
        lock(&a.limiter).sweep(t + Duration::from_millis(150));
        assert!(lock(&a.limiter).sources.is_empty());
    }

    #[test]
    fn recently_accepted_tokens_are_bounded() {
        let a = Admission::new(&EdgeSettings::default());
        a.accepted([1; 32]);
        assert!(a.recently_accepted(&[1; 32]));
        for i in 0..RECENT_ACCEPTED {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64 + 10).to_le_bytes());
            a.accepted(h);
        }
        assert!(!a.recently_accepted(&[1; 32]));
        assert_eq!(lock(&a.recent).set.len(), RECENT_ACCEPTED);
    }
}
