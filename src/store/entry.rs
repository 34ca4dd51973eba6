//! What the writer is asked to record, and how each request becomes one canonical row.

use serde_json::Value;

use super::chain::EventRow;
use crate::logout_token::{Reason, Rejection, TokenFacts};

/// What happened to a logout request, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A valid logout, recorded once.
    Accepted,
    /// The identical token again (the issuer retrying): answered 200, points at the original.
    Duplicate,
    /// Refused; the reason says why.
    Rejected,
}

impl Outcome {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Rejected => "rejected",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        [Outcome::Accepted, Outcome::Duplicate, Outcome::Rejected]
            .into_iter()
            .find(|o| o.code() == code)
    }
}

/// A logout request to record, as the endpoint saw it. The store decides `duplicate`/`replay`.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Milliseconds since the epoch when the request arrived.
    pub received_at: i64,
    /// The validator's verdict (`Ok` = every rule but replay held).
    pub verdict: Result<(), Rejection>,
    /// What the token says.
    pub facts: TokenFacts,
    /// The token itself; stored only if the record ends up accepted.
    pub token: Option<String>,
    /// SHA-256 of the token as received.
    pub token_sha256: Option<[u8; 32]>,
    /// The token's length in bytes as received (kept when the token itself is not).
    pub token_bytes: Option<usize>,
    /// Peer address.
    pub source_ip: Option<String>,
    /// `User-Agent` header (bounded).
    pub user_agent: Option<String>,
}

/// The kind of a non-logout record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A read of the audit data (query, export, report).
    Access,
    /// An event in the service's own life (start, stop, checkpoint, key-set change, retention).
    System,
}

impl NoteKind {
    /// The stored `kind`.
    pub fn code(self) -> &'static str {
        match self {
            NoteKind::Access => "access",
            NoteKind::System => "system",
        }
    }
}

/// An access or system record: an action and its JSON details (never a secret).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Access or system.
    pub kind: NoteKind,
    /// What happened, e.g. `start`.
    pub action: String,
    /// Details as JSON.
    pub details: Value,
    /// When, in milliseconds since the epoch.
    pub at: i64,
}

/// The committed logout record's identity and final outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Sequence number of the record.
    pub id: i64,
    /// Final outcome.
    pub outcome: Outcome,
    /// The rejection, when rejected.
    pub rejection: Option<Rejection>,
    /// For a duplicate, the original record.
    pub duplicate_of: Option<i64>,
}

impl Committed {
    /// Whether the token's signature verified (accepted, duplicate, or rejected by a rule after
    /// the signature), so its claims may fill the claim columns and the metadata index.
    pub fn signature_verified(&self) -> bool {
        self.rejection
            .as_ref()
            .is_none_or(|r| !r.reason.is_unverified())
    }

    /// The HTTP status this record answers with (and records): 200, or the rejection's.
    pub fn http_status(&self) -> u16 {
        match (&self.outcome, &self.rejection) {
            (Outcome::Accepted | Outcome::Duplicate, _) => 200,
            (Outcome::Rejected, Some(r)) => r.http_status(),
            (Outcome::Rejected, None) => 400,
        }
    }
}

/// Decides the final outcome of a record given the accepted token already holding its
/// `(iss, jti)`, if any. Shared by every backend so they agree to the letter.
pub fn resolve(
    record: &NewRecord,
    existing: Option<(i64, [u8; 32])>,
) -> (Outcome, Option<Rejection>, Option<i64>) {
    if let (Some((original, hash)), Some(ours)) = (existing, record.token_sha256) {
        if hash == ours {
            return (Outcome::Duplicate, None, Some(original));
        }
        if record.verdict.is_ok() {
            let detail =
                format!("jti already accepted in record {original} with a different token");
            return (
                Outcome::Rejected,
                Some(Rejection::new(Reason::Replay, detail)),
                None,
            );
        }
    }
    match &record.verdict {
        Ok(()) => (Outcome::Accepted, None, None),
        Err(r) => (Outcome::Rejected, Some(r.clone()), None),
    }
}

/// The row a logout record becomes once its outcome is decided.
pub(super) fn logout_row(id: i64, r: &NewRecord, c: &Committed) -> EventRow {
    let f = &r.facts;
    let accepted = c.outcome == Outcome::Accepted;
    let verified = c.outcome != Outcome::Rejected;
    let meta = f.metadata.as_ref();
    EventRow {
        id,
        kind: "logout".into(),
        received_at: r.received_at,
        outcome: Some(c.outcome.code().into()),
        http_status: Some(i64::from(c.http_status())),
        reason: c.rejection.as_ref().map(|x| x.reason.code().into()),
        reason_detail: c.rejection.as_ref().map(|x| x.detail.clone()),
        iss: f.iss.clone(),
        sub: f.sub.clone(),
        sid: f.sid.clone(),
        jti: f.jti.clone(),
        aud: f.aud.as_ref().map(|a| Value::from(a.clone()).to_string()),
        iat: f.iat,
        exp: f.exp,
        alg: f.alg.clone(),
        kid: f.kid.clone(),
        typ: f.typ.clone(),
        events: f.events.clone(),
        session_metadata: meta.and_then(|m| m.stored_json.clone()),
        metadata_status: Some(meta.map_or("absent", |m| m.status.code()).into()),
        metadata_error: meta.and_then(|m| m.error.clone()),
        source_ip: r.source_ip.clone(),
        user_agent: r.user_agent.clone(),
        token_sha256: r.token_sha256.map(|h| h.to_vec()),
        token: if accepted { r.token.clone() } else { None },
        key_set_digest: if verified {
            f.key_set_digest.map(|d| d.to_vec())
        } else {
            None
        },
        duplicate_of: c.duplicate_of,
        claims_verified: Some(verified),
        action: None,
        details: None,
    }
}

/// The row an access or system record becomes.
pub(super) fn note_row(id: i64, n: &Note) -> EventRow {
    EventRow {
        id,
        kind: n.kind.code().into(),
        received_at: n.at,
        action: Some(n.action.clone()),
        details: Some(n.details.to_string()),
        ..EventRow::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ok: bool, hash: u8) -> NewRecord {
        NewRecord {
            received_at: 0,
            verdict: if ok {
                Ok(())
            } else {
                Err(Rejection::new(Reason::Expired, "old"))
            },
            facts: TokenFacts::default(),
            token: Some("t".into()),
            token_sha256: Some([hash; 32]),
            token_bytes: Some(1),
            source_ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn identical_tokens_are_duplicates_even_when_expired() {
        assert_eq!(
            resolve(&record(true, 1), Some((7, [1; 32]))).0,
            Outcome::Duplicate
        );
        let (outcome, rejection, dup) = resolve(&record(false, 1), Some((7, [1; 32])));
        assert_eq!(
            (outcome, rejection, dup),
            (Outcome::Duplicate, None, Some(7))
        );
    }

    #[test]
    fn another_token_with_the_same_jti_is_a_replay() {
        let (outcome, rejection, _) = resolve(&record(true, 2), Some((7, [1; 32])));
        assert_eq!(outcome, Outcome::Rejected);
        assert_eq!(rejection.map(|r| r.reason), Some(Reason::Replay));
        let (_, rejection, _) = resolve(&record(false, 2), Some((7, [1; 32])));
        assert_eq!(
            rejection.map(|r| r.reason),
            Some(Reason::Expired),
            "an invalid token keeps its reason"
        );
    }

    #[test]
    fn only_accepted_rows_keep_the_token() {
        let r = record(true, 1);
        let accepted = Committed {
            id: 1,
            outcome: Outcome::Accepted,
            rejection: None,
            duplicate_of: None,
        };
        assert_eq!(logout_row(1, &r, &accepted).token.as_deref(), Some("t"));
        let dup = Committed {
            id: 2,
            outcome: Outcome::Duplicate,
            rejection: None,
            duplicate_of: Some(1),
        };
        let row = logout_row(2, &r, &dup);
        assert_eq!(
            (row.token, row.claims_verified, row.http_status),
            (None, Some(true), Some(200))
        );
    }
}
