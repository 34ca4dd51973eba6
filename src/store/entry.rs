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
    /// The request that brought it, named in the writer's commit line; never stored.
    pub request_id: Option<crate::telemetry::RequestId>,
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

/// Decides the final outcome of a record given the record that already accepted a token with
/// its `(iss, jti)`, if any, and whether that was this very token. Shared by every backend so
/// they agree to the letter.
pub fn resolve(
    record: &NewRecord,
    existing: Option<(i64, bool)>,
) -> (Outcome, Option<Rejection>, Option<i64>) {
    if let Some((original, identical)) = existing {
        if identical {
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

/// Most characters (and bytes) of the rejection detail kept on a record of an unverified request.
const MAX_UNVERIFIED_DETAIL: usize = 200;
/// Most characters (and bytes of JSON text) of each unverified `iss`, `alg`, `kid` and `typ` kept.
const MAX_UNVERIFIED_VALUE: usize = 128;
/// Most bytes of the user agent kept on a record of an unverified request.
const MAX_UNVERIFIED_AGENT: usize = 128;
/// Most bytes of the source address kept (the longest textual IPv6 address is 45).
const MAX_SOURCE: usize = 45;
/// Most request-derived bytes a record of an unverified request holds in all (reason, detail,
/// token hash, source, user agent and the `details` JSON): an anonymous client's whole share.
const MAX_UNVERIFIED_RECORD: usize = 1024;

/// The budget holds by construction: the longest reason code (17), the detail, the token's
/// SHA-256 (32 bytes), source and agent, and `details` at its longest: its four values, their
/// quotes and keys, and a 20-digit `token_bytes`
/// (`{"token_bytes":N,"unverified":{"alg":"..","iss":"..","kid":"..","typ":".."}}`).
const _: () = {
    let details = 15 + 20 + 15 + 4 * (6 + 2 + MAX_UNVERIFIED_VALUE) + 3 + 2;
    let all = 17 + MAX_UNVERIFIED_DETAIL + 32 + MAX_SOURCE + MAX_UNVERIFIED_AGENT + details;
    assert!(all <= MAX_UNVERIFIED_RECORD);
};

/// What one character costs as stored: its UTF-8 bytes.
fn utf8_cost(c: char) -> usize {
    c.len_utf8()
}

/// What one character costs inside a JSON string as serde_json writes it.
fn json_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if c < ' ' => 6,
        c => c.len_utf8(),
    }
}

/// `s` cut on a character boundary to at most `max_chars` characters costing at most
/// `max_bytes` in all; NUL becomes U+FFFD (PostgreSQL text cannot hold it).
fn cut(s: &str, max_chars: usize, max_bytes: usize, cost: fn(char) -> usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    let mut spent = 0;
    for c in s.chars().take(max_chars) {
        let c = if c == '\0' { '\u{FFFD}' } else { c };
        spent += cost(c);
        if spent > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

/// The `details` JSON of a record of an unverified request: the unverified header values and
/// `iss`, each cut to [`MAX_UNVERIFIED_VALUE`], and the token's length.
fn unverified_details(r: &NewRecord) -> String {
    let f = &r.facts;
    let value = |v: &Option<String>| {
        v.as_deref()
            .map(|s| cut(s, MAX_UNVERIFIED_VALUE, MAX_UNVERIFIED_VALUE, json_cost))
    };
    serde_json::json!({
        "unverified": {
            "iss": value(&f.iss),
            "alg": value(&f.alg),
            "kid": value(&f.kid),
            "typ": value(&f.typ),
        },
        "token_bytes": r.token_bytes,
    })
    .to_string()
}

/// The row a logout record becomes once its outcome is decided.
pub(super) fn logout_row(id: i64, r: &NewRecord, c: &Committed) -> EventRow {
    if !c.signature_verified() {
        return unverified_row(id, r, c);
    }
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

/// The row of a request refused before any signature verified: whatever it carries was written
/// by an anonymous client, so no claim column is filled and at most [`MAX_UNVERIFIED_RECORD`]
/// bytes of it are kept (the unverified `iss`, `alg`, `kid` and `typ` go to `details`).
fn unverified_row(id: i64, r: &NewRecord, c: &Committed) -> EventRow {
    let plain = |s: &str, max: usize| cut(s, max, max, utf8_cost);
    EventRow {
        id,
        kind: "logout".into(),
        received_at: r.received_at,
        outcome: Some(c.outcome.code().into()),
        http_status: Some(i64::from(c.http_status())),
        reason: c.rejection.as_ref().map(|x| x.reason.code().into()),
        reason_detail: c
            .rejection
            .as_ref()
            .map(|x| plain(&x.detail, MAX_UNVERIFIED_DETAIL)),
        source_ip: r.source_ip.as_deref().map(|s| plain(s, MAX_SOURCE)),
        user_agent: r
            .user_agent
            .as_deref()
            .map(|s| plain(s, MAX_UNVERIFIED_AGENT)),
        token_sha256: r.token_sha256.map(|h| h.to_vec()),
        duplicate_of: c.duplicate_of,
        claims_verified: Some(false),
        details: Some(unverified_details(r)),
        ..EventRow::default()
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
            request_id: None,
        }
    }

    #[test]
    fn identical_tokens_are_duplicates_even_when_expired() {
        assert_eq!(
            resolve(&record(true, 1), Some((7, true))).0,
            Outcome::Duplicate
        );
        let (outcome, rejection, dup) = resolve(&record(false, 1), Some((7, true)));
        assert_eq!(
            (outcome, rejection, dup),
            (Outcome::Duplicate, None, Some(7))
        );
    }

    #[test]
    fn another_token_with_the_same_jti_is_a_replay() {
        let (outcome, rejection, _) = resolve(&record(true, 2), Some((7, false)));
        assert_eq!(outcome, Outcome::Rejected);
        assert_eq!(rejection.map(|r| r.reason), Some(Reason::Replay));
        let (_, rejection, _) = resolve(&record(false, 2), Some((7, false)));
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

    /// The request-derived bytes a row holds: reason, detail, hash, source, agent, details.
    fn request_bytes(row: &EventRow) -> usize {
        [
            &row.reason,
            &row.reason_detail,
            &row.source_ip,
            &row.user_agent,
            &row.details,
        ]
        .iter()
        .map(|v| v.as_ref().map_or(0, String::len))
        .sum::<usize>()
            + row.token_sha256.as_ref().map_or(0, Vec::len)
    }

    #[test]
    fn an_unverified_record_keeps_no_claim_and_at_most_a_kibibyte() {
        let nasty = format!("{}\u{1}\"\0é🔐", "x".repeat(2000));
        let facts = TokenFacts {
            iss: Some(nasty.clone()),
            sub: Some("auth0|victim".into()),
            sid: Some("sid".into()),
            jti: Some("jti".into()),
            aud: Some(vec!["a".into()]),
            iat: Some(1),
            exp: Some(2),
            alg: Some("\u{1}".repeat(500)),
            kid: Some("\"".repeat(500)),
            typ: Some("🔐".repeat(500)),
            events: Some("{}".into()),
            key_set_digest: Some([7; 32]),
            ..TokenFacts::default()
        };
        let r = NewRecord {
            received_at: 0,
            verdict: Err(Rejection::new(Reason::UnknownIssuer, "é".repeat(500))),
            facts,
            token: None,
            token_sha256: Some([1; 32]),
            token_bytes: Some(usize::MAX),
            source_ip: Some("f".repeat(100)),
            user_agent: Some("\u{FFFD}".repeat(128)),
            request_id: None,
        };
        let c = Committed {
            id: 1,
            outcome: Outcome::Rejected,
            rejection: r.verdict.clone().err(),
            duplicate_of: None,
        };
        let row = logout_row(1, &r, &c);
        assert_eq!(
            (
                &row.iss,
                &row.sub,
                &row.aud,
                &row.iat,
                &row.alg,
                &row.events
            ),
            (&None, &None, &None, &None, &None, &None)
        );
        assert_eq!(
            (&row.metadata_status, &row.key_set_digest, &row.token),
            (&None, &None, &None)
        );
        assert_eq!(row.http_status, Some(400));
        assert!(row.reason_detail.as_ref().is_some_and(|d| d.len() <= 200));
        assert!(request_bytes(&row) <= MAX_UNVERIFIED_RECORD, "{row:?}");
        let details: Value =
            serde_json::from_str(row.details.as_deref().unwrap_or("")).expect("JSON");
        for key in ["iss", "alg", "kid", "typ"] {
            let v = details["unverified"][key].as_str().expect(key);
            assert!(!v.is_empty() && v.chars().count() <= 128, "{key}: {v}");
            assert!(Value::from(v).to_string().len() <= 130, "{key}: {v}");
            assert!(!v.contains('\0'));
        }
        assert_eq!(details["token_bytes"], Value::from(usize::MAX));
        assert!(
            details["unverified"]["iss"]
                .as_str()
                .is_some_and(|s| s.chars().count() == 128)
        );
    }

    #[test]
    fn a_rejection_after_the_signature_keeps_its_claims() {
        let mut r = record(false, 1);
        r.facts.sub = Some("auth0|alice".into());
        let c = Committed {
            id: 1,
            outcome: Outcome::Rejected,
            rejection: r.verdict.clone().err(),
            duplicate_of: None,
        };
        let row = logout_row(1, &r, &c);
        assert_eq!(row.sub.as_deref(), Some("auth0|alice"));
        assert_eq!(row.metadata_status.as_deref(), Some("absent"));
        assert_eq!(row.details, None);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        assert_eq!(cut("aé🔐", 10, 3, utf8_cost), "aé");
        assert_eq!(cut("aé🔐", 2, 100, utf8_cost), "aé");
        assert_eq!(cut("a\"b", 10, 3, json_cost), "a\"");
        assert_eq!(cut("\u{1}\u{1}", 10, 11, json_cost), "\u{1}");
        assert_eq!(cut("a\0", 10, 10, utf8_cost), "a\u{FFFD}");
    }
}
