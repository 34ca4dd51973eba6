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

use std::collections::{HashMap, VecDeque};
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

/// The accepted tokens of the last `span`, by key, with their acceptance times in id order so
/// the oldest leave first.
#[derive(Debug)]
pub(super) struct ReplayWindow {
    span_ms: i64,
    seen: HashMap<Key, (Seen, i64)>,
    order: VecDeque<(i64, Key)>,
}

impl ReplayWindow {
    /// A window covering tokens that are valid for at most `validity` after acceptance (the
    /// largest `max_token_age + 2 × leeway` of the configured issuers).
    pub(super) fn new(validity: Duration) -> Self {
        let span = validity.saturating_add(MARGIN);
        Self {
            span_ms: i64::try_from(span.as_millis()).unwrap_or(i64::MAX),
            seen: HashMap::new(),
            order: VecDeque::new(),
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

    /// The acceptance remembered under `key`, if any.
    pub(super) fn get(&self, key: &Key) -> Option<Seen> {
        self.seen.get(key).map(|(s, _)| *s)
    }

    /// Remembers a committed acceptance received at `received_at` (ms since the epoch).
    pub(super) fn insert(&mut self, key: Key, seen: Seen, received_at: i64) {
        self.seen.insert(key, (seen, received_at));
        self.order.push_back((received_at, key));
    }

    /// Remembers accepted records read back from the store.
    pub(super) fn extend(&mut self, accepted: Vec<AcceptedToken>) {
        for a in accepted {
            let seen = Seen {
                id: a.id,
                token_sha256: a.token_sha256,
            };
            self.insert(Self::key(&a.iss, &a.jti), seen, a.received_at);
        }
    }

    /// Forgets everything (before reading the window back from the store).
    pub(super) fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
    }

    /// How far back (ms before the latest record) the window reaches.
    pub(super) fn span_ms(&self) -> i64 {
        self.span_ms
    }

    /// The earliest acceptance time (ms) still inside the window at `now_ms`.
    pub(super) fn start(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.span_ms)
    }

    /// Forgets acceptances older than the window at `now_ms`.
    pub(super) fn prune(&mut self, now_ms: i64) {
        let start = self.start(now_ms);
        while let Some(&(at, key)) = self.order.front() {
            if at >= start {
                break;
            }
            self.order.pop_front();
            // The same key may have been read back again later: only its latest entry removes it.
            if self.seen.get(&key).is_some_and(|(_, latest)| *latest == at) {
                self.seen.remove(&key);
            }
        }
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
        w.prune(1_001 + span);
        assert_eq!(w.get(&ReplayWindow::key("i", "1")), None);
        assert_eq!(w.get(&ReplayWindow::key("i", "2")), Some(seen(2)));
        w.prune(10_000 + span);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_key_read_back_twice_stays_until_its_last_entry_leaves() {
        let mut w = ReplayWindow::new(Duration::ZERO);
        let k = ReplayWindow::key("i", "1");
        w.insert(k, seen(1), 1_000);
        w.insert(k, seen(1), 5_000);
        w.prune(1_001 + 60_000);
        assert_eq!(w.get(&k), Some(seen(1)));
        w.prune(5_001 + 60_000);
        assert_eq!(w.get(&k), None);
    }
}
