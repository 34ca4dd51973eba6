//! The columns of `audit_events` as each database stores them, derived from the canonical
//! layout (`tlog::entry::LAYOUT`): every SELECT of records or chained rows takes its column list from
//! here, so a new column is added to the layout once and read everywhere.

use super::dialect::Dialect;
use crate::tlog::entry::LAYOUT;

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

#[cfg(test)]
mod tests {
    use sqlx::{Postgres, Sqlite};

    use super::*;

    #[test]
    fn every_chained_column_is_read_in_order_with_times_in_ms_and_flags_as_integers() {
        let pg = Layout::new::<Postgres>();
        let columns: Vec<&str> = pg.chain.split(", ").collect();
        assert_eq!(columns.len(), LAYOUT.len() + 1);
        assert_eq!(columns[2], "ll_ms(e.received_at) AS received_at");
        assert_eq!(
            columns[27],
            "e.claims_verified::int4::int8 AS claims_verified"
        );
        assert_eq!(columns[LAYOUT.len()], "e.entry_hash");
        let sqlite = Layout::new::<Sqlite>();
        assert!(
            sqlite
                .chain
                .starts_with("e.id, e.kind, e.received_at AS received_at, e.outcome")
        );
        let record: Vec<&str> = sqlite.record.split(", ").collect();
        for name in NOT_PRESENTED {
            assert!(!record.contains(&format!("e.{name}").as_str()), "{name}");
        }
        assert_eq!(
            sqlite.record.split(", ").count(),
            LAYOUT.len() - NOT_PRESENTED.len()
        );
    }
}
