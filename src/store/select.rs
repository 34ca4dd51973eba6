//! The filtered queries' SQL, written once for both databases: ` FROM ... WHERE ...` for an
//! [`EventFilter`], the page query and a summary's grouping expressions. On SQLite each query
//! picks the index that drives it ([`Driver`]) and keeps the planner off the others with a
//! unary `+`, so the plan is the same on ten rows and on ten million.

use sqlx::QueryBuilder;

use super::dialect::{Arg, Dialect};
use super::filter::{EventFilter, Order};
use super::record::TRUSTED;
use super::report::GroupBy;

/// The access path of a filtered query on SQLite, most selective first.
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

/// The driving index; a dialect that is not steered only joins the metadata pairs when asked.
fn driver<D: Dialect>(f: &EventFilter) -> Driver {
    if !D::STEERED {
        return if f.meta.is_empty() {
            Driver::Id
        } else {
            Driver::Meta
        };
    }
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

/// Pushes a bound time (milliseconds) as the stored time type.
pub(super) fn push_time<D: Dialect>(q: &mut QueryBuilder<D>, ms: i64) {
    let (open, close) = D::TIME_PARAM;
    q.push(open).arg(ms).push(close);
}

/// Pushes ` FROM ... WHERE ...` for `f` and returns the column holding the sequence number
/// in the driving index's order.
pub(super) fn push_from_where<D: Dialect>(
    q: &mut QueryBuilder<D>,
    f: &EventFilter,
) -> &'static str {
    let d = driver::<D>(f);
    let mut meta = f.meta.iter();
    let id_col = match (d, meta.next()) {
        (Driver::Meta, Some((key, value))) => {
            q.push(
                " FROM metadata_pairs d JOIN audit_events e ON e.id = d.event_id WHERE d.key = ",
            )
            .arg(key.clone())
            .push(" AND d.value = ")
            .arg(value.clone());
            "d.event_id"
        }
        _ => {
            meta = f.meta.iter();
            q.push(" FROM audit_events e WHERE 1 = 1");
            "e.id"
        }
    };
    let hint = |drives: Driver| if d == drives { "" } else { D::SKIP_INDEX };
    if let Some(kind) = f.kind.code() {
        q.push(format_args!(" AND {}e.kind = ", hint(Driver::Kind)))
            .arg(kind.to_owned());
    }
    let indexed = [("sid", &f.sid, Driver::Sid), ("sub", &f.sub, Driver::Sub)];
    for (column, value, drives) in indexed {
        if let Some(v) = value {
            q.push(format_args!(" AND {}e.{column} = ", hint(drives)))
                .arg(v.clone());
        }
    }
    let equal = [
        ("iss", &f.iss),
        ("jti", &f.jti),
        ("reason", &f.reason),
        ("outcome", &f.outcome.map(|o| o.code().to_owned())),
        (
            "metadata_status",
            &f.metadata_status.map(|s| s.code().to_owned()),
        ),
    ];
    for (column, value) in equal {
        if let Some(v) = value {
            q.push(format_args!(" AND e.{column} = ")).arg(v.clone());
        }
    }
    if f.verified {
        q.push(format_args!(" AND {}", D::is_true("e.claims_verified")));
    }
    let bounds = [(f.since, ">="), (f.until, "<")];
    for (bound, op) in bounds {
        if let Some(ms) = bound {
            q.push(format_args!(" AND {}e.received_at {op} ", D::SKIP_INDEX));
            push_time(q, ms);
        }
    }
    push_id_bounds(q, f, d == Driver::Time, id_col);
    for (key, value) in meta {
        q.push(" AND EXISTS (SELECT 1 FROM metadata_pairs p WHERE p.key = ")
            .arg(key.clone())
            .push(" AND p.value = ")
            .arg(value.clone())
            .push(" AND p.event_id = e.id)");
    }
    for key in &f.has_meta {
        q.push(" AND ");
        D::push_has_meta(q, key);
    }
    if f.filters_claims() {
        q.push(format_args!(" AND {}", *TRUSTED));
    }
    id_col
}

/// Whether a summary of `f` grouped by `group_by` can be read from the time index alone
/// (`audit_events_received_at` holds received_at, kind, outcome, reason and iss): no filter or
/// grouping on anything else, no cursor.
pub(super) fn summary_from_time_index(f: &EventFilter, group_by: &[GroupBy]) -> bool {
    let grouped = group_by.iter().all(|g| {
        matches!(
            g,
            GroupBy::Day | GroupBy::Issuer | GroupBy::Outcome | GroupBy::Reason
        )
    });
    grouped
        && f.sub.is_none()
        && f.sid.is_none()
        && f.jti.is_none()
        && f.meta.is_empty()
        && f.has_meta.is_empty()
        && f.metadata_status.is_none()
        && !f.verified
        && f.id_range.is_none()
}

/// Pushes ` FROM ... WHERE ...` for a summary [`summary_from_time_index`] accepts: the time
/// window on the time index, then its own columns.
pub(super) fn push_from_time_index<D: Dialect>(q: &mut QueryBuilder<D>, f: &EventFilter) {
    q.push(format_args!(
        " FROM audit_events e{} WHERE 1 = 1",
        D::BY_TIME_INDEX
    ));
    if let Some(ms) = f.since {
        q.push(" AND e.received_at >= ");
        push_time(q, ms);
    }
    if let Some(ms) = f.until {
        q.push(" AND e.received_at < ");
        push_time(q, ms);
    }
    if let Some(kind) = f.kind.code() {
        q.push(" AND e.kind = ").arg(kind.to_owned());
    }
    let equal = [
        ("iss", &f.iss),
        ("reason", &f.reason),
        ("outcome", &f.outcome.map(|o| o.code().to_owned())),
    ];
    for (column, value) in equal {
        if let Some(v) = value {
            q.push(format_args!(" AND e.{column} = ")).arg(v.clone());
        }
    }
    if f.filters_claims() {
        q.push(format_args!(" AND {}", *TRUSTED));
    }
}

/// Pushes at most one lower and one upper bound on the sequence number: the cursor, the
/// export's id range and (`by_time`) a time window's first and last ids, folded into one
/// expression each. (Given two lower bounds, SQLite seeks with one and filters with the other;
/// the wrong one makes every page rescan from the window's start.)
fn push_id_bounds<D: Dialect>(
    q: &mut QueryBuilder<D>,
    f: &EventFilter,
    by_time: bool,
    id_col: &str,
) {
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
    let window = by_time && f.id_range.is_none();
    let bounds = [
        (lower, ">=", "max", "MIN", i64::MIN),
        (upper, "<=", "min", "MAX", i64::MAX),
    ];
    for (bound, op, fold, agg, unbounded) in bounds {
        match (window, bound) {
            (false, None) => {}
            (false, Some(b)) => {
                q.push(format_args!(" AND {id_col} {op} ")).arg(b);
            }
            (true, b) => {
                q.push(format_args!(" AND {id_col} {op} {fold}("))
                    .arg(b.unwrap_or(unbounded))
                    .push(format_args!(
                        ", (SELECT {agg}(id) FROM audit_events WHERE received_at >= "
                    ));
                push_time(q, f.since.unwrap_or(i64::MIN));
                q.push(" AND received_at < ");
                push_time(q, f.until.unwrap_or(i64::MAX));
                q.push("))");
            }
        }
    }
}

/// The page query for `f`: filtered, ordered by sequence number, at most `limit` rows.
pub(super) fn page_query<D: Dialect>(prefix: &str, f: &EventFilter) -> QueryBuilder<D> {
    let mut q = QueryBuilder::<D>::new(format!("{prefix}SELECT {}", D::layout().record));
    let id_col = push_from_where(&mut q, f);
    q.push(format_args!(
        " ORDER BY {id_col} {}",
        f.order.code().to_uppercase()
    ));
    q.push(" LIMIT ").arg(i64::from(f.limit));
    q
}

/// Pushes the expression a summary groups by, compared in byte order (as SQLite compares text).
pub(super) fn push_group_expr<D: Dialect>(q: &mut QueryBuilder<D>, g: &GroupBy) {
    q.push("(");
    match g {
        GroupBy::Day => {
            q.push(D::day("e.received_at"));
        }
        GroupBy::Issuer => {
            q.push(format_args!("CASE WHEN {} THEN e.iss END", *TRUSTED));
        }
        GroupBy::Outcome => {
            q.push("e.outcome");
        }
        GroupBy::Reason => {
            q.push("e.reason");
        }
        GroupBy::Meta(key) => D::push_meta_value(q, key, &TRUSTED),
    }
    q.push(")").push(D::BYTE_ORDER);
}

#[cfg(test)]
mod tests {
    use sqlx::Sqlite;

    use super::*;

    #[test]
    fn the_overview_s_summaries_read_the_time_index_alone_and_others_do_not() {
        let window = EventFilter {
            since: Some(1),
            outcome: Some(crate::store::Outcome::Rejected),
            ..EventFilter::default()
        };
        let overview = [GroupBy::Day, GroupBy::Issuer];
        assert!(summary_from_time_index(&window, &overview));
        assert!(summary_from_time_index(&window, &[GroupBy::Reason]));
        assert!(!summary_from_time_index(
            &window,
            &[GroupBy::Meta("org_id".into())]
        ));
        let by_subject = EventFilter {
            sub: Some("auth0|alice".into()),
            ..window.clone()
        };
        assert!(!summary_from_time_index(&by_subject, &overview));
        let verified = EventFilter {
            verified: true,
            ..window
        };
        assert!(!summary_from_time_index(&verified, &overview));
        let mut q = QueryBuilder::<Sqlite>::new("SELECT 1");
        push_from_time_index(
            &mut q,
            &EventFilter {
                since: Some(1),
                ..EventFilter::default()
            },
        );
        assert!(
            q.sql()
                .as_str()
                .contains("INDEXED BY audit_events_received_at"),
            "{}",
            q.sql().as_str()
        );
    }

    fn sql(f: &EventFilter) -> String {
        page_query::<Sqlite>("", f).sql().as_str().to_owned()
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
