//! The columns of `audit_events` as each database stores them, derived from the canonical
//! layout (`chain::LAYOUT`): every SELECT of records or chained rows takes its column list from
//! here, so a new column is added to the layout once and read everywhere.

use super::chain::LAYOUT;
use super::dialect::Dialect;

/// How a column is stored where that is more than its canonical type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// As its canonical type.
    Plain,
    /// A time: integer milliseconds on SQLite, `timestamptz` on PostgreSQL.
    Time,
    /// A boolean: 0/1 on SQLite, `boolean` on PostgreSQL.
    Flag,
}

/// The columns stored as something other than their canonical type.
const STORED_AS: [(&str, Stored); 2] = [
    ("received_at", Stored::Time),
    ("claims_verified", Stored::Flag),
];

/// Chained columns a presented record leaves out (the token is read only for one record).
const NOT_PRESENTED: [&str; 3] = ["events", "token", "key_set_digest"];

/// How column `name` is stored.
pub(super) fn stored(name: &str) -> Stored {
    STORED_AS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(Stored::Plain, |(_, s)| *s)
}

/// One database's column lists, built once.
#[derive(Debug)]
pub(super) struct Layout {
    /// Every chained column in canonical order, then `entry_hash`: what the chain decoders read.
    pub(super) chain: String,
    /// The columns a [`super::StoredRecord`] presents.
    pub(super) record: String,
}

impl Layout {
    /// The column lists of dialect `D` (table alias `e`; times as milliseconds, booleans as 0/1).
    pub(super) fn new<D: Dialect>() -> Self {
        let select = |name: &str| {
            let column = format!("e.{name}");
            match stored(name) {
                Stored::Plain => column,
                Stored::Time => format!("{} AS {name}", D::millis(&column)),
                Stored::Flag => format!("{} AS {name}", D::flag(&column)),
            }
        };
        let names = || LAYOUT.iter().map(|(name, _)| *name);
        let chain: Vec<String> = names().map(select).collect();
        let record: Vec<String> = names()
            .filter(|n| !NOT_PRESENTED.contains(n))
            .map(select)
            .collect();
        Self {
            chain: format!("{}, e.entry_hash", chain.join(", ")),
            record: record.join(", "),
        }
    }
}
