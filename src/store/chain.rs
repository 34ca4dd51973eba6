//! The hash chain: one stored row in its canonical byte encoding, and its entry hash.
//!
//! `entry_hash(n) = SHA-256(DOMAIN || canonical(row n) || entry_hash(n-1))`. The encoding is a
//! fixed sequence of the row's columns, each as a tagged value (docs/audit-format.md), so an
//! independent program can recompute every hash from the database alone.

use aws_lc_rs::digest::{Context, SHA256};

/// Domain separation prefix of every entry hash.
pub const DOMAIN: &[u8] = b"logout-ledger:audit-entry:v1\n";

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// One stored audit row, column for column, in canonical order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRow {
    /// Sequence number.
    pub id: i64,
    /// `logout`, `access` or `system`.
    pub kind: String,
    /// Milliseconds since the epoch.
    pub received_at: i64,
    /// Logout outcome.
    pub outcome: Option<String>,
    /// HTTP status answered.
    pub http_status: Option<i64>,
    /// Rejection code.
    pub reason: Option<String>,
    /// Rejection detail.
    pub reason_detail: Option<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// `sub`.
    pub sub: Option<String>,
    /// `sid`.
    pub sid: Option<String>,
    /// `jti`.
    pub jti: Option<String>,
    /// `aud` as a JSON array.
    pub aud: Option<String>,
    /// `iat`.
    pub iat: Option<i64>,
    /// `exp`.
    pub exp: Option<i64>,
    /// Header `alg`.
    pub alg: Option<String>,
    /// Header `kid`.
    pub kid: Option<String>,
    /// Header `typ`.
    pub typ: Option<String>,
    /// `events` JSON.
    pub events: Option<String>,
    /// Session metadata JSON.
    pub session_metadata: Option<String>,
    /// `absent`, `ok` or `invalid`.
    pub metadata_status: Option<String>,
    /// Why the metadata is invalid.
    pub metadata_error: Option<String>,
    /// Peer address.
    pub source_ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// SHA-256 of the token.
    pub token_sha256: Option<Vec<u8>>,
    /// The token (accepted only).
    pub token: Option<String>,
    /// Digest of the key set that verified it.
    pub key_set_digest: Option<Vec<u8>>,
    /// Original record of a duplicate.
    pub duplicate_of: Option<i64>,
    /// Whether the claims were verified.
    pub claims_verified: Option<bool>,
    /// What an access or system record records.
    pub action: Option<String>,
    /// JSON details of an access or system record.
    pub details: Option<String>,
}

/// The column list in canonical order (also the INSERT and SELECT order).
pub const COLUMNS: [&str; 30] = [
    "id",
    "kind",
    "received_at",
    "outcome",
    "http_status",
    "reason",
    "reason_detail",
    "iss",
    "sub",
    "sid",
    "jti",
    "aud",
    "iat",
    "exp",
    "alg",
    "kid",
    "typ",
    "events",
    "session_metadata",
    "metadata_status",
    "metadata_error",
    "source_ip",
    "user_agent",
    "token_sha256",
    "token",
    "key_set_digest",
    "duplicate_of",
    "claims_verified",
    "action",
    "details",
];

fn null(out: &mut Vec<u8>) {
    out.push(0x00);
}

fn int(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => null(out),
        Some(v) => {
            out.push(0x01);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn bytes(out: &mut Vec<u8>, tag: u8, v: Option<&[u8]>) {
    match v {
        None => null(out),
        Some(v) => {
            out.push(tag);
            // Lengths are bounded far below 4 GiB by the body cap and column limits.
            out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

fn text(out: &mut Vec<u8>, v: Option<&str>) {
    bytes(out, 0x02, v.map(str::as_bytes));
}

fn blob(out: &mut Vec<u8>, v: Option<&[u8]>) {
    bytes(out, 0x03, v);
}

impl EventRow {
    /// Appends the canonical encoding: every column of [`COLUMNS`] in order, as a tagged value:
    /// `0x00` NULL; `0x01` + 8-byte big-endian integer; `0x02` + 4-byte big-endian length +
    /// UTF-8 text; `0x03` + 4-byte big-endian length + bytes. Booleans are integers 0/1.
    pub fn encode(&self, out: &mut Vec<u8>) {
        int(out, Some(self.id));
        text(out, Some(&self.kind));
        int(out, Some(self.received_at));
        text(out, self.outcome.as_deref());
        int(out, self.http_status);
        text(out, self.reason.as_deref());
        text(out, self.reason_detail.as_deref());
        text(out, self.iss.as_deref());
        text(out, self.sub.as_deref());
        text(out, self.sid.as_deref());
        text(out, self.jti.as_deref());
        text(out, self.aud.as_deref());
        int(out, self.iat);
        int(out, self.exp);
        text(out, self.alg.as_deref());
        text(out, self.kid.as_deref());
        text(out, self.typ.as_deref());
        text(out, self.events.as_deref());
        text(out, self.session_metadata.as_deref());
        text(out, self.metadata_status.as_deref());
        text(out, self.metadata_error.as_deref());
        text(out, self.source_ip.as_deref());
        text(out, self.user_agent.as_deref());
        blob(out, self.token_sha256.as_deref());
        text(out, self.token.as_deref());
        blob(out, self.key_set_digest.as_deref());
        int(out, self.duplicate_of);
        int(out, self.claims_verified.map(i64::from));
        text(out, self.action.as_deref());
        text(out, self.details.as_deref());
    }

    /// This row's entry hash given the previous one; `scratch` is reused between rows.
    pub fn entry_hash(&self, prev: &[u8; 32], scratch: &mut Vec<u8>) -> [u8; 32] {
        scratch.clear();
        self.encode(scratch);
        let mut ctx = Context::new(&SHA256);
        ctx.update(DOMAIN);
        ctx.update(scratch);
        ctx.update(prev);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> EventRow {
        EventRow {
            id: 1,
            kind: "system".into(),
            received_at: 1_764_201_600_000,
            action: Some("start".into()),
            details: Some("{}".into()),
            ..EventRow::default()
        }
    }

    #[test]
    fn encoding_is_tagged_and_fixed() {
        let mut out = Vec::new();
        row().encode(&mut out);
        let mut expected = vec![0x01, 0, 0, 0, 0, 0, 0, 0, 1];
        expected.extend_from_slice(&[0x02, 0, 0, 0, 6]);
        expected.extend_from_slice(b"system");
        expected.push(0x01);
        expected.extend_from_slice(&1_764_201_600_000i64.to_be_bytes());
        expected.extend(std::iter::repeat_n(0x00, 25));
        expected.extend_from_slice(&[0x02, 0, 0, 0, 5]);
        expected.extend_from_slice(b"start");
        expected.extend_from_slice(&[0x02, 0, 0, 0, 2]);
        expected.extend_from_slice(b"{}");
        assert_eq!(out, expected);
    }

    #[test]
    fn every_field_and_the_previous_hash_change_the_hash() {
        let mut s = Vec::new();
        let base = row().entry_hash(&GENESIS, &mut s);
        assert_ne!(base, row().entry_hash(&[1; 32], &mut s));
        let mut r = row();
        r.sub = Some(String::new());
        assert_ne!(
            base,
            r.entry_hash(&GENESIS, &mut s),
            "NULL and empty differ"
        );
        let mut r = row();
        r.claims_verified = Some(false);
        assert_ne!(base, r.entry_hash(&GENESIS, &mut s));
    }
}
