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

/// How a column is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// 64-bit integer (booleans are 0/1).
    Int,
    /// UTF-8 text.
    Text,
    /// Raw bytes.
    Blob,
}

/// The columns in canonical order with their types (also the INSERT and SELECT order).
pub const LAYOUT: [(&str, ColumnType); 30] = {
    use ColumnType::{Blob, Int, Text};
    [
        ("id", Int),
        ("kind", Text),
        ("received_at", Int),
        ("outcome", Text),
        ("http_status", Int),
        ("reason", Text),
        ("reason_detail", Text),
        ("iss", Text),
        ("sub", Text),
        ("sid", Text),
        ("jti", Text),
        ("aud", Text),
        ("iat", Int),
        ("exp", Int),
        ("alg", Text),
        ("kid", Text),
        ("typ", Text),
        ("events", Text),
        ("session_metadata", Text),
        ("metadata_status", Text),
        ("metadata_error", Text),
        ("source_ip", Text),
        ("user_agent", Text),
        ("token_sha256", Blob),
        ("token", Text),
        ("key_set_digest", Blob),
        ("duplicate_of", Int),
        ("claims_verified", Int),
        ("action", Text),
        ("details", Text),
    ]
};

/// The column names in canonical order.
pub const COLUMNS: [&str; 30] = {
    let mut names = [""; 30];
    let mut i = 0;
    while i < 30 {
        names[i] = LAYOUT[i].0;
        i += 1;
    }
    names
};

/// One column's value, borrowed, as the encoding sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// Appends one tagged value: `0x00` NULL; `0x01` + 8-byte big-endian integer; `0x02` + 4-byte
/// big-endian length + UTF-8; `0x03` + 4-byte big-endian length + bytes.
pub fn encode_cell(out: &mut Vec<u8>, cell: Cell<'_>) {
    let (tag, data) = match cell {
        Cell::Null => {
            out.push(0x00);
            return;
        }
        Cell::Int(v) => {
            out.push(0x01);
            out.extend_from_slice(&v.to_be_bytes());
            return;
        }
        Cell::Text(t) => (0x02, t.as_bytes()),
        Cell::Blob(b) => (0x03, b),
    };
    out.push(tag);
    // Lengths are bounded far below 4 GiB by the body cap and column limits.
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
}

/// SHA-256 over the domain prefix and an encoded record, still open for the previous hash.
pub fn content_digest(canonical: &[u8]) -> Context {
    let mut ctx = Context::new(&SHA256);
    ctx.update(DOMAIN);
    ctx.update(canonical);
    ctx
}

/// Closes a content digest with the previous entry hash: the entry hash.
pub fn finish(mut ctx: Context, prev: &[u8; 32]) -> [u8; 32] {
    ctx.update(prev);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn int(v: Option<i64>) -> Cell<'static> {
    v.map_or(Cell::Null, Cell::Int)
}

fn text(v: &Option<String>) -> Cell<'_> {
    v.as_deref().map_or(Cell::Null, Cell::Text)
}

fn blob(v: &Option<Vec<u8>>) -> Cell<'_> {
    v.as_deref().map_or(Cell::Null, Cell::Blob)
}

impl EventRow {
    /// The row's cells in canonical order (see [`LAYOUT`]).
    pub fn cells(&self) -> [Cell<'_>; 30] {
        [
            Cell::Int(self.id),
            Cell::Text(&self.kind),
            Cell::Int(self.received_at),
            text(&self.outcome),
            int(self.http_status),
            text(&self.reason),
            text(&self.reason_detail),
            text(&self.iss),
            text(&self.sub),
            text(&self.sid),
            text(&self.jti),
            text(&self.aud),
            int(self.iat),
            int(self.exp),
            text(&self.alg),
            text(&self.kid),
            text(&self.typ),
            text(&self.events),
            text(&self.session_metadata),
            text(&self.metadata_status),
            text(&self.metadata_error),
            text(&self.source_ip),
            text(&self.user_agent),
            blob(&self.token_sha256),
            text(&self.token),
            blob(&self.key_set_digest),
            int(self.duplicate_of),
            int(self.claims_verified.map(i64::from)),
            text(&self.action),
            text(&self.details),
        ]
    }

    /// Appends the canonical encoding: every cell of [`LAYOUT`] in order (docs/audit-format.md).
    pub fn encode(&self, out: &mut Vec<u8>) {
        for cell in self.cells() {
            encode_cell(out, cell);
        }
    }

    /// This row's entry hash given the previous one; `scratch` is reused between rows.
    pub fn entry_hash(&self, prev: &[u8; 32], scratch: &mut Vec<u8>) -> [u8; 32] {
        scratch.clear();
        self.encode(scratch);
        finish(content_digest(scratch), prev)
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
    fn cells_follow_the_layout_types() {
        let full = EventRow {
            outcome: Some("accepted".into()),
            http_status: Some(200),
            token_sha256: Some(vec![1; 32]),
            key_set_digest: Some(vec![2; 32]),
            iat: Some(1),
            exp: Some(2),
            duplicate_of: Some(3),
            claims_verified: Some(true),
            ..row()
        };
        for (cell, (name, ty)) in full.cells().iter().zip(LAYOUT) {
            let ok = matches!(
                (cell, ty),
                (Cell::Null, _)
                    | (Cell::Int(_), ColumnType::Int)
                    | (Cell::Text(_), ColumnType::Text)
                    | (Cell::Blob(_), ColumnType::Blob)
            );
            assert!(ok, "{name}: {cell:?} is not {ty:?}");
        }
        assert_eq!(COLUMNS[0], "id");
        assert_eq!(COLUMNS[29], "details");
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
