//! The read queries, written once for both databases over a [`Dialect`]: pages, one record,
//! session status, summaries, counts, plans and the chain reads.

use std::future::Future;

use sqlx::{Pool, QueryBuilder};

use super::cells::{self, Cells};
use super::deliveries::{self, Backlog, DeliveryFilter, DeliveryRow, DueDelivery};
use super::dialect::{Arg, Dialect, Digests};
use super::reader::{Answer, ReadDb};
use super::record::StoredRecord;
use super::report::{GroupBy, MAX_GROUPS, Summary, summary_from_rows};
use super::select::{
    page_query, push_from_time_index, push_from_where, push_group_expr, push_time,
    summary_from_time_index,
};
use super::{ChainRow, EventFilter, NdjsonPage, StoreError, StoredCheckpoint};

/// A pool of read connections on one database.
#[derive(Debug)]
pub(super) struct SqlReader<D: Dialect> {
    /// The connections.
    pub(super) pool: Pool<D>,
}

impl<D: Dialect> Clone for SqlReader<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

/// A query with a fixed text.
fn fixed<D: Dialect>(sql: &str) -> QueryBuilder<D> {
    QueryBuilder::new(sql)
}

/// Runs `q` and returns its rows.
async fn rows<D: Dialect>(
    pool: &Pool<D>,
    mut q: QueryBuilder<D>,
) -> Result<Vec<D::Row>, StoreError> {
    Ok(q.build().fetch_all(D::on(pool)).await?)
}

/// Runs `q` and returns its first row, if any.
async fn row<D: Dialect>(
    pool: &Pool<D>,
    mut q: QueryBuilder<D>,
) -> Result<Option<D::Row>, StoreError> {
    Ok(q.build().fetch_optional(D::on(pool)).await?)
}

/// Up to `limit` rows with id greater than `after` as the chain decoders read them.
pub(super) async fn chain_page<D: Dialect>(
    pool: &Pool<D>,
    after: i64,
    limit: u32,
) -> Result<Vec<D::Row>, StoreError> {
    let mut q = QueryBuilder::new(format!(
        "SELECT {} FROM audit_events e WHERE e.id > ",
        D::layout().chain
    ));
    q.arg(after)
        .push(" ORDER BY e.id LIMIT ")
        .arg(i64::from(limit));
    rows(pool, q).await
}

/// One page as NDJSON: the records read, then serialised one a line.
pub(super) async fn serialised_page<D: Dialect>(
    pool: &Pool<D>,
    f: &EventFilter,
) -> Result<NdjsonPage, StoreError> {
    let records = page(pool, f).await?;
    let mut lines = String::with_capacity(records.len() * 1024);
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            lines.push('\n');
        }
        let line = serde_json::to_string(r).map_err(|e| StoreError::Corrupt {
            id: r.id,
            message: format!("cannot serialise: {e}"),
        })?;
        lines.push_str(&line);
    }
    Ok(NdjsonPage {
        lines,
        count: records.len(),
        last_id: records.last().map(|r| r.id),
    })
}

/// A filtered, ordered, limited page of records.
async fn page<D: Dialect>(
    pool: &Pool<D>,
    f: &EventFilter,
) -> Result<Vec<StoredRecord>, StoreError> {
    let rows = rows(pool, page_query::<D>("", f)).await?;
    rows.iter().map(StoredRecord::from_row).collect()
}

/// The filter without its cursor (counts and summaries cover every page).
fn unpaged(f: &EventFilter) -> EventFilter {
    EventFilter {
        after: None,
        ..f.clone()
    }
}

/// `SELECT id, received_at (ms) FROM audit_events WHERE `: the session-status queries' head.
fn logout_head<D: Dialect>(prefix: &str) -> QueryBuilder<D> {
    QueryBuilder::new(format!(
        "{prefix}SELECT id, {} FROM audit_events WHERE ",
        D::millis("received_at")
    ))
}

/// A session's first verified logout (`audit_events_sid`).
fn session_logout_query<D: Dialect>(prefix: &str, iss: &str, sid: &str) -> QueryBuilder<D> {
    let hint = D::SKIP_INDEX;
    let mut q = logout_head::<D>(prefix);
    q.push("sid = ")
        .arg(sid.to_owned())
        .push(format_args!(" AND {hint}iss = "))
        .arg(iss.to_owned())
        .push(format_args!(
            " AND {hint}kind = 'logout' AND {} ORDER BY id LIMIT 1",
            D::is_true("claims_verified")
        ));
    q
}

/// A subject's first verified all-sessions logout since a time
/// (`audit_events_subject_logouts`, partial: verified logouts without `sid`).
fn subject_logout_query<D: Dialect>(
    prefix: &str,
    iss: &str,
    sub: &str,
    since: i64,
) -> QueryBuilder<D> {
    let hint = D::SKIP_INDEX;
    let mut q = logout_head::<D>(prefix);
    q.push("sub = ").arg(sub.to_owned()).push(format_args!(
        " AND sid IS NULL AND {} AND received_at >= ",
        D::is_true("claims_verified")
    ));
    push_time(&mut q, since);
    q.push(format_args!(" AND {hint}iss = "))
        .arg(iss.to_owned())
        .push(format_args!(
            " AND {hint}kind = 'logout' ORDER BY received_at, id LIMIT 1"
        ));
    q
}

/// Reads `(id, received_at)` from a session-status row.
fn id_and_time<R: Cells>(row: Option<R>) -> Result<Option<(i64, i64)>, StoreError> {
    row.map(|r| Ok((r.int_required(0)?, r.int_required(1)?)))
        .transpose()
}

/// The lines of a plan query.
async fn plan<D: Dialect>(pool: &Pool<D>, q: QueryBuilder<D>) -> Result<Vec<String>, StoreError> {
    let column = D::EXPLAIN.1;
    rows(pool, q)
        .await?
        .iter()
        .map(|r| Ok(r.string(column)?.unwrap_or_default()))
        .collect()
}

/// `(id, entry_hash)` rows with ids greater than `after` from `tables`, in id order, at most
/// `limit`.
async fn hashes<D: Dialect>(
    pool: &Pool<D>,
    tables: &[&str],
    after: i64,
    limit: u32,
) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
    let mut q = QueryBuilder::new("");
    for (i, table) in tables.iter().enumerate() {
        if i > 0 {
            q.push(" UNION ALL ");
        }
        q.push(format_args!(
            "SELECT id, entry_hash FROM {table} WHERE id > "
        ))
        .arg(after);
    }
    q.push(" ORDER BY id LIMIT ").arg(i64::from(limit));
    rows(pool, q)
        .await?
        .iter()
        .map(cells::id_and_hash)
        .collect()
}

impl<D: Dialect> ReadDb for SqlReader<D> {
    fn ping(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            row(&self.pool, fixed("SELECT 1 FROM audit_events LIMIT 1"))
                .await
                .is_ok()
        })
    }

    fn query<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, Vec<StoredRecord>> {
        Box::pin(page(&self.pool, f))
    }

    fn ndjson_page<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, NdjsonPage> {
        Box::pin(D::ndjson_page(&self.pool, f))
    }

    fn count<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, i64> {
        Box::pin(async move {
            let mut q = fixed("SELECT COUNT(*)");
            push_from_where(&mut q, &unpaged(f));
            let found = row(&self.pool, q).await?;
            Ok(found.map(|r| r.int(0)).transpose()?.flatten().unwrap_or(0))
        })
    }

    fn id_window<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, Option<(i64, i64)>> {
        Box::pin(async move {
            let mut q = fixed("SELECT MIN(id), MAX(id) FROM audit_events WHERE received_at >= ");
            push_time(&mut q, f.since.unwrap_or(i64::MIN));
            q.push(" AND received_at < ");
            push_time(&mut q, f.until.unwrap_or(i64::MAX));
            let Some(r) = row(&self.pool, q).await? else {
                return Ok(None);
            };
            Ok(r.int(0)?.zip(r.int(1)?))
        })
    }

    fn event(&self, id: i64) -> Answer<'_, Option<(StoredRecord, Option<String>)>> {
        Box::pin(async move {
            let mut q = QueryBuilder::new(format!(
                "SELECT {}, e.token FROM audit_events e WHERE e.id = ",
                D::layout().record
            ));
            q.arg(id);
            match row(&self.pool, q).await? {
                Some(r) => Ok(Some((StoredRecord::from_row(&r)?, r.string("token")?))),
                None => Ok(None),
            }
        })
    }

    fn session_logout<'a>(&'a self, iss: &'a str, sid: &'a str) -> Answer<'a, Option<(i64, i64)>> {
        Box::pin(
            async move { id_and_time(row(&self.pool, session_logout_query("", iss, sid)).await?) },
        )
    }

    fn subject_logout<'a>(
        &'a self,
        iss: &'a str,
        sub: &'a str,
        since: i64,
    ) -> Answer<'a, Option<(i64, i64)>> {
        Box::pin(async move {
            let q = subject_logout_query("", iss, sub, since);
            id_and_time(row(&self.pool, q).await?)
        })
    }

    fn summary<'a>(&'a self, f: &'a EventFilter, group_by: &'a [GroupBy]) -> Answer<'a, Summary> {
        Box::pin(async move {
            let mut q = fixed("SELECT ");
            for (i, g) in group_by.iter().enumerate() {
                push_group_expr(&mut q, g);
                q.push(format_args!(" AS k{i}, "));
            }
            let total = D::int8("SUM(COUNT(*)) OVER ()");
            q.push(format_args!("COUNT(*) AS n, {total} AS total"));
            if summary_from_time_index(f, group_by) {
                push_from_time_index(&mut q, f);
            } else {
                push_from_where(&mut q, &unpaged(f));
            }
            if !group_by.is_empty() {
                let keys: Vec<String> = (0..group_by.len()).map(|i| format!("k{i}")).collect();
                let order: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{k}{}", D::NULLS_FIRST))
                    .collect();
                q.push(format_args!(
                    " GROUP BY {} ORDER BY {}",
                    keys.join(", "),
                    order.join(", ")
                ));
            }
            q.push(" LIMIT ").arg(MAX_GROUPS as i64 + 1);
            summary_from_rows(&rows(&self.pool, q).await?, group_by)
        })
    }

    fn query_plan<'a>(&'a self, f: &'a EventFilter) -> Answer<'a, Vec<String>> {
        Box::pin(plan(&self.pool, page_query::<D>(D::EXPLAIN.0, f)))
    }

    fn session_plans(&self) -> Answer<'_, Vec<String>> {
        Box::pin(async move {
            let prefix = D::EXPLAIN.0;
            let mut out = plan(&self.pool, session_logout_query(prefix, "x", "x")).await?;
            let subject = subject_logout_query(prefix, "x", "x", 0);
            out.extend(plan(&self.pool, subject).await?);
            Ok(out)
        })
    }

    fn chain_rows(&self, after: i64, limit: u32) -> Answer<'_, Vec<ChainRow>> {
        Box::pin(async move {
            let rows = chain_page(&self.pool, after, limit).await?;
            rows.iter().map(cells::chain_row).collect()
        })
    }

    fn chain_digests(&self, after: i64, limit: u32) -> Answer<'_, Digests> {
        Box::pin(D::chain_digests(&self.pool, after, limit))
    }

    fn purged_hashes(&self, after: i64, limit: u32) -> Answer<'_, Vec<(i64, [u8; 32])>> {
        Box::pin(hashes(&self.pool, &["purged_hashes"], after, limit))
    }

    fn entry_hashes(&self, after: i64, limit: u32) -> Answer<'_, Vec<(i64, [u8; 32])>> {
        Box::pin(hashes(
            &self.pool,
            &["purged_hashes", "audit_events"],
            after,
            limit,
        ))
    }

    fn anchor(&self) -> Answer<'_, Option<(i64, [u8; 32])>> {
        Box::pin(async move {
            let q = fixed("SELECT first_id, prev_entry_hash FROM chain_anchor");
            row(&self.pool, q)
                .await?
                .map(|r| cells::id_and_hash(&r))
                .transpose()
        })
    }

    fn checkpoints(&self) -> Answer<'_, Vec<StoredCheckpoint>> {
        Box::pin(async move {
            let q = fixed(&format!(
                "SELECT tree_size, root_hash, note, {} FROM checkpoints ORDER BY tree_size",
                D::millis("created_at")
            ));
            rows(&self.pool, q)
                .await?
                .iter()
                .map(cells::checkpoint_row)
                .collect()
        })
    }

    fn guards(&self) -> Answer<'_, Vec<String>> {
        Box::pin(async move {
            rows(&self.pool, fixed(D::GUARDS))
                .await?
                .iter()
                .map(|r| Ok(r.string(0)?.unwrap_or_default()))
                .collect()
        })
    }

    fn deliveries<'a>(&'a self, f: &'a DeliveryFilter) -> Answer<'a, Vec<DeliveryRow>> {
        Box::pin(deliveries::list(&self.pool, f))
    }

    fn delivery_position<'a>(&'a self, target: &'a str) -> Answer<'a, Option<i64>> {
        Box::pin(deliveries::position(&self.pool, target))
    }

    fn due_deliveries<'a>(
        &'a self,
        target: &'a str,
        now: i64,
        limit: u32,
    ) -> Answer<'a, Vec<DueDelivery>> {
        Box::pin(deliveries::due(&self.pool, target, now, limit))
    }

    fn delivery_backlog<'a>(&'a self, target: &'a str) -> Answer<'a, Backlog> {
        Box::pin(deliveries::backlog(&self.pool, target))
    }

    fn key_set<'a>(&'a self, digest: &'a [u8]) -> Answer<'a, Option<(String, String)>> {
        Box::pin(async move {
            let mut q = fixed("SELECT issuer, jwks FROM key_sets WHERE digest = ");
            q.arg(digest.to_vec());
            match row(&self.pool, q).await? {
                Some(r) => Ok(Some((
                    r.string(0)?.unwrap_or_default(),
                    r.string(1)?.unwrap_or_default(),
                ))),
                None => Ok(None),
            }
        })
    }
}
