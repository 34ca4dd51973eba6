//! The read side: filtered pages, one record, session status, summaries, counts and query
//! plans. Each filtered query picks the index that drives it ([`Driver`]) and keeps the planner
//! off the others with a unary `+`, so the plan is the same on ten rows and on ten million.

use sqlx::{QueryBuilder, Row, Sqlite};

use super::Reader;
use crate::store::NdjsonPage;
use crate::store::StoreError;
use crate::store::filter::{EventFilter, Order};
use crate::store::record::{JSON_OBJECT, SELECT_COLUMNS, StoredRecord, TRUSTED, line_id};
use crate::store::report::{GroupBy, MAX_GROUPS, Summary, summary_from_rows};

/// The access path of a filtered query, most selective first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// `audit_events_sid`: one session's records, in id order.
    Sid,
    /// `audit_events_sub`: one subject's records, in id order.
    Sub,
    /// `metadata_pairs` primary key: the records carrying one metadata pair, in id order.
    Meta,
    /// An id range: the window's first and last ids (from `audit_events_received_at`, covering),
    /// then the table in id order between them, the exact time filter applied to each row.
    Time,
    /// `audit_events_kind`: one kind, in id order.
    Kind,
    /// The table in id order.
    Id,
}

fn driver(f: &EventFilter) -> Driver {
    if f.sid.is_some() {
        Driver::Sid
    } else if f.sub.is_some() {
        Driver::Sub
    } else if !f.meta.is_empty() {
        Driver::Meta
    } else if f.since.is_some() || f.until.is_some() {
        Driver::Time
    } else if f.kind.code().is_some() {
        Driver::Kind
    } else {
        Driver::Id
    }
}

/// `$."KEY"`: the JSON path of a metadata key (keys are checked to be `[A-Za-z0-9_-]`).
fn json_path(key: &str) -> String {
    format!("$.\"{key}\"")
}

/// Pushes ` FROM ... WHERE ...` for `f` and returns the column holding the sequence number
/// in the driving index's order.
fn push_from_where(q: &mut QueryBuilder<Sqlite>, f: &EventFilter) -> &'static str {
    let d = driver(f);
    let mut meta = f.meta.iter();
    let id_col = match (d, meta.next()) {
        (Driver::Meta, Some((key, value))) => {
            q.push(
                " FROM metadata_pairs d JOIN audit_events e ON e.id = d.event_id WHERE d.key = ",
            )
            .push_bind(key.clone())
            .push(" AND d.value = ")
            .push_bind(value.clone());
            "d.event_id"
        }
        _ => {
            meta = f.meta.iter();
            q.push(" FROM audit_events e WHERE 1 = 1");
            "e.id"
        }
    };
    let plus = |drives: bool| if drives { "" } else { "+" };
    if let Some(kind) = f.kind.code() {
        q.push(format_args!(" AND {}e.kind = ", plus(d == Driver::Kind)))
            .push_bind(kind);
    }
    let indexed = [("sid", &f.sid, Driver::Sid), ("sub", &f.sub, Driver::Sub)];
    for (column, value, drives) in indexed {
        if let Some(v) = value {
            q.push(format_args!(" AND {}e.{column} = ", plus(d == drives)))
                .push_bind(v.clone());
        }
    }
    for (column, value) in [("iss", &f.iss), ("jti", &f.jti), ("reason", &f.reason)] {
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
        q.push(" AND e.claims_verified = 1");
    }
    let since = f.since.unwrap_or(i64::MIN);
    let until = f.until.unwrap_or(i64::MAX);
    if f.since.is_some() || f.until.is_some() {
        q.push(" AND +e.received_at >= ")
            .push_bind(since)
            .push(" AND +e.received_at < ")
            .push_bind(until);
    }
    push_id_bounds(q, f, d, id_col);
    for (key, value) in meta {
        q.push(" AND EXISTS (SELECT 1 FROM metadata_pairs p WHERE p.key = ")
            .push_bind(key.clone())
            .push(" AND p.value = ")
            .push_bind(value.clone())
            .push(" AND p.event_id = e.id)");
    }
    for key in &f.has_meta {
        q.push(" AND e.metadata_status = 'ok' AND json_type(e.session_metadata, ")
            .push_bind(json_path(key))
            .push(") IS NOT NULL");
    }
    if f.filters_claims() {
        q.push(format_args!(" AND {}", *TRUSTED));
    }
    id_col
}

/// The id of the last line if every line starts with `{"id":N,` and the ids run in `order`.
fn last_id_in_order(lines: &str, order: Order) -> Option<i64> {
    let mut last: Option<i64> = None;
    for line in lines.split('\n') {
        let id = line_id(line)?;
        let in_order = match (last, order) {
            (None, _) => true,
            (Some(prev), Order::Asc) => id > prev,
            (Some(prev), Order::Desc) => id < prev,
        };
        if !in_order {
            return None;
        }
        last = Some(id);
    }
    last
}

/// Pushes at most one lower and one upper bound on the sequence number: the cursor, the
/// export's id range and a time window's first and last ids, folded into one expression each.
/// (Given two lower bounds, SQLite seeks with one and filters with the other; the wrong one
/// makes every page rescan from the window's start.)
fn push_id_bounds(q: &mut QueryBuilder<Sqlite>, f: &EventFilter, d: Driver, id_col: &str) {
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
    // Exact: every record of a time window lies between the window's smallest and largest id.
    let window = d == Driver::Time && f.id_range.is_none();
    let bounds = [
        (lower, ">=", "max", "MIN", i64::MIN),
        (upper, "<=", "min", "MAX", i64::MAX),
    ];
    for (bound, op, fold, agg, unbounded) in bounds {
        match (window, bound) {
            (false, None) => {}
            (false, Some(b)) => {
                q.push(format_args!(" AND {id_col} {op} ")).push_bind(b);
            }
            (true, b) => {
                q.push(format_args!(" AND {id_col} {op} {fold}("))
                    .push_bind(b.unwrap_or(unbounded))
                    .push(format_args!(
                        ", (SELECT {agg}(id) FROM audit_events WHERE received_at >= "
                    ))
                    .push_bind(f.since.unwrap_or(i64::MIN))
                    .push(" AND received_at < ")
                    .push_bind(f.until.unwrap_or(i64::MAX))
                    .push("))");
            }
        }
    }
}

/// The page query for `f`: filtered, ordered by sequence number, at most `limit` rows.
fn page_query(prefix: &str, f: &EventFilter) -> QueryBuilder<Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("{prefix}SELECT {SELECT_COLUMNS}"));
    let id_col = push_from_where(&mut q, f);
    q.push(format_args!(
        " ORDER BY {id_col} {}",
        f.order.code().to_uppercase()
    ));
    q.push(" LIMIT ").push_bind(i64::from(f.limit));
    q
}

/// The expression a summary groups by.
fn push_group_expr(q: &mut QueryBuilder<Sqlite>, g: &GroupBy) {
    match g {
        GroupBy::Day => q.push("strftime('%Y-%m-%d', e.received_at / 1000, 'unixepoch')"),
        GroupBy::Issuer => q.push(format_args!("CASE WHEN {} THEN e.iss END", *TRUSTED)),
        GroupBy::Outcome => q.push("e.outcome"),
        GroupBy::Reason => q.push("e.reason"),
        GroupBy::Meta(key) => q
            .push(format_args!(
                "CASE WHEN e.metadata_status = 'ok' AND {} THEN json_extract(e.session_metadata, ",
                *TRUSTED
            ))
            .push_bind(json_path(key))
            .push(") END"),
    };
}

impl Reader {
    /// Runs a filtered, ordered, limited query.
    pub(in crate::store) async fn query(
        &self,
        f: &EventFilter,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let rows = page_query("", f).build().fetch_all(&self.pool).await?;
        rows.iter().map(StoredRecord::from_row).collect()
    }

    /// One page as NDJSON built by SQLite (see [`JSON_OBJECT`]): one value for the whole page.
    /// The lines are concatenated in the subquery's order, which is what SQLite does; the ids
    /// are checked, and should it ever not, the page is read again with the aggregate ordered
    /// explicitly (which costs a sort: about 40% of the export's time).
    pub(in crate::store) async fn ndjson_page(
        &self,
        f: &EventFilter,
    ) -> Result<NdjsonPage, StoreError> {
        let page = self.ndjson_concat(f, false).await?;
        if page.last_id.is_some() || page.count == 0 {
            return Ok(page);
        }
        self.ndjson_concat(f, true).await
    }

    /// The concatenated page; `last_id` is `None` when the lines are not in order.
    async fn ndjson_concat(&self, f: &EventFilter, sort: bool) -> Result<NdjsonPage, StoreError> {
        let dir = f.order.code().to_uppercase();
        let order = if sort {
            format!(" ORDER BY id {dir}")
        } else {
            String::new()
        };
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT count(*) AS n, group_concat(j, char(10){order}) AS lines \
             FROM (SELECT e.id AS id, {} AS j",
            *JSON_OBJECT
        ));
        let id_col = push_from_where(&mut q, f);
        q.push(format_args!(" ORDER BY {id_col} {dir} LIMIT "))
            .push_bind(i64::from(f.limit))
            .push(")");
        let row = q.build().fetch_one(&self.pool).await?;
        let count: i64 = row.try_get("n")?;
        let lines: String = row
            .try_get::<Option<String>, _>("lines")?
            .unwrap_or_default();
        Ok(NdjsonPage {
            last_id: last_id_in_order(&lines, f.order),
            lines,
            count: usize::try_from(count).unwrap_or(0),
        })
    }

    /// `EXPLAIN QUERY PLAN` of the page query for `f`: one line per plan step.
    pub(in crate::store) async fn query_plan(
        &self,
        f: &EventFilter,
    ) -> Result<Vec<String>, StoreError> {
        let rows = page_query("EXPLAIN QUERY PLAN ", f)
            .build()
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").map_err(Into::into))
            .collect()
    }

    /// How many records match `f` (its limit, order and cursor ignored).
    pub(in crate::store) async fn count(&self, f: &EventFilter) -> Result<i64, StoreError> {
        let unpaged = EventFilter {
            after: None,
            ..f.clone()
        };
        let mut q = QueryBuilder::<Sqlite>::new("SELECT COUNT(*)");
        push_from_where(&mut q, &unpaged);
        Ok(q.build().fetch_one(&self.pool).await?.try_get(0)?)
    }

    /// The smallest and largest id of the records received in `f`'s time window (all records
    /// when it has none); `None` when there are none. Every match of `f` lies between them.
    pub(in crate::store) async fn id_window(
        &self,
        f: &EventFilter,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(id), MAX(id) FROM audit_events WHERE received_at >= ? AND received_at < ?",
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
        let sql = format!("SELECT {SELECT_COLUMNS}, e.token FROM audit_events e WHERE e.id = ?");
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

    /// Plans of the two session-status queries, for tests of the indexes.
    pub(in crate::store) async fn session_plans(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for (sql, binds) in [(SESSION_LOGOUT, 2), (SUBJECT_LOGOUT, 3)] {
            let sql = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for _ in 0..binds {
                q = q.bind("x");
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(row.try_get::<String, _>("detail")?);
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
        let mut q = QueryBuilder::<Sqlite>::new("SELECT ");
        for (i, g) in group_by.iter().enumerate() {
            push_group_expr(&mut q, g);
            q.push(format_args!(" AS k{i}, "));
        }
        q.push("COUNT(*) AS n, SUM(COUNT(*)) OVER () AS total");
        let unpaged = EventFilter {
            after: None,
            ..f.clone()
        };
        push_from_where(&mut q, &unpaged);
        if !group_by.is_empty() {
            let keys: Vec<String> = (0..group_by.len()).map(|i| format!("k{i}")).collect();
            q.push(format_args!(" GROUP BY {0} ORDER BY {0}", keys.join(", ")));
        }
        q.push(" LIMIT ").push_bind(MAX_GROUPS as i64 + 1);
        let rows = q.build().fetch_all(&self.pool).await?;
        summary_from_rows(&rows, group_by)
    }
}

/// A session's first verified logout (`audit_events_sid`).
const SESSION_LOGOUT: &str = "SELECT id, received_at FROM audit_events \
     WHERE sid = ? AND +iss = ? AND +kind = 'logout' AND claims_verified = 1 \
     ORDER BY id LIMIT 1";

/// A subject's first verified all-sessions logout since a time
/// (`audit_events_subject_logouts`, partial: verified logouts without `sid`).
const SUBJECT_LOGOUT: &str = "SELECT id, received_at FROM audit_events \
     WHERE sub = ? AND sid IS NULL AND claims_verified = 1 AND received_at >= ? \
     AND +iss = ? AND +kind = 'logout' \
     ORDER BY received_at, id LIMIT 1";

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(f: &EventFilter) -> String {
        page_query("", f).sql().as_str().to_owned()
    }

    #[test]
    fn reads_the_last_id_only_of_lines_in_order() {
        let lines = "{\"id\":3,\"kind\":\"logout\"}\n{\"id\":7,\"kind\":\"access\"}";
        assert_eq!(last_id_in_order(lines, Order::Asc), Some(7));
        assert_eq!(last_id_in_order(lines, Order::Desc), None);
        assert_eq!(last_id_in_order("{\"id\":9,}", Order::Desc), Some(9));
        assert_eq!(last_id_in_order("", Order::Asc), None);
        assert_eq!(last_id_in_order("{\"kind\":1}", Order::Asc), None);
    }

    #[test]
    fn one_lower_and_one_upper_id_bound_whatever_the_cursor_and_window() {
        let window = EventFilter {
            since: Some(1),
            until: Some(2),
            after: Some(10),
            ..EventFilter::default()
        };
        let exported = EventFilter {
            id_range: Some((5, 50)),
            order: Order::Asc,
            ..window.clone()
        };
        for f in [window, exported] {
            let s = sql(&f);
            assert_eq!(s.matches("e.id >=").count(), 1, "{s}");
            assert_eq!(s.matches("e.id <=").count(), 1, "{s}");
            assert!(!s.contains("e.id < ") && !s.contains("e.id > "), "{s}");
        }
        let plain = sql(&EventFilter {
            sub: Some("s".into()),
            ..EventFilter::default()
        });
        assert!(
            !plain.contains("e.id >=") && !plain.contains("e.id <="),
            "{plain}"
        );
    }
}
