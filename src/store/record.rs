//! A stored record as the CLI and exports present it, with the documented field names.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use super::cells::Cells;
use crate::clock::format_millis;
use crate::keys::jwks::hex;

/// The columns read for a [`StoredRecord`], in order.
pub(super) const SELECT_COLUMNS: &str = "e.id, e.kind, e.action, e.details, e.received_at, e.outcome, e.reason, e.reason_detail, e.iss, e.sub, e.sid, \
     e.jti, e.aud, e.iat, e.exp, e.alg, e.kid, e.typ, e.session_metadata, e.metadata_status, e.metadata_error, \
     e.source_ip, e.user_agent, e.token_sha256, e.duplicate_of, e.claims_verified";

/// Each record as one JSON object built by SQLite: the fields, order and values of
/// [`StoredRecord`]'s serialization, for the NDJSON export's fast path (a page comes back as one
/// text value instead of 26 decoded columns per row). Tests hold the two to the same output.
pub(super) const JSON_OBJECT: &str = "json_object(\
     'id', e.id, 'kind', e.kind, \
     'received_at', strftime('%Y-%m-%dT%H:%M:%S', e.received_at / 1000, 'unixepoch') \
         || printf('.%03dZ', e.received_at % 1000), \
     'outcome', e.outcome, 'reason', e.reason, 'reason_detail', e.reason_detail, \
     'iss', e.iss, 'sub', e.sub, 'sid', e.sid, 'jti', e.jti, 'aud', json(e.aud), \
     'iat', e.iat, 'exp', e.exp, 'alg', e.alg, 'kid', e.kid, 'typ', e.typ, \
     'session_metadata', json(e.session_metadata), 'metadata_status', e.metadata_status, \
     'metadata_error', e.metadata_error, 'source_ip', e.source_ip, 'user_agent', e.user_agent, \
     'token_sha256', CASE WHEN e.token_sha256 IS NOT NULL THEN lower(hex(e.token_sha256)) END, \
     'duplicate_of', e.duplicate_of, \
     'claims_verified', CASE e.claims_verified WHEN 1 THEN json('true') WHEN 0 THEN json('false') END, \
     'action', e.action, 'details', json(e.details))";

/// The id at the start of a line of [`JSON_OBJECT`] output (`{"id":N,...`).
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
    /// For duplicates, the original record's id.
    pub duplicate_of: Option<i64>,
    /// Whether the claims passed verification (logout records).
    pub claims_verified: Option<bool>,
    /// What an access or system record records.
    pub action: Option<String>,
    /// Details of an access or system record.
    pub details: Option<Value>,
}

impl StoredRecord {
    /// Reads a row selected with [`SELECT_COLUMNS`].
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
        Ok(Self {
            id,
            kind: row.string("kind")?.unwrap_or_default(),
            received_at: format_millis(row.int_required("received_at")?),
            outcome: row.string("outcome")?,
            reason: row.string("reason")?,
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
            duplicate_of: row.int("duplicate_of")?,
            claims_verified: row.boolean("claims_verified")?,
            action: row.string("action")?,
            details: json(row.text("details")?, "details")?,
        })
    }
}
