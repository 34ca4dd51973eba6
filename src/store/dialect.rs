//! What really differs between the SQL of SQLite and PostgreSQL, in one place: how a time, a
//! boolean and a JSON member are read, which planner hints SQLite needs, how a plan is asked
//! for, and the two read paths SQLite takes faster (NDJSON built by the database, the
//! verifier's scan). The read queries themselves are written once, over any [`Dialect`]
//! (`read.rs`, `select.rs`); placeholders (`?` or `$n`) come from sqlx's query builder.

use std::future::Future;
use std::sync::LazyLock;

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Postgres, QueryBuilder, Sqlite, Type};

use super::cells::{self, Cells};
use super::layout::Layout;
use super::read;
use super::{ChainDigest, EventFilter, NdjsonPage, StoreError};

/// A page of chained rows as content digests; a row holding a value of the wrong type is an
/// `Err((id, why))`.
pub(super) type Digests = Vec<Result<ChainDigest, (i64, String)>>;

/// A value a query can bind on this database (sqlx encodes it).
pub(super) trait Bind<T>: Database {
    /// Appends `value` as the next bound parameter.
    fn bind_to(q: &mut QueryBuilder<Self>, value: T);
}

impl<D: Database, T> Bind<T> for D
where
    T: for<'t> Encode<'t, D> + Type<D>,
{
    fn bind_to(q: &mut QueryBuilder<Self>, value: T) {
        q.push_bind(value);
    }
}

/// `.arg(v)`: binds a value on any dialect (`push_bind` with the bounds written once).
pub(super) trait Arg<T> {
    /// Appends `value` as the next bound parameter.
    fn arg(&mut self, value: T) -> &mut Self;
}

impl<D: Bind<T>, T> Arg<T> for QueryBuilder<D> {
    fn arg(&mut self, value: T) -> &mut Self {
        D::bind_to(self, value);
        self
    }
}

/// A pool this database's queries can run on.
pub(super) trait OnPool: Database {
    /// The pool as an executor.
    fn on(pool: &Pool<Self>) -> impl Executor<'_, Database = Self>;
}

impl<D: Database> OnPool for D
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
{
    fn on(pool: &Pool<Self>) -> impl Executor<'_, Database = Self> {
        pool
    }
}

/// One database's SQL where it differs from the other's.
pub(super) trait Dialect:
    Database<Row: Cells, Arguments: IntoArguments<Self>>
    + OnPool
    + Bind<i64>
    + Bind<String>
    + Bind<Vec<u8>>
{
    /// Whether queries choose their driving index by hand (SQLite's planner, given no
    /// statistics, may pick another on a large table); PostgreSQL's planner chooses.
    const STEERED: bool;
    /// Put before a column to keep the planner off its index (SQLite's unary `+`).
    const SKIP_INDEX: &'static str;
    /// After `audit_events e` in a summary over a time window: read it from the time index,
    /// which holds every column such a summary needs (SQLite's `INDEXED BY`).
    const BY_TIME_INDEX: &'static str;
    /// The statement prefix that shows a query's plan, and the column holding each line.
    const EXPLAIN: (&'static str, usize);
    /// Sorts text as SQLite does (byte order), after a grouping expression.
    const BYTE_ORDER: &'static str;
    /// After an ascending `ORDER BY` key: NULLs first, as SQLite sorts.
    const NULLS_FIRST: &'static str;
    /// Names of the append-only triggers in place.
    const GUARDS: &'static str;

    /// A stored time column read as milliseconds since the epoch.
    fn millis(column: &str) -> String;
    /// Wraps a bound milliseconds parameter into the stored time type: `(before, after)`.
    const TIME_PARAM: (&'static str, &'static str);
    /// A condition true when a stored boolean column is true.
    fn is_true(column: &str) -> String;
    /// A stored boolean column read as 0/1 (the canonical encoding's integer).
    fn flag(column: &str) -> String;
    /// A window aggregate read as a 64-bit integer.
    fn int8(expr: &str) -> String;
    /// The UTC day (`YYYY-MM-DD`) of a stored time column.
    fn day(column: &str) -> String;
    /// Pushes a condition true when the record's valid session metadata has `key`.
    fn push_has_meta(q: &mut QueryBuilder<Self>, key: &str);
    /// Pushes `key`'s value in the record's valid session metadata (NULL when absent),
    /// guarded by `trusted`.
    fn push_meta_value(q: &mut QueryBuilder<Self>, key: &str, trusted: &str);
    /// The columns of `audit_events` as this database selects them.
    fn layout() -> &'static Layout;

    /// One page of records as NDJSON: by default the records read and serialised here.
    fn ndjson_page(
        pool: &Pool<Self>,
        f: &EventFilter,
    ) -> impl Future<Output = Result<NdjsonPage, StoreError>> + Send {
        read::serialised_page(pool, f)
    }

    /// Chained rows after `after` as content digests (the verifier's path): by default read
    /// through the pool and encoded here.
    fn chain_digests(
        pool: &Pool<Self>,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Digests, StoreError>> + Send {
        async move {
            let rows = read::chain_page(pool, after, limit).await?;
            let mut scratch = Vec::with_capacity(4096);
            Ok(rows
                .iter()
                .map(|row| cells::digest_row(row, &mut scratch))
                .collect())
        }
    }
}

impl Dialect for Sqlite {
    const STEERED: bool = true;
    const SKIP_INDEX: &'static str = "+";
    const BY_TIME_INDEX: &'static str = " INDEXED BY audit_events_received_at";
    const EXPLAIN: (&'static str, usize) = ("EXPLAIN QUERY PLAN ", 3);
    const BYTE_ORDER: &'static str = "";
    const NULLS_FIRST: &'static str = "";
    const GUARDS: &'static str =
        "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name";
    const TIME_PARAM: (&'static str, &'static str) = ("", "");

    fn millis(column: &str) -> String {
        column.to_owned()
    }
    fn is_true(column: &str) -> String {
        format!("{column} = 1")
    }
    fn flag(column: &str) -> String {
        column.to_owned()
    }
    fn int8(expr: &str) -> String {
        expr.to_owned()
    }
    fn day(column: &str) -> String {
        format!("strftime('%Y-%m-%d', {column} / 1000, 'unixepoch')")
    }
    fn push_has_meta(q: &mut QueryBuilder<Self>, key: &str) {
        q.push("e.metadata_status = 'ok' AND json_type(e.session_metadata, ")
            .arg(json_path(key))
            .push(") IS NOT NULL");
    }
    fn push_meta_value(q: &mut QueryBuilder<Self>, key: &str, trusted: &str) {
        q.push(format_args!(
            "CASE WHEN e.metadata_status = 'ok' AND {trusted} \
             THEN json_extract(e.session_metadata, "
        ))
        .arg(json_path(key))
        .push(") END");
    }
    fn layout() -> &'static Layout {
        static LAYOUT: LazyLock<Layout> = LazyLock::new(Layout::new::<Sqlite>);
        &LAYOUT
    }

    fn ndjson_page(
        pool: &Pool<Self>,
        f: &EventFilter,
    ) -> impl Future<Output = Result<NdjsonPage, StoreError>> + Send {
        super::sqlite::ndjson_page(pool, f)
    }

    fn chain_digests(
        pool: &Pool<Self>,
        after: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Digests, StoreError>> + Send {
        let path = pool.connect_options().get_filename().to_owned();
        super::sqlite::chain_digests_blocking(path, after, limit)
    }
}

impl Dialect for Postgres {
    const STEERED: bool = false;
    const SKIP_INDEX: &'static str = "";
    const BY_TIME_INDEX: &'static str = "";
    const EXPLAIN: (&'static str, usize) = ("EXPLAIN ", 0);
    const BYTE_ORDER: &'static str = " COLLATE \"C\"";
    const NULLS_FIRST: &'static str = " NULLS FIRST";
    const GUARDS: &'static str = "SELECT t.tgname::text FROM pg_trigger t \
         JOIN pg_class c ON c.oid = t.tgrelid \
         WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' \
         AND c.relname IN ('audit_events', 'checkpoints') AND pg_table_is_visible(c.oid) \
         ORDER BY 1";
    const TIME_PARAM: (&'static str, &'static str) = ("ll_ts(", ")");

    fn millis(column: &str) -> String {
        format!("ll_ms({column})")
    }
    fn is_true(column: &str) -> String {
        column.to_owned()
    }
    fn flag(column: &str) -> String {
        format!("{column}::int4::int8")
    }
    fn int8(expr: &str) -> String {
        format!("({expr})::int8")
    }
    fn day(column: &str) -> String {
        format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
    }
    fn push_has_meta(q: &mut QueryBuilder<Self>, key: &str) {
        q.push("jsonb_exists(e.metadata, ")
            .arg(key.to_owned())
            .push(")");
    }
    fn push_meta_value(q: &mut QueryBuilder<Self>, key: &str, trusted: &str) {
        q.push(format_args!("CASE WHEN {trusted} THEN e.metadata ->> "))
            .arg(key.to_owned())
            .push(" END");
    }
    fn layout() -> &'static Layout {
        static LAYOUT: LazyLock<Layout> = LazyLock::new(Layout::new::<Postgres>);
        &LAYOUT
    }
}

/// `$."KEY"`: SQLite's JSON path of a metadata key (keys are checked to be `[A-Za-z0-9_-]`).
fn json_path(key: &str) -> String {
    format!("$.\"{key}\"")
}
