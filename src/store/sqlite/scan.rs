//! The verifier's read path: the chain read through SQLite handles of its own on blocking
//! threads (no per-row channel hop or copy of the row's values), each row encoded
//! straight from the borrowed column values, and a page cut by id range into chunks that one
//! thread per core reads, encodes and content-hashes in turn.

use std::num::NonZero;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};

use crate::store::{ChainDigest, StoreError};
use crate::tlog::entry::{COLUMNS, Cell, ColumnType, LAYOUT, content_digest, encode_cell};

/// Ids per chunk: the unit of work a reading thread takes at a time.
const CHUNK: u32 = 1024;

/// One scanned row: its content digest, or why its values cannot be encoded.
pub(super) type Scanned = Result<ChainDigest, (i64, String)>;

/// The message sqlx gives for a value it refuses to decode as `T` (the verifier's reports name
/// it, and they read the same whichever driver read the row).
fn decode_error<T: ?Sized>(index: usize, sql_type: &str, found: &str) -> String {
    format!(
        "error occurred while decoding column {index}: mismatched types; Rust type `{}` \
         (as SQL type `{sql_type}`) is not compatible with SQL type `{found}`",
        std::any::type_name::<T>()
    )
}

/// The SQL type of a value, as sqlx names it in its messages.
fn type_name(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "INTEGER",
        ValueRef::Real(_) => "REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "BLOB",
    }
}

/// One column's value as the encoding sees it, with sqlx's type rules: integers only for
/// integer columns, text only for text columns, bytes or text for byte columns.
fn cell(index: usize, ty: ColumnType, v: ValueRef<'_>) -> Result<Cell<'_>, String> {
    match (ty, v) {
        (_, ValueRef::Null) => Ok(Cell::Null),
        (ColumnType::Int, ValueRef::Integer(i)) => Ok(Cell::Int(i)),
        (ColumnType::Int, other) => Err(decode_error::<Option<i64>>(
            index,
            "INTEGER",
            type_name(other),
        )),
        (ColumnType::Text, ValueRef::Text(t)) => std::str::from_utf8(t)
            .map(Cell::Text)
            .map_err(|e| format!("error occurred while decoding column {index}: {e}")),
        (ColumnType::Text, other) => Err(decode_error::<Option<&str>>(
            index,
            "TEXT",
            type_name(other),
        )),
        (ColumnType::Blob, ValueRef::Blob(b) | ValueRef::Text(b)) => Ok(Cell::Blob(b)),
        (ColumnType::Blob, other) => Err(decode_error::<Option<&[u8]>>(
            index,
            "BLOB",
            type_name(other),
        )),
    }
}

/// Appends a row's canonical encoding to `out`; returns its id and stored entry hash.
fn encode_row(row: &Row<'_>, out: &mut Vec<u8>) -> Result<(i64, Vec<u8>), (i64, String)> {
    let id = match row.get_ref(0) {
        Ok(ValueRef::Integer(id)) => id,
        Ok(other) => {
            let why = decode_error::<i64>(0, "INTEGER", type_name(other));
            return Err((0, format!("unreadable id: {why}")));
        }
        Err(e) => return Err((0, format!("unreadable id: {e}"))),
    };
    for (i, (name, ty)) in LAYOUT.iter().enumerate() {
        let value = row
            .get_ref(i)
            .map_err(|e| e.to_string())
            .and_then(|v| cell(i, *ty, v));
        match value {
            Ok(c) => encode_cell(out, c),
            Err(e) => {
                return Err((
                    id,
                    format!("column {name} holds a value of the wrong type ({e})"),
                ));
            }
        }
    }
    let at = LAYOUT.len();
    let stored = match row.get_ref(at) {
        Ok(ValueRef::Blob(b) | ValueRef::Text(b)) => b.to_vec(),
        Ok(ValueRef::Null) => Vec::new(),
        Ok(other) => {
            let why = decode_error::<Vec<u8>>(at, "BLOB", type_name(other));
            return Err((id, format!("unreadable entry hash: {why}")));
        }
        Err(e) => return Err((id, format!("unreadable entry hash: {e}"))),
    };
    Ok((id, stored))
}

/// Opens the store read-only on a handle of its own.
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// The SELECT of one chunk: the rows with `?1 < id <= ?2`, at most `?3`, in id order.
fn chunk_sql() -> String {
    format!(
        "SELECT {}, entry_hash FROM audit_events WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        COLUMNS.join(", ")
    )
}

/// Reads, encodes and content-hashes the chunks this thread takes from `next` until none is
/// left: `(chunk index, its rows)` for each.
fn read_chunks(
    path: &Path,
    next: &AtomicU32,
    chunk: impl Fn(u32) -> Option<(i64, i64, u32)>,
) -> rusqlite::Result<Vec<(u32, Vec<Scanned>)>> {
    let conn = open(path)?;
    let mut stmt = conn.prepare(&chunk_sql())?;
    let mut scratch = Vec::with_capacity(8192);
    let mut done = Vec::new();
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some((low, high, limit)) = chunk(k) else {
            return Ok(done);
        };
        let mut rows = stmt.query((low, high, i64::from(limit)))?;
        let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(1 << 16));
        while let Some(row) = rows.next()? {
            scratch.clear();
            out.push(
                encode_row(row, &mut scratch).map(|(id, stored)| ChainDigest {
                    id,
                    stored,
                    content: content_digest(&scratch),
                }),
            );
        }
        done.push((k, out));
    }
}

/// Up to `limit` rows with id greater than `after`, in id order, as content digests.
///
/// The page is cut by id into chunks that one thread per core takes in turn (each with its own
/// handle), so the cores stay evenly busy: chunk `k` holds the ids in `(after + k·c, after +
/// (k+1)·c]` (at most `c` rows, all of them read), the last one the first rows after that up to
/// the page's size. The chunks are consecutive, so their concatenation is every row after
/// `after` up to its last; where ids have gaps the page is shorter than `limit`, never missing
/// a row.
pub(super) fn chain_digests(path: &Path, after: i64, limit: u32) -> rusqlite::Result<Vec<Scanned>> {
    let chunks = (limit / CHUNK).max(1);
    let c = limit / chunks;
    let bound = |k: u32| after.saturating_add(i64::from(k * c));
    let chunk = |k: u32| match k.cmp(&(chunks - 1)) {
        std::cmp::Ordering::Less => Some((bound(k), bound(k + 1), c)),
        std::cmp::Ordering::Equal => Some((bound(k), i64::MAX, limit - k * c)),
        std::cmp::Ordering::Greater => None,
    };
    let cores = thread::available_parallelism().map_or(1, NonZero::get);
    let threads = u32::try_from(cores).unwrap_or(1).min(chunks);
    let next = AtomicU32::new(0);
    let read: Vec<_> = thread::scope(|s| {
        let others: Vec<_> = (1..threads)
            .map(|_| s.spawn(|| read_chunks(path, &next, chunk)))
            .collect();
        let mine = read_chunks(path, &next, chunk);
        let mut all: Vec<_> = others
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        all.push(mine);
        all
    });
    let mut parts = Vec::with_capacity(usize::try_from(chunks).unwrap_or(0));
    for r in read {
        parts.extend(r?);
    }
    parts.sort_unstable_by_key(|(k, _)| *k);
    let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0));
    for (_, rows) in parts {
        out.extend(rows);
    }
    Ok(out)
}

/// [`chain_digests`] on a blocking thread: the async side only waits for the finished page.
pub(in crate::store) async fn chain_digests_blocking(
    path: PathBuf,
    after: i64,
    limit: u32,
) -> Result<Vec<Scanned>, StoreError> {
    match tokio::task::spawn_blocking(move || chain_digests(&path, after, limit)).await {
        Ok(page) => Ok(page?),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only when the runtime shuts down under the scan.
            Err(_) => Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
                Some("the chain scan was cancelled".into()),
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::reader::ReadDb;
    use crate::tlog::entry::{GENESIS, finish};
    use sqlx::sqlite::SqliteRow;

    /// What the sqlx read path gives for a row (the reference the scan must reproduce).
    fn sqlx_digest(row: &SqliteRow, scratch: &mut Vec<u8>) -> Scanned {
        crate::store::cells::digest_row(row, scratch)
    }

    type Seen = Result<(i64, Vec<u8>, [u8; 32]), (i64, String)>;

    fn seen(d: Scanned) -> Seen {
        d.map(|d| (d.id, d.stored, finish(d.content, &GENESIS)))
    }

    #[tokio::test]
    async fn the_scan_reads_every_value_as_the_sqlx_path_did() -> Result<(), StoreError> {
        let dir = std::env::temp_dir().join(format!(
            "logout-ledger-scan-{}-{}",
            std::process::id(),
            crate::util::random_id()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("audit.db");
        let (_writer, reader) = super::super::open(&path, Duration::from_secs(5)).await?;
        let mut conn = {
            use sqlx::Connection;
            sqlx::SqliteConnection::connect_with(&super::super::options(&path)).await?
        };
        // Well-formed rows, then one odd value per row: a value of another type than its
        // column's (affinity keeps these), invalid UTF-8, text where bytes belong, a text hash.
        let hash = "x'".to_owned() + &"ab".repeat(32) + "'";
        let odd = [
            ("sub", "'auth0|user'".to_owned()),
            ("token_sha256", hash.clone()),
            ("http_status", "'abc'".to_owned()),
            ("iat", "1.5".to_owned()),
            ("sub", "x'ff00'".to_owned()),
            ("sid", "CAST(x'ff' AS TEXT)".to_owned()),
            ("token_sha256", "'text as bytes'".to_owned()),
            ("details", "''".to_owned()),
        ];
        let mut sql = String::new();
        for (i, (column, value)) in odd.iter().enumerate() {
            let id = i + 1;
            sql += &format!(
                "INSERT INTO audit_events (id, kind, received_at, {column}, entry_hash) \
                 VALUES ({id}, 'logout', 1764201600000, {value}, {hash});"
            );
        }
        let n = odd.len() + 1;
        sql += &format!(
            "INSERT INTO audit_events (id, kind, received_at, entry_hash) \
             VALUES ({n}, 'system', 1, '{}');",
            "h".repeat(32)
        );
        // Many plain rows, with a gap and a far outlier, so pages split across threads.
        sql += "WITH RECURSIVE k(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM k WHERE i < 4000) \
                INSERT INTO audit_events (id, kind, received_at, sub, entry_hash) \
                SELECT i, 'logout', i, 'user-' || i, randomblob(32) FROM k \
                WHERE i NOT BETWEEN 1500 AND 2100;";
        sql += &format!(
            "INSERT INTO audit_events (id, kind, received_at, entry_hash) \
             VALUES ({}, 'access', 2, {hash});",
            1_i64 << 40
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {}, entry_hash FROM audit_events WHERE id > ? ORDER BY id LIMIT ?",
            COLUMNS.join(", ")
        )))
        .bind(0)
        .bind(10_000)
        .fetch_all(&mut conn)
        .await?;
        let mut scratch = Vec::new();
        let expected: Vec<Seen> = rows
            .iter()
            .map(|r| seen(sqlx_digest(r, &mut scratch)))
            .collect();
        assert_eq!(expected.len(), n + 3991 - 601 + 1);
        assert!(expected.iter().filter(|e| e.is_err()).count() >= 4);
        // Every page size, split over threads or not, reads the same rows in the same order.
        for limit in [1, 3, 100, CHUNK, 2 * CHUNK + 1, 3 * CHUNK - 1, 20_000] {
            let mut got = Vec::new();
            let mut after = 0;
            loop {
                let page = reader.chain_digests(after, limit).await?;
                let Some(last) = page.last() else { break };
                after = match last {
                    Ok(d) => d.id,
                    Err((id, _)) => *id,
                };
                got.extend(page.into_iter().map(seen));
            }
            assert_eq!(got, expected, "pages of {limit}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
