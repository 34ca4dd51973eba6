//! Summaries: counts of matching records per day, issuer, outcome, reason or metadata value.

use std::str::FromStr;

use serde::Serialize;
use serde_json::{Map, Value};

use super::StoreError;
use super::cells::Cells;
use super::filter::parse_meta_key;

/// Most dimensions one summary groups by.
pub const MAX_GROUP_BY: usize = 2;
/// Most groups one summary returns (beyond it, `truncated` is set).
pub const MAX_GROUPS: usize = 10_000;

/// One dimension of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// The UTC day of `received_at`, `YYYY-MM-DD`.
    Day,
    /// `iss`.
    Issuer,
    /// accepted, duplicate or rejected.
    Outcome,
    /// The rejection code.
    Reason,
    /// The value of one session-metadata key (valid metadata only).
    Meta(String),
}

impl GroupBy {
    /// The dimension's name, as written in `group_by` and used as the key in each group.
    pub fn name(&self) -> String {
        match self {
            GroupBy::Day => "day".into(),
            GroupBy::Issuer => "issuer".into(),
            GroupBy::Outcome => "outcome".into(),
            GroupBy::Reason => "reason".into(),
            GroupBy::Meta(key) => format!("meta:{key}"),
        }
    }
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(GroupBy::Day),
            "issuer" => Ok(GroupBy::Issuer),
            "outcome" => Ok(GroupBy::Outcome),
            "reason" => Ok(GroupBy::Reason),
            other => match other.strip_prefix("meta:") {
                Some(key) => parse_meta_key(key).map(GroupBy::Meta),
                None => Err(format!(
                    "group_by must be day, issuer, outcome, reason or meta:KEY, not {other:?}"
                )),
            },
        }
    }
}

/// Counts per group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The groups, ordered by key.
    pub groups: Vec<SummaryGroup>,
    /// Matching records in all groups.
    pub total: i64,
    /// Whether there were more groups than returned.
    pub truncated: bool,
}

/// One group: its key (dimension name to value, `null` when the record has none) and count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryGroup {
    /// Dimension name to value.
    pub key: Map<String, Value>,
    /// Matching records.
    pub count: i64,
}

/// Reads a summary query's rows: group keys `k0, k1, ...`, the count `n` and the window total
/// `total`; one row more than [`MAX_GROUPS`] means truncated.
pub(super) fn summary_from_rows<R: Cells>(
    rows: &[R],
    group_by: &[GroupBy],
) -> Result<Summary, StoreError> {
    let mut summary = Summary::default();
    for row in rows {
        summary.total = row.int("total")?.unwrap_or(0);
        let mut key = Map::new();
        for (i, g) in group_by.iter().enumerate() {
            key.insert(g.name(), row.string(i)?.into());
        }
        summary.groups.push(SummaryGroup {
            key,
            count: row.int_required("n")?,
        });
    }
    summary.truncated = summary.groups.len() > MAX_GROUPS;
    summary.groups.truncate(MAX_GROUPS);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dimensions() {
        assert_eq!("day".parse::<GroupBy>(), Ok(GroupBy::Day));
        assert_eq!(
            "meta:org_id".parse::<GroupBy>(),
            Ok(GroupBy::Meta("org_id".into()))
        );
        assert!("meta:".parse::<GroupBy>().is_err());
        assert!("meta:a.b".parse::<GroupBy>().is_err());
        assert!("week".parse::<GroupBy>().is_err());
        assert_eq!(GroupBy::Meta("org_id".into()).name(), "meta:org_id");
    }
}
