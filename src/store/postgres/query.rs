//! The read side on PostgreSQL: filtered pages, one record, session status, summaries, counts
//! and query plans, giving the same answers as the SQLite queries (ordering included: NULLs
//! first and byte order, as SQLite sorts).

use std::sync::LazyLock;

use sqlx::{Postgres, QueryBuilder, Row};

use super::Reader;
use crate::store::NdjsonPage;
use crate::store::StoreError;
use crate::store::filter::{EventFilter, Order};
use crate::store::record::{SELECT_COLUMNS, StoredRecord, TRUSTED};
use crate::store::report::{GroupBy, MAX_GROUPS, Summary, summary_from_rows};

/// The presented columns, times as milliseconds since the epoch.
static COLUMNS: LazyLock<String> = LazyLock::new(|| {
    SELECT_COLUMNS.replace("e.received_at,", "ll_ms(e.received_at) AS received_at,")
});

/// Pushes ` FROM ... WHERE ...` for `f` and returns the column holding the sequence number.
fn push_from_where(q: &mut QueryBuilder<Postgres>, f: &EventFilter) -> &'static str {
    let mut meta = f.meta.iter();
    let id_col = match meta.next() {
        Some((key, value)) => {
            q.push(
                " FROM metadata_pairs d JOIN audit_events e ON e.id = d.event_id WHERE d.key = ",
            )
            .push_bind(key.clone())
            .push(" AND d.value = ")
            .push_bind(value.clone());
            "d.event_id"
        }
        None => {
            q.push(" FROM audit_events e WHERE true");
            "e.id"
        }
    };
    if let Some(kind) = f.kind.code() {
        q.push(" AND e.kind = ").push_bind(kind);
    }
    let equal = [
        ("sid", &f.sid),
        ("sub", &f.sub),
        ("iss", &f.iss),
        ("jti", &f.jti),
        ("reason", &f.reason),
    ];
    for (column, value) in equal {
        if let Some(v) = value {
            q.push(format_args!(" AND e.{column} = "))
                .push_bind(v.clone());
        }
    }
    if let Some(o) = f.outcome {
        q.push(" AND e.outcome = ").push_bind(o.code());
    }
    if let Some(s) = f.metadata_status {
        q.push(" AND e.metadata_status = ").push_bind(s.code());
    }
    if f.verified {
        q.push(" AND e.claims_verified");
    }
    if let Some(since) = f.since {
        q.push(" AND e.received_at >= ll_ts(")
            .push_bind(since)
            .push(")");
    }
    if let Some(until) = f.until {
        q.push(" AND e.received_at < ll_ts(")
            .push_bind(until)
            .push(")");
    }
    let mut lower = f.id_range.map(|(lo, _)| lo);
    let mut upper = f.id_range.map(|(_, hi)| hi);
    match (f.after, f.order) {
        (Some(a), Order::Asc) => lower = lower.max(Some(a.saturating_add(1))),
        (Some(a), Order::Desc) => {
            let a = a.saturating_sub(1);
            upper = Some(upper.map_or(a, |u| u.min(a)));
        }
        (None, _) => {}
    }
    if let Some(lo) = lower {
        q.push(format_args!(" AND {id_col} >= ")).push_bind(lo);
    }
    if let Some(hi) = upper {
        q.push(format_args!(" AND {id_col} <= ")).push_bind(hi);
    }
    for (key, value) in meta {
        q.push(" AND EXISTS (SELECT 1 FROM metadata_pairs p WHERE p.key = ")
            .push_bind(key.clone())
            .push(" AND p.value = ")
            .push_bind(value.clone())
            .push(" AND p.event_id = e.id)");
    }
    for key in &f.has_meta {
        q.push(" AND jsonb_exists(e.metadata, ")
            .push_bind(key.clone())
            .push(")");
    }
    if f.filters_claims() {
        q.push(format_args!(" AND {}", *TRUSTED));
    }
    id_col
}

/// The page query for `f`: filtered, ordered by sequence number, at most `limit` rows.
fn page_query(prefix: &str, f: &EventFilter) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::<Postgres>::new(format!("{prefix}SELECT {}", *COLUMNS));
    let id_col = push_from_where(&mut q, f);
    q.push(format_args!(
        " ORDER BY {id_col} {}",
        f.order.code().to_uppercase()
    ));
    q.push(" LIMIT ").push_bind(i64::from(f.limit));
    q
}

/// The expression a summary groups by, in byte order (as SQLite compares text).
fn push_group_expr(q: &mut QueryBuilder<Postgres>, g: &GroupBy) {
    match g {
        GroupBy::Day => q.push("to_char(e.received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        GroupBy::Issuer => q.push(format_args!("(CASE WHEN {} THEN e.iss END)", *TRUSTED)),
        GroupBy::Outcome => q.push("e.outcome"),
        GroupBy::Reason => q.push("e.reason"),
        GroupBy::Meta(key) => q
            .push(format_args!("(CASE WHEN {} THEN e.metadata ->> ", *TRUSTED))
            .push_bind(key.clone())
            .push(" END)"),
    };
    q.push(" COLLATE \"C\"");
}

/// A session's first verified logout (`audit_events_sid`).
const SESSION_LOGOUT: &str = "SELECT id, ll_ms(received_at) FROM audit_events \
     WHERE sid = $1 AND iss = $2 AND kind = 'logout' AND claims_verified \
     ORDER BY id LIMIT 1";

/// A subject's first verified all-sessions logout since a time
/// (`audit_events_subject_logouts`, partial: verified logouts without `sid`).
const SUBJECT_LOGOUT: &str = "SELECT id, ll_ms(received_at) FROM audit_events \
     WHERE sub = $1 AND sid IS NULL AND claims_verified AND received_at >= ll_ts($2) \
     AND iss = $3 AND kind = 'logout' \
     ORDER BY received_at, id LIMIT 1";

impl Reader {
    /// Runs a filtered, ordered, limited query.
    pub(in crate::store) async fn query(
        &self,
        f: &EventFilter,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = page_query("", f).build().fetch_all(&self.pool).await?;
        rows.iter().map(StoredRecord::from_row).collect()
    }

    /// One page as NDJSON: the records serialised one a line.
    pub(in crate::store) async fn ndjson_page(
        &self,
        f: &EventFilter,
    ) -> Result<NdjsonPage, StoreError> {
        let records = self.query(f).await?;
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

    /// `EXPLAIN` of the page query for `f`: one line per plan line.
    pub(in crate::store) async fn query_plan(
        &self,
        f: &EventFilter,
    ) -> Result<Vec<String>, StoreError> {
        let rows = page_query("EXPLAIN ", f)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(Into::into))
            .collect()
    }

    /// How many records match `f` (its limit, order and cursor ignored).
    pub(in crate::store) async fn count(&self, f: &EventFilter) -> Result<i64, StoreError> {
        let unpaged = EventFilter {
            after: None,
            ..f.clone()
        };
        let mut q = QueryBuilder::<Postgres>::new("SELECT COUNT(*)");
        push_from_where(&mut q, &unpaged);
        Ok(q.build().fetch_one(&self.pool).await?.try_get(0)?)
    }

    /// The smallest and largest id of the records received in `f`'s time window.
    pub(in crate::store) async fn id_window(
        &self,
        f: &EventFilter,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(id), MAX(id) FROM audit_events \
             WHERE received_at >= ll_ts($1) AND received_at < ll_ts($2)",
        )
        .bind(f.since.unwrap_or(i64::MIN))
        .bind(f.until.unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await?;
        let (lo, hi): (Option<i64>, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        Ok(lo.zip(hi))
    }

    /// One record by id, with the stored token (accepted records only).
    pub(in crate::store) async fn event(
        &self,
        id: i64,
    ) -> Result<Option<(StoredRecord, Option<String>)>, StoreError> {
        let sql = format!(
            "SELECT {}, e.token FROM audit_events e WHERE e.id = $1",
            *COLUMNS
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some((StoredRecord::from_row(&row)?, row.try_get("token")?))),
            None => Ok(None),
        }
    }

    /// The first verified logout naming session `sid` of issuer `iss`: id and time.
    pub(in crate::store) async fn session_logout(
        &self,
        iss: &str,
        sid: &str,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query(SESSION_LOGOUT)
            .bind(sid)
            .bind(iss)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// The first verified logout of every session of `sub` (no `sid`) at or after `since`.
    pub(in crate::store) async fn subject_logout(
        &self,
        iss: &str,
        sub: &str,
        since: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query(SUBJECT_LOGOUT)
            .bind(sub)
            .bind(since)
            .bind(iss)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Plans of the two session-status queries.
    pub(in crate::store) async fn session_plans(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let session = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {SESSION_LOGOUT}")))
            .bind("x")
            .bind("x");
        let subject = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {SUBJECT_LOGOUT}")))
            .bind("x")
            .bind(0_i64)
            .bind("x");
        for q in [session, subject] {
            for row in q.fetch_all(&self.pool).await? {
                out.push(row.try_get::<String, _>(0)?);
            }
        }
        Ok(out)
    }

    /// Counts matching records per group (one or two dimensions).
    pub(in crate::store) async fn summary(
        &self,
        f: &EventFilter,
        group_by: &[GroupBy],
    ) -> Result<Summary, StoreError> {
        let mut q = QueryBuilder::<Postgres>::new("SELECT ");
        for (i, g) in group_by.iter().enumerate() {
            push_group_expr(&mut q, g);
            q.push(format_args!(" AS k{i}, "));
        }
        q.push("COUNT(*) AS n, (SUM(COUNT(*)) OVER ())::int8 AS total");
        let unpaged = EventFilter {
            after: None,
            ..f.clone()
        };
        push_from_where(&mut q, &unpaged);
        if !group_by.is_empty() {
            let keys: Vec<String> = (0..group_by.len()).map(|i| format!("k{i}")).collect();
            let order: Vec<String> = keys.iter().map(|k| format!("{k} NULLS FIRST")).collect();
            q.push(format_args!(
                " GROUP BY {} ORDER BY {}",
                keys.join(", "),
                order.join(", ")
            ));
        }
        q.push(" LIMIT ").push_bind(MAX_GROUPS as i64 + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        summary_from_rows(&rows, group_by)
    }
}
