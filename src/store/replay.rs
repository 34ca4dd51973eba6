//! The replay window: the `(iss, jti)` of every token accepted recently enough that a token
//! carrying them could still pass validation, kept in the writer's memory.
//!
//! A token is `too_old` once its `iat` is more than the issuer's maximum token age plus the
//! leeway in the past, and its `iat` is at most the leeway ahead of the time it was accepted.
//! So a second token with the same `(iss, jti)` can only be judged a duplicate or a replay within
//! `max_token_age + 2 × leeway` of the first one's acceptance; after that, the validation
//! rules refuse it before the replay rule is reached. Remembering only that window, in memory,
//! costs nothing on disk: the accepted records themselves (`audit_events`, append-ordered)
//! are the durable source, read back at start-up and whenever another replica has appended.
//! A random-key table of every accepted token ever seen cost one B-tree page per logout.

use std::collections::HashMap;
use std::time::Duration;

use aws_lc_rs::digest;

use super::backend::AcceptedToken;

/// Extra time kept beyond the validation window, for a request that waited in the queue or a
/// replica whose clock is slightly behind.
const MARGIN: Duration = Duration::from_secs(60);

/// 16 bytes of SHA-256 over `iss`, a NUL byte, and `jti`: a fixed-size key, so an entry costs
/// the same whatever the issuer's identifiers look like.
pub(super) type Key = [u8; 16];

/// What a remembered acceptance says: the record that accepted the token, and the token's hash
/// (an identical token is a duplicate of that record, another one with the same key a replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    /// The accepting record's id.
    pub id: i64,
    /// SHA-256 of the accepted token.
    pub token_sha256: [u8; 32],
}

/// One remembered acceptance, 48 bytes: half the token's SHA-256 tells an identical token from
/// another one (tokens are signed by the issuer, so nobody can aim for a collision).
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: i64,
    received_at: i64,
    token: [u8; 16],
}

/// How often (ms of record time) the window forgets what has left it: a sweep over the map, so
/// an insert costs O(1) on average and an entry needs no second index by time.
const SWEEP_EVERY_MS: i64 = 1_000;

/// The accepted tokens of the last `span`, by key.
#[derive(Debug)]
pub(super) struct ReplayWindow {
    span_ms: i64,
    seen: HashMap<Key, Entry>,
    swept_at: i64,
}

impl ReplayWindow {
    /// A window covering tokens that are valid for at most `validity` after acceptance (the
    /// largest `max_token_age + 2 × leeway` of the configured issuers).
    pub(super) fn new(validity: Duration) -> Self {
        let span = validity.saturating_add(MARGIN);
        Self {
            span_ms: i64::try_from(span.as_millis()).unwrap_or(i64::MAX),
            seen: HashMap::new(),
            swept_at: i64::MIN,
        }
    }

    /// The key under which a token's `(iss, jti)` is remembered.
    pub(super) fn key(iss: &str, jti: &str) -> Key {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(iss.as_bytes());
        ctx.update(&[0]);
        ctx.update(jti.as_bytes());
        let mut key = [0; 16];
        key.copy_from_slice(&ctx.finish().as_ref()[..16]);
        key
    }

    /// Whether the token with this SHA-256 is the one remembered under `key`: `Some(id)` of the
    /// accepting record and whether it is the identical token, or `None` if nothing is.
    pub(super) fn get(&self, key: &Key, token_sha256: &[u8; 32]) -> Option<(i64, bool)> {
        self.seen
            .get(key)
            .map(|e| (e.id, e.token[..] == token_sha256[..16]))
    }

    /// Remembers a committed acceptance received at `received_at` (ms since the epoch).
    pub(super) fn insert(&mut self, key: Key, seen: Seen, received_at: i64) {
        let mut token = [0; 16];
        token.copy_from_slice(&seen.token_sha256[..16]);
        let entry = Entry {
            id: seen.id,
            received_at,
            token,
        };
        self.seen
            .entry(key)
            .and_modify(|e| {
                if e.received_at <= received_at {
                    *e = entry;
                }
            })
            .or_insert(entry);
    }

    /// Remembers accepted records read back from the store.
    pub(super) fn extend(&mut self, accepted: Vec<AcceptedToken>) {
        for a in accepted {
            let seen = Seen {
                id: a.id,
                token_sha256: a.token_sha256,
            };
            self.insert(a.key, seen, a.received_at);
        }
    }

    /// Forgets everything (before reading the window back from the store).
    pub(super) fn clear(&mut self) {
        self.seen.clear();
    }

    /// How far back (ms before the latest record) the window reaches.
    pub(super) fn span_ms(&self) -> i64 {
        self.span_ms
    }

    /// Forgets acceptances older than the window at `now_ms` (at most once a second).
    pub(super) fn prune(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.swept_at) < SWEEP_EVERY_MS {
            return;
        }
        self.swept_at = now_ms;
        let start = now_ms.saturating_sub(self.span_ms);
        self.seen.retain(|_, e| e.received_at >= start);
    }

    /// How many acceptances are remembered.
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: i64) -> Seen {
        Seen {
            id,
            token_sha256: [id as u8; 32],
        }
    }

    #[test]
    fn keys_separate_issuer_and_token_id() {
        assert_ne!(ReplayWindow::key("ab", "c"), ReplayWindow::key("a", "bc"));
        assert_eq!(ReplayWindow::key("a", "b"), ReplayWindow::key("a", "b"));
    }

    #[test]
    fn acceptances_leave_once_older_than_the_window() {
        let mut w = ReplayWindow::new(Duration::from_secs(100));
        let span = 160_000;
        w.insert(ReplayWindow::key("i", "1"), seen(1), 1_000);
        w.insert(ReplayWindow::key("i", "2"), seen(2), 2_000);
        w.prune(1_000 + span);
        assert_eq!(w.len(), 2);
        w.prune(1_000 + span + SWEEP_EVERY_MS - 1);
        assert_eq!(w.len(), 2, "no sweep within a second of the last");
        w.prune(1_000 + span + SWEEP_EVERY_MS);
        assert_eq!(w.get(&ReplayWindow::key("i", "1"), &[1; 32]), None);
        assert_eq!(
            w.get(&ReplayWindow::key("i", "2"), &[2; 32]),
            Some((2, true)),
            "the identical token"
        );
        assert_eq!(
            w.get(&ReplayWindow::key("i", "2"), &[3; 32]),
            Some((2, false)),
            "another token with that key"
        );
        w.prune(10_000 + span);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_key_read_back_twice_keeps_its_latest_acceptance() {
        let mut w = ReplayWindow::new(Duration::ZERO);
        let k = ReplayWindow::key("i", "1");
        w.insert(k, seen(1), 5_000);
        w.insert(k, seen(1), 1_000);
        w.prune(1_001 + 60_000);
        assert_eq!(w.get(&k, &[1; 32]), Some((1, true)));
        w.prune(5_001 + 60_000);
        assert_eq!(w.get(&k, &[1; 32]), None);
    }
}
