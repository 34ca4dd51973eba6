//! A stored record as the CLI and exports present it, with the documented field names.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::StoreError;
use super::cells::Cells;
use crate::clock::format_millis;
use crate::logout_token::Reason;
use crate::util::hex;

/// The rejection codes of rules that fail before the signature verified, as an SQL list
/// (`'malformed_request', ...`): constants of ours, never input.
fn unverified_reason_list() -> String {
    Reason::ALL
        .into_iter()
        .filter(|r| r.is_unverified())
        .map(|r| format!("'{}'", r.code()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An SQL condition (both backends) true for a record whose claims may be believed: every
/// record but a logout refused before its signature verified. Such records written before
/// migration 0003 still hold the forger's claims; claim filters and groupings skip them.
pub(super) static TRUSTED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "(e.reason IS NULL OR e.reason NOT IN ({}))",
        unverified_reason_list()
    )
});

/// Whether a stored record is a logout refused before its signature verified.
fn is_unverified(kind: &str, reason: Option<&str>) -> bool {
    kind == "logout"
        && reason
            .and_then(Reason::from_code)
            .is_some_and(Reason::is_unverified)
}

/// The id at the start of a line of NDJSON output (`{"id":N,...`).
pub(super) fn line_id(line: &str) -> Option<i64> {
    line.strip_prefix("{\"id\":")?
        .split([',', '}'])
        .next()?
        .parse()
        .ok()
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRecord {
    /// Sequence number.
    pub id: i64,
    /// `logout`, `access` or `system`.
    pub kind: String,
    /// RFC 3339 UTC with milliseconds.
    pub received_at: String,
    /// accepted, duplicate or rejected (logout records).
    pub outcome: Option<String>,
    /// The HTTP status the request was answered with (logout records).
    pub http_status: Option<i64>,
    /// Rejection code.
    pub reason: Option<String>,
    /// Rejection detail.
    pub reason_detail: Option<String>,
    /// Issuer.
    pub iss: Option<String>,
    /// Subject.
    pub sub: Option<String>,
    /// Session id.
    pub sid: Option<String>,
    /// Token id.
    pub jti: Option<String>,
    /// Audiences.
    pub aud: Option<Vec<String>>,
    /// Issued at (seconds).
    pub iat: Option<i64>,
    /// Expiry (seconds).
    pub exp: Option<i64>,
    /// Header alg.
    pub alg: Option<String>,
    /// Header kid.
    pub kid: Option<String>,
    /// Header typ.
    pub typ: Option<String>,
    /// Session metadata as an object (or what was received, when invalid).
    pub session_metadata: Option<Value>,
    /// absent, ok or invalid (logout records).
    pub metadata_status: Option<String>,
    /// Why the metadata is invalid.
    pub metadata_error: Option<String>,
    /// Peer address.
    pub source_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// SHA-256 of the token, hex.
    pub token_sha256: Option<String>,
    /// The token's length in bytes (records of unverified requests, which keep no claims).
    pub token_bytes: Option<i64>,
    /// For duplicates, the original record's id.
    pub duplicate_of: Option<i64>,
    /// Whether the claims passed verification (logout records).
    pub claims_verified: Option<bool>,
    /// For a logout refused before its signature verified: what the token claimed (`iss`,
    /// `alg`, `kid`, `typ`), never believed, never in a claim field; otherwise null.
    pub unverified: Option<Value>,
    /// What an access or system record records.
    pub action: Option<String>,
    /// Details of an access or system record (a logout record's are shown as `unverified`
    /// and `token_bytes`).
    pub details: Option<Value>,
}

impl StoredRecord {
    /// Reads a row selected with the layout's record columns (`layout.rs`). A logout refused
    /// before its signature verified is presented as SQLite's NDJSON path presents it: no
    /// claims, its `details` as `unverified` and `token_bytes`.
    pub(super) fn from_row<R: Cells>(row: &R) -> Result<Self, StoreError> {
        let id = row.int_required("id")?;
        let corrupt = |message: String| StoreError::Corrupt { id, message };
        let json = |text: Option<&str>, what: &str| -> Result<Option<Value>, StoreError> {
            text.map(|t| serde_json::from_str(t).map_err(|e| corrupt(format!("{what}: {e}"))))
                .transpose()
        };
        let aud = match json(row.text("aud")?, "aud")? {
            Some(v) => Some(serde_json::from_value(v).map_err(|e| corrupt(format!("aud: {e}")))?),
            None => None,
        };
        let kind = row.string("kind")?.unwrap_or_default();
        let reason = row.string("reason")?;
        let record = Self {
            id,
            received_at: format_millis(row.int_required("received_at")?),
            outcome: row.string("outcome")?,
            http_status: row.int("http_status")?,
            reason_detail: row.string("reason_detail")?,
            iss: row.string("iss")?,
            sub: row.string("sub")?,
            sid: row.string("sid")?,
            jti: row.string("jti")?,
            aud,
            iat: row.int("iat")?,
            exp: row.int("exp")?,
            alg: row.string("alg")?,
            kid: row.string("kid")?,
            typ: row.string("typ")?,
            session_metadata: json(row.text("session_metadata")?, "session_metadata")?,
            metadata_status: row.string("metadata_status")?,
            metadata_error: row.string("metadata_error")?,
            source_ip: row.string("source_ip")?,
            user_agent: row.string("user_agent")?,
            token_sha256: row.blob("token_sha256")?.map(hex),
            token_bytes: None,
            duplicate_of: row.int("duplicate_of")?,
            // 0/1 on both databases' reads, as in the canonical encoding.
            claims_verified: row.int("claims_verified")?.map(|v| v != 0),
            unverified: None,
            action: row.string("action")?,
            details: json(row.text("details")?, "details")?,
            kind,
            reason,
        };
        Ok(if is_unverified(&record.kind, record.reason.as_deref()) {
            record.without_claims()
        } else {
            record
        })
    }

    /// A logout refused before its signature verified, as presented: the claim fields null,
    /// what the token said in `unverified` (from `details`, or, for a record from before
    /// migration 0003, from the claim columns it holds) and the token's length.
    fn without_claims(mut self) -> Self {
        let details = self.details.take();
        let member = |name: &str| {
            details
                .as_ref()
                .and_then(|d| d.get(name))
                .filter(|v| !v.is_null())
                .cloned()
        };
        self.token_bytes = member("token_bytes").and_then(|v| v.as_i64());
        let stored = member("unverified");
        let aud = self.aud.take();
        let session_metadata = self.session_metadata.take();
        let claims = [
            ("alg", self.alg.take().map(Value::from)),
            ("aud", aud.map(Value::from)),
            ("exp", self.exp.take().map(Value::from)),
            ("iat", self.iat.take().map(Value::from)),
            ("iss", self.iss.take().map(Value::from)),
            ("jti", self.jti.take().map(Value::from)),
            ("kid", self.kid.take().map(Value::from)),
            ("session_metadata", session_metadata),
            ("sid", self.sid.take().map(Value::from)),
            ("sub", self.sub.take().map(Value::from)),
            ("typ", self.typ.take().map(Value::from)),
        ];
        self.metadata_status = None;
        self.metadata_error = None;
        self.unverified = Some(stored.unwrap_or_else(|| {
            let legacy: Map<String, Value> = claims
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.unwrap_or(Value::Null)))
                .collect();
            Value::Object(legacy)
        }));
        self
    }
}
