//! `verify`: recompute every entry hash and the chain, and name each problem with the sequence
//! numbers involved: missing, altered, reordered, inserted, truncated. Keeps going after the
//! first problem; each break is reported once, then the check resynchronises on stored hashes.

use std::fmt;

use serde::Serialize;

use crate::store::chain::{EventRow, GENESIS};
use crate::store::{ChainRow, StoreError, StoreReader};

/// Rows read per query.
const PAGE: u32 = 20_000;
/// How far around a broken row the verifier looks for where its content belongs.
const WINDOW: usize = 16;

/// What kind of damage a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Sequence numbers absent from the store.
    Missing,
    /// A record whose content no longer matches its entry hash.
    Altered,
    /// A record stored at another position than the one it was written at.
    Reordered,
    /// A record that was never written by the chain.
    Inserted,
    /// The tail of the sequence is gone (checkpoints cover more than is stored).
    Truncated,
    /// A stored entry hash that is not 32 bytes.
    Malformed,
    /// An append-only trigger is missing.
    GuardMissing,
    /// A checkpoint's root or signature does not match.
    Checkpoint,
    /// A retention anchor that does not match the retention record.
    Anchor,
    /// A stored token that does not verify against its archived key set.
    Signature,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Its kind.
    pub kind: ProblemKind,
    /// The sequence numbers involved (first and last when a range).
    pub ids: Vec<i64>,
    /// What exactly is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        write!(f, "{kind}: {}", self.message)
    }
}

/// What the chain pass saw.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ChainReport {
    /// Records read.
    pub records: u64,
    /// First sequence number expected (1, or the retention anchor's).
    pub first_id: i64,
    /// Last sequence number seen.
    pub last_id: i64,
    /// Problems found.
    pub problems: Vec<Problem>,
}

fn stored_hash(r: &ChainRow) -> Option<[u8; 32]> {
    r.entry_hash.as_slice().try_into().ok()
}

/// Looks for the position (id, previous hash) under which `row`'s content reproduces its stored
/// hash, among the ids and stored hashes near it. `Some(id)` names where it was written.
fn written_at(row: &ChainRow, page: &[ChainRow], at: usize, scratch: &mut Vec<u8>) -> Option<i64> {
    let target = stored_hash(row)?;
    let lo = at.saturating_sub(WINDOW);
    let hi = (at + WINDOW).min(page.len());
    let mut prevs: Vec<[u8; 32]> = page[lo..hi].iter().filter_map(stored_hash).collect();
    prevs.push(GENESIS);
    let mut candidate: EventRow = row.row.clone();
    let base = row.row.id;
    for delta in 0..=(WINDOW as i64) {
        for id in [base - delta, base + delta] {
            candidate.id = id;
            if prevs
                .iter()
                .any(|p| candidate.entry_hash(p, scratch) == target)
            {
                return Some(id);
            }
            if delta == 0 {
                break;
            }
        }
    }
    None
}

/// Walks the whole chain, calling `leaf(id, stored_entry_hash)` for every stored record in order
/// (for the Merkle checks), and returns what it found.
pub async fn chain(
    reader: &StoreReader,
    mut leaf: impl FnMut(i64, [u8; 32]),
) -> Result<ChainReport, StoreError> {
    let anchor = reader.anchor().await?;
    let (first_id, mut prev) = anchor.unwrap_or((1, GENESIS));
    let mut report = ChainReport {
        first_id,
        last_id: first_id - 1,
        ..ChainReport::default()
    };
    let mut expected_id = first_id;
    let mut after = 0;
    let mut scratch = Vec::with_capacity(8192);
    loop {
        let page = reader.chain_rows(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.row.id;
        for (i, r) in page.iter().enumerate() {
            let id = r.row.id;
            report.records += 1;
            report.last_id = id;
            if id < expected_id {
                report.problems.push(Problem {
                    kind: ProblemKind::Inserted,
                    ids: vec![id],
                    message: format!("record {id} lies before the chain's start at {expected_id}"),
                });
                continue;
            }
            if id > expected_id {
                report.problems.push(Problem {
                    kind: ProblemKind::Missing,
                    ids: vec![expected_id, id - 1],
                    message: if id - 1 == expected_id {
                        format!("record {expected_id} is missing")
                    } else {
                        format!("records {expected_id} to {} are missing", id - 1)
                    },
                });
            }
            expected_id = id + 1;
            let Some(stored) = stored_hash(r) else {
                report.problems.push(Problem {
                    kind: ProblemKind::Malformed,
                    ids: vec![id],
                    message: format!("record {id} has a {}-byte entry hash", r.entry_hash.len()),
                });
                continue;
            };
            leaf(id, stored);
            if r.row.entry_hash(&prev, &mut scratch) == stored {
                prev = stored;
                continue;
            }
            report.problems.push(classify(r, &page, i, &mut scratch));
            prev = stored; // resynchronise: judge the next record against what is stored
        }
    }
    Ok(report)
}

fn classify(r: &ChainRow, page: &[ChainRow], at: usize, scratch: &mut Vec<u8>) -> Problem {
    let id = r.row.id;
    let next_links = page.get(at + 1).is_some_and(|n| {
        let mut probe = Vec::new();
        stored_hash(n).is_some_and(|h| {
            stored_hash(r).is_some_and(|mine| n.row.entry_hash(&mine, &mut probe) == h)
        })
    });
    match written_at(r, page, at, scratch) {
        Some(orig) if orig != id => Problem {
            kind: ProblemKind::Reordered,
            ids: vec![id, orig],
            message: format!("record at position {id} was written as record {orig}"),
        },
        Some(_) => Problem {
            kind: ProblemKind::Reordered,
            ids: vec![id - 1, id],
            message: format!(
                "record {id} does not follow record {}: the records before it were changed or reordered",
                id - 1
            ),
        },
        None if next_links || page.get(at + 1).is_none() => Problem {
            kind: ProblemKind::Altered,
            ids: vec![id],
            message: format!(
                "record {id} was altered: its content no longer matches its entry hash \
                 (or record {} was rewritten with a recomputed hash)",
                id - 1
            ),
        },
        None => Problem {
            kind: ProblemKind::Inserted,
            ids: vec![id],
            message: format!(
                "record {id} was not written by the chain (inserted, or altered with its hash recomputed)"
            ),
        },
    }
}

/// The triggers that make the store append-only.
pub const GUARDS: [&str; 4] = [
    "audit_events_no_delete",
    "audit_events_no_update",
    "checkpoints_no_delete",
    "checkpoints_no_update",
];

/// Reports each append-only trigger that is missing.
pub async fn guards(reader: &StoreReader) -> Result<Vec<Problem>, StoreError> {
    let present = reader.guards().await?;
    Ok(GUARDS
        .iter()
        .filter(|g| !present.iter().any(|p| p == *g))
        .map(|g| Problem {
            kind: ProblemKind::GuardMissing,
            ids: Vec::new(),
            message: format!("trigger {g} is missing: the store no longer refuses changes"),
        })
        .collect())
}
