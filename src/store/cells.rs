//! Reading typed cells from either backend's rows, so the decoding of a chained row or a
//! presented record is written once. Each backend's SELECT hands back the same shapes: ids and
//! times as 64-bit integers (milliseconds since the epoch), booleans as 0/1, text and bytes
//! (`layout.rs`).

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{ChainDigest, ChainRow, StoreError, StoredCheckpoint};
use crate::tlog::entry::{
    COLUMNS, Cell, ColumnType, EventRow, LAYOUT, content_digest, encode_cell,
};

/// A column by position or by name.
#[derive(Debug, Clone, Copy)]
pub(super) enum Col<'a> {
    /// By position, from 0.
    At(usize),
    /// By name.
    Named(&'a str),
}

impl From<usize> for Col<'_> {
    fn from(i: usize) -> Self {
        Col::At(i)
    }
}

impl<'a> From<&'a str> for Col<'a> {
    fn from(name: &'a str) -> Self {
        Col::Named(name)
    }
}

/// Typed access to one row's cells, the same on SQLite and PostgreSQL.
pub(super) trait Cells: Row + Sized {
    /// A nullable 64-bit integer.
    fn int<'c>(&self, c: impl Into<Col<'c>>) -> Result<Option<i64>, sqlx::Error>;
    /// Nullable text, borrowed.
    fn text<'c>(&self, c: impl Into<Col<'c>>) -> Result<Option<&str>, sqlx::Error>;
    /// Nullable bytes, borrowed.
    fn blob<'c>(&self, c: impl Into<Col<'c>>) -> Result<Option<&[u8]>, sqlx::Error>;

    /// Nullable text, owned.
    fn string<'c>(&self, c: impl Into<Col<'c>>) -> Result<Option<String>, sqlx::Error> {
        Ok(self.text(c)?.map(str::to_owned))
    }

    /// A non-null 64-bit integer.
    fn int_required<'c>(&self, c: impl Into<Col<'c>>) -> Result<i64, sqlx::Error> {
        let c = c.into();
        self.int(c)?.ok_or_else(|| sqlx::Error::ColumnDecode {
            index: format!("{c:?}"),
            source: "unexpected NULL".into(),
        })
    }
}

/// Reads one cell of a concrete row type by position or name.
macro_rules! get {
    ($row:expr, $c:expr) => {
        match $c.into() {
            Col::At(i) => $row.try_get(i),
            Col::Named(n) => $row.try_get(n),
        }
    };
}

/// Implements [`Cells`] for a row type.
macro_rules! impl_cells {
    ($row:ty) => {
        impl Cells for $row {
            fn int<'c>(&self, c: impl Into<Col<'c>>) -> Result<Option<i64>, sqlx::Error> {
                get!(self, c)
            }
            fn text<'c>(&self, c: impl Into<Col<'c>>) -> Result<Option<&str>, sqlx::Error> {
                get!(self, c)
            }
            fn blob<'c>(&self, c: impl Into<Col<'c>>) -> Result<Option<&[u8]>, sqlx::Error> {
                get!(self, c)
            }
        }
    };
}

impl_cells!(SqliteRow);
impl_cells!(PgRow);

/// Decodes a chained row read as `LAYOUT` columns followed by `entry_hash`.
pub(super) fn chain_row<R: Cells>(row: &R) -> Result<ChainRow, StoreError> {
    let c = |i: usize| COLUMNS[i];
    let text = |i: usize| row.string(c(i));
    let event = EventRow {
        id: row.int_required(c(0))?,
        kind: text(1)?.unwrap_or_default(),
        received_at: row.int_required(c(2))?,
        outcome: text(3)?,
        http_status: row.int(c(4))?,
        reason: text(5)?,
        reason_detail: text(6)?,
        iss: text(7)?,
        sub: text(8)?,
        sid: text(9)?,
        jti: text(10)?,
        aud: text(11)?,
        iat: row.int(c(12))?,
        exp: row.int(c(13))?,
        alg: text(14)?,
        kid: text(15)?,
        typ: text(16)?,
        events: text(17)?,
        session_metadata: text(18)?,
        metadata_status: text(19)?,
        metadata_error: text(20)?,
        source_ip: text(21)?,
        user_agent: text(22)?,
        token_sha256: row.blob(c(23))?.map(<[u8]>::to_vec),
        token: text(24)?,
        key_set_digest: row.blob(c(25))?.map(<[u8]>::to_vec),
        duplicate_of: row.int(c(26))?,
        // An integer in the canonical layout (0/1), on both backends' chain reads.
        claims_verified: row.int(c(27))?.map(|v| v != 0),
        action: text(28)?,
        details: text(29)?,
    };
    // A hash of the wrong length is reported by the verifier, not refused here.
    let stored = row.blob("entry_hash")?.unwrap_or_default().to_vec();
    Ok(ChainRow {
        row: event,
        entry_hash: stored,
    })
}

/// Reduces a chained row (`LAYOUT` columns, then `entry_hash`) to its content digest, encoding
/// straight from the borrowed values. A value of the wrong type is an `Err((id, why))`.
pub(super) fn digest_row<R: Cells>(
    row: &R,
    scratch: &mut Vec<u8>,
) -> Result<ChainDigest, (i64, String)> {
    let id = row
        .int_required(0)
        .map_err(|e| (0, format!("unreadable id: {e}")))?;
    scratch.clear();
    for (i, (name, ty)) in LAYOUT.iter().enumerate() {
        let bad = |e: sqlx::Error| {
            (
                id,
                format!("column {name} holds a value of the wrong type ({e})"),
            )
        };
        let cell = match ty {
            ColumnType::Int => row.int(i).map_err(bad)?.map_or(Cell::Null, Cell::Int),
            ColumnType::Text => row.text(i).map_err(bad)?.map_or(Cell::Null, Cell::Text),
            ColumnType::Blob => row.blob(i).map_err(bad)?.map_or(Cell::Null, Cell::Blob),
        };
        encode_cell(scratch, cell);
    }
    let stored = row
        .blob(LAYOUT.len())
        .map_err(|e| (id, format!("unreadable entry hash: {e}")))?
        .unwrap_or_default()
        .to_vec();
    Ok(ChainDigest {
        id,
        stored,
        content: content_digest(scratch),
    })
}

/// Reads `(id, 32-byte hash)` from the first two columns.
pub(super) fn id_and_hash<R: Cells>(row: &R) -> Result<(i64, [u8; 32]), StoreError> {
    let id = row.int_required(0)?;
    Ok((id, hash32(id, row.blob(1)?.unwrap_or_default())?))
}

/// Reads a checkpoint selected as `tree_size, root_hash, note, created_at (ms)`.
pub(super) fn checkpoint_row<R: Cells>(row: &R) -> Result<StoredCheckpoint, StoreError> {
    let tree_size = row.int_required(0)?;
    Ok(StoredCheckpoint {
        tree_size,
        root: hash32(tree_size, row.blob(1)?.unwrap_or_default())?,
        note: row.string(2)?.unwrap_or_default(),
        created_at: row.int_required(3)?,
    })
}

/// A stored hash that must be 32 bytes.
pub(super) fn hash32(id: i64, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt {
        id,
        message: "hash is not 32 bytes".into(),
    })
}
