//! The SQLite write path: one plain SQLite handle on the thread that writes (the writer's own
//! thread, or a CLI writer's), so every statement of a batch runs in place, with no hop to a
//! driver thread and back. A batch is `BEGIN IMMEDIATE` (SQLite's write lock, the chain lock)
//! through `COMMIT`; dropped before its commit, it rolls back.

use std::future::Future;
use std::ops::RangeInclusive;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use crate::keys::FetchedKeySet;
use crate::store::backend::{
    AcceptedSince, AcceptedToken, ArchivedKeySet, ChainOps, CheckpointRow, Leaves, WriteDb,
    older_through, parse_kids, purge_plan,
};
use crate::store::cells::hash32;
use crate::store::deliveries::{DeliveryOp, Statements, Val};
use crate::store::replay::ReplayWindow;
use crate::store::{PurgePlan, StoreError};
use crate::tlog::entry::{COLUMNS, EventRow, GENESIS};

/// The writer's page cache, in KiB (negative: a size, not a page count). Small on purpose:
/// pages it does not hold come from the operating system's cache, while SQLite sweeps its own
/// cache's hash table at the end of every write transaction, and that sweep grows with the
/// cache. Measured (docs/performance.md, issue 11): 2 MiB instead of 32 MiB gave 15% more
/// logouts per second on one core and half the resident memory.
const WRITER_CACHE_KIB: i64 = -2048;
/// WAL pages after which a commit checkpoints by itself: only a backstop, since the
/// checkpointer keeps the WAL far shorter off the writer's path.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16384;

/// The one-row `INSERT` of a chained row, built once (the statement cache is keyed by its text).
static INSERT_ROW: LazyLock<String> = LazyLock::new(|| {
    let placeholders: Vec<String> = (1..=COLUMNS.len() + 1).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO audit_events ({}, entry_hash) VALUES ({})",
        COLUMNS.join(", "),
        placeholders.join(", ")
    )
});

/// A write handle on a store that already exists (and is migrated).
#[derive(Debug)]
pub(in crate::store) struct SqliteChain(Connection);

impl SqliteChain {
    /// Opens the store for writing: WAL, every commit fsync'd (`synchronous = FULL`), waiting
    /// up to `busy` for another writer's lock.
    pub(in crate::store) fn open(path: &Path, busy: Duration) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!("no store at {}", path.display()).into(),
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(busy)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is fsync'd to the WAL before it returns, so an acknowledged record
        // survives a power loss, not only a process crash.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Self(conn))
    }

    /// Begins a batch holding SQLite's write lock.
    pub(in crate::store) fn begin(&mut self) -> Result<Batch<'_>, StoreError> {
        self.0.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Batch {
            chain: self,
            open: true,
        })
    }
}

/// A batch's transaction; rolls back when dropped before [`Batch::commit`].
#[derive(Debug)]
pub(in crate::store) struct Batch<'a> {
    chain: &'a mut SqliteChain,
    open: bool,
}

impl Batch<'_> {
    /// Commits (and fsyncs) the batch.
    pub(in crate::store) fn commit(mut self) -> Result<(), StoreError> {
        self.chain.0.execute_batch("COMMIT")?;
        // Only now: a failed COMMIT leaves the transaction open, and dropping rolls it back,
        // so the handle is clean for the next batch.
        self.open = false;
        Ok(())
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.chain.0.execute_batch("ROLLBACK");
        }
    }
}

impl Deref for Batch<'_> {
    type Target = SqliteChain;
    fn deref(&self) -> &SqliteChain {
        self.chain
    }
}

impl DerefMut for Batch<'_> {
    fn deref_mut(&mut self) -> &mut SqliteChain {
        self.chain
    }
}

/// The service's writer: the write handle, used only on the writer's thread.
#[derive(Debug)]
pub(in crate::store) struct Writer(pub(in crate::store) SqliteChain);

impl WriteDb for Writer {
    type Conn = SqliteChain;
    type Tx<'a> = Batch<'a>;

    async fn begin(&mut self) -> Result<Batch<'_>, StoreError> {
        self.0.begin()
    }

    async fn commit<'a>(tx: Self::Tx<'a>) -> Result<(), StoreError> {
        tx.commit()
    }
}

/// Runs SQLite write work to completion on a thread of its own (its calls block; the caller's
/// runtime keeps serving). For the CLI's writers and retention.
pub(in crate::store) async fn on_own_thread<F, Fut, T>(work: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, StoreError>>,
    T: Send + 'static,
{
    crate::store::own_thread("audit-sqlite", work)?
        .await
        .map_err(|_| StoreError::WriterGone)?
}

fn anchor_row(c: &Connection) -> Result<Option<(i64, [u8; 32])>, StoreError> {
    let row: Option<(i64, Vec<u8>)> = c
        .query_row(
            "SELECT first_id, prev_entry_hash FROM chain_anchor WHERE singleton = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(id, h)| Ok((id, hash32(id, &h)?))).transpose()
}

impl ChainOps for SqliteChain {
    async fn last_entry(&mut self) -> Result<(i64, [u8; 32]), StoreError> {
        let last: Option<(i64, Vec<u8>)> = self
            .0
            .prepare_cached("SELECT id, entry_hash FROM audit_events ORDER BY id DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((id, hash)) = last {
            return Ok((id, hash32(id, &hash)?));
        }
        Ok(match anchor_row(&self.0)? {
            Some((first, hash)) => (first - 1, hash),
            None => (0, GENESIS),
        })
    }

    async fn leaves(&mut self, ids: RangeInclusive<i64>, limit: u32) -> Result<Leaves, StoreError> {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, entry_hash FROM purged_hashes WHERE id BETWEEN ?1 AND ?2 \
             UNION ALL SELECT id, entry_hash FROM audit_events WHERE id BETWEEN ?1 AND ?2 \
             ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![ids.start(), ids.end(), i64::from(limit)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, hash) = row?;
            out.push((id, hash32(id, &hash)?));
        }
        Ok(out)
    }

    async fn accepted(&mut self, which: AcceptedSince) -> Result<Vec<AcceptedToken>, StoreError> {
        let (filter, args) = match which {
            AcceptedSince::Ids(ids) => ("id BETWEEN ?1 AND ?2", vec![*ids.start(), *ids.end()]),
            AcceptedSince::Within(span) => (
                "received_at >= (SELECT max(received_at) FROM audit_events) - ?1",
                vec![span],
            ),
        };
        let mut stmt = self.0.prepare_cached(&format!(
            "SELECT id, iss, jti, token_sha256, received_at FROM audit_events \
             WHERE {filter} AND outcome = 'accepted' AND kind = 'logout' ORDER BY id"
        ))?;
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            out.push(AcceptedToken {
                id,
                key: ReplayWindow::key(&r.get::<_, String>(1)?, &r.get::<_, String>(2)?),
                token_sha256: hash32(id, &r.get::<_, Vec<u8>>(3)?)?,
                received_at: r.get(4)?,
            });
        }
        Ok(out)
    }

    async fn insert_rows(&mut self, rows: &[(EventRow, [u8; 32])]) -> Result<(), StoreError> {
        let mut stmt = self.0.prepare_cached(&INSERT_ROW)?;
        for (r, hash) in rows {
            stmt.execute(params![
                r.id,
                r.kind,
                r.received_at,
                r.outcome,
                r.http_status,
                r.reason,
                r.reason_detail,
                r.iss,
                r.sub,
                r.sid,
                r.jti,
                r.aud,
                r.iat,
                r.exp,
                r.alg,
                r.kid,
                r.typ,
                r.events,
                r.session_metadata,
                r.metadata_status,
                r.metadata_error,
                r.source_ip,
                r.user_agent,
                r.token_sha256,
                r.token,
                r.key_set_digest,
                r.duplicate_of,
                r.claims_verified,
                r.action,
                r.details,
                &hash[..],
            ])?;
        }
        Ok(())
    }

    async fn insert_batch(
        &mut self,
        rows: &[(EventRow, [u8; 32])],
        pairs: &[(String, String, i64)],
    ) -> Result<(), StoreError> {
        self.insert_rows(rows).await?;
        let mut stmt = self.0.prepare_cached(
            "INSERT OR IGNORE INTO metadata_pairs (key, value, event_id) VALUES (?1, ?2, ?3)",
        )?;
        for (key, value, id) in pairs {
            stmt.execute(params![key, value, id])?;
        }
        Ok(())
    }

    async fn insert_checkpoint(&mut self, c: &CheckpointRow<'_>) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, note, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![c.size, &c.root[..], c.note, c.at],
        )?;
        Ok(())
    }

    async fn touch_key_set(&mut self, digest: &[u8; 32], seen_at: i64) -> Result<bool, StoreError> {
        let changed = self.0.execute(
            "UPDATE key_sets SET last_seen = MAX(last_seen, ?1) WHERE digest = ?2",
            params![seen_at, &digest[..]],
        )?;
        Ok(changed > 0)
    }

    async fn latest_key_set(&mut self, issuer: &str) -> Result<Option<ArchivedKeySet>, StoreError> {
        let row: Option<(Vec<u8>, String)> = self
            .0
            .query_row(
                "SELECT digest, kids FROM key_sets WHERE issuer = ?1 \
                 ORDER BY first_seen DESC, rowid DESC LIMIT 1",
                params![issuer],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(digest, kids)| Ok((hash32(0, &digest)?, parse_kids(&kids)?)))
            .transpose()
    }

    async fn insert_key_set(
        &mut self,
        set: &FetchedKeySet,
        seen_at: i64,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO key_sets (digest, issuer, jwks, kids, first_seen, last_seen) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![
                &set.digest[..],
                set.issuer,
                set.document,
                serde_json::Value::from(set.kids.clone()).to_string(),
                seen_at
            ],
        )?;
        Ok(())
    }

    async fn deliveries(&mut self, ops: &[DeliveryOp]) -> Result<Vec<u64>, StoreError> {
        // SQLite reads `$n` as a named parameter: each value is bound by its name.
        const NAMES: [&str; 11] = [
            "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11",
        ];
        static SQL: LazyLock<Statements> = LazyLock::new(Statements::sqlite);
        let mut changed = Vec::with_capacity(ops.len());
        for op in ops {
            let (sql, values) = SQL.plan(op);
            debug_assert!(values.len() <= NAMES.len());
            let mut stmt = self.0.prepare_cached(sql)?;
            for (name, value) in NAMES.iter().zip(&values) {
                let Some(i) = stmt.parameter_index(name)? else {
                    continue;
                };
                match value {
                    Val::Int(n) => stmt.raw_bind_parameter(i, n)?,
                    Val::Text(t) => stmt.raw_bind_parameter(i, t.as_str())?,
                    Val::NullInt | Val::NullText => {
                        stmt.raw_bind_parameter(i, rusqlite::types::Null)?;
                    }
                }
            }
            changed.push(stmt.raw_execute()? as u64);
        }
        Ok(changed)
    }

    async fn purge_plan(&mut self, before: i64) -> Result<PurgePlan, StoreError> {
        let (first, newer, last): (Option<i64>, Option<i64>, Option<i64>) = self.0.query_row(
            "SELECT (SELECT MIN(id) FROM audit_events), \
                    (SELECT MIN(id) FROM audit_events WHERE received_at >= ?1), \
                    (SELECT MAX(id) FROM audit_events)",
            params![before],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let older_through = older_through(newer, last);
        let through: Option<i64> = self.0.query_row(
            "SELECT MAX(tree_size) FROM checkpoints WHERE tree_size <= ?1",
            params![older_through],
            |r| r.get(0),
        )?;
        Ok(purge_plan(first, through))
    }

    async fn remove_through(&mut self, through: i64) -> Result<([u8; 32], u64), StoreError> {
        let c = &self.0;
        let hash: Vec<u8> = c.query_row(
            "SELECT entry_hash FROM audit_events WHERE id = ?1",
            params![through],
            |r| r.get(0),
        )?;
        let anchor = hash32(through, &hash)?;
        c.execute(
            "INSERT INTO purge_window (singleton, up_to_id) VALUES (1, ?1)",
            params![through],
        )?;
        c.execute(
            "INSERT OR IGNORE INTO purged_hashes (id, entry_hash) \
             SELECT id, entry_hash FROM audit_events WHERE id <= ?1",
            params![through],
        )?;
        c.execute(
            "DELETE FROM metadata_pairs WHERE event_id <= ?1",
            params![through],
        )?;
        let removed = c.execute("DELETE FROM audit_events WHERE id <= ?1", params![through])?;
        c.execute(
            "INSERT OR REPLACE INTO chain_anchor (singleton, first_id, prev_entry_hash) \
             VALUES (1, ?1, ?2)",
            params![through + 1, &anchor[..]],
        )?;
        c.execute("DELETE FROM purge_window", [])?;
        Ok((anchor, u64::try_from(removed).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::{Note, NoteKind};
    use crate::store::{backend::append_after_last, sqlite};

    #[tokio::test]
    async fn an_uncommitted_batch_rolls_back_and_the_handle_stays_usable() {
        let dir = std::env::temp_dir().join(format!("ll-write-{}", crate::util::random_id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("a.db");
        let (_writer, _reader) = sqlite::open(&path, Duration::from_secs(1))
            .await
            .expect("open");
        let note = Note {
            kind: NoteKind::System,
            action: "probe".into(),
            details: serde_json::json!({}),
            at: 1,
        };
        let mut chain = SqliteChain::open(&path, Duration::from_secs(1)).expect("chain");
        {
            let mut tx = chain.begin().expect("begin");
            assert_eq!(append_after_last(&mut *tx, &note).await.ok(), Some(1));
        } // dropped: rolled back
        let mut tx = chain.begin().expect("a new batch after the rollback");
        assert_eq!(tx.last_entry().await.ok().map(|e| e.0), Some(0));
        assert_eq!(append_after_last(&mut *tx, &note).await.ok(), Some(1));
        tx.commit().expect("commit");
        let mut again = SqliteChain::open(&path, Duration::from_secs(1)).expect("reopen");
        let mut tx = again.begin().expect("begin");
        assert_eq!(tx.last_entry().await.ok().map(|e| e.0), Some(1));
        drop(tx);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
