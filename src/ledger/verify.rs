//! `verify`: recompute every entry hash and the chain, and name each problem with the sequence
//! numbers involved: missing, altered, reordered, inserted, truncated. Keeps going after the
//! first problem; each break is reported once, then the check resynchronises on stored hashes.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::Algorithm;
use serde::Serialize;

use crate::keys::{KeyMatch, KeySet};
use crate::store::{ChainDigest, ChainRow, StoreError, StoreReader};
use crate::tlog::entry::{EventRow, GENESIS, finish};
use crate::tlog::merkle::{Accumulator, leaf_hash};
use crate::tlog::{Checkpoint, NoteVerifier};
use crate::util::hex;

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
/// (for the Merkle checks), and returns what it found. Each page is checked while the next one
/// is read.
pub async fn chain(
    reader: &StoreReader,
    mut leaf: impl FnMut(i64, [u8; 32]),
) -> Result<ChainReport, StoreError> {
    let anchor = reader.anchor().await?;
    let (first_id, prev) = anchor.unwrap_or((1, GENESIS));
    let mut walk = Walk {
        report: ChainReport {
            first_id,
            last_id: first_id - 1,
            ..ChainReport::default()
        },
        expected_id: first_id,
        prev,
        last_failed: None,
        scratch: Vec::with_capacity(8192),
    };
    let mut page = reader.chain_digests(0, PAGE).await?;
    while let Some(last) = page.last() {
        let after = match last {
            Ok(d) => d.id,
            Err((id, _)) => *id,
        };
        let (next, checked) = tokio::join!(
            reader.chain_digests(after, PAGE),
            walk.page(reader, page, &mut leaf)
        );
        checked?;
        page = next?;
    }
    Ok(walk.report)
}

/// Where the chain check stands between pages.
struct Walk {
    report: ChainReport,
    expected_id: i64,
    /// The entry hash the next record must chain to (the last good stored one).
    prev: [u8; 32],
    /// The last record whose hash did not follow.
    last_failed: Option<i64>,
    scratch: Vec<u8>,
}

impl Walk {
    /// Checks one page of records, in id order.
    async fn page(
        &mut self,
        reader: &StoreReader,
        page: Vec<Result<ChainDigest, (i64, String)>>,
        leaf: &mut impl FnMut(i64, [u8; 32]),
    ) -> Result<(), StoreError> {
        let report = &mut self.report;
        for entry in page {
            let d = match entry {
                Ok(d) => d,
                Err((id, why)) => {
                    report.records += 1;
                    self.expected_id = self.expected_id.max(id + 1);
                    report.problems.push(Problem {
                        kind: ProblemKind::Malformed,
                        ids: vec![id],
                        message: format!("record {id}: {why}"),
                    });
                    continue;
                }
            };
            let id = d.id;
            let expected_id = self.expected_id;
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
            self.expected_id = id + 1;
            let Ok(stored) = <[u8; 32]>::try_from(d.stored.as_slice()) else {
                report.problems.push(Problem {
                    kind: ProblemKind::Malformed,
                    ids: vec![id],
                    message: format!("record {id} has a {}-byte entry hash", d.stored.len()),
                });
                continue;
            };
            leaf(id, stored);
            if finish(d.content, &self.prev) == stored {
                self.prev = stored;
                continue;
            }
            let previous_failed = self.last_failed == Some(id - 1);
            self.last_failed = Some(id);
            // Rare: read the full rows around the break to name it.
            let window = reader
                .chain_rows(id - 1 - WINDOW as i64, 2 * WINDOW as u32 + 1)
                .await?;
            if let Some(at) = window.iter().position(|r| r.row.id == id)
                && let Some(p) = classify(&window, at, previous_failed, &mut self.scratch)
            {
                push_folded(&mut report.problems, p);
            }
            self.prev = stored; // resynchronise: judge the next record against what is stored
        }
        Ok(())
    }
}

/// Names what is wrong with row `at`, whose stored hash does not follow from its content and
/// the stored hash before it. `None` when the break was already reported with the row before.
fn classify(
    page: &[ChainRow],
    at: usize,
    previous_failed: bool,
    scratch: &mut Vec<u8>,
) -> Option<Problem> {
    let r = &page[at];
    let id = r.row.id;
    let next = page.get(at + 1);
    let next_links = next.is_some_and(|n| {
        let mut probe = Vec::new();
        stored_hash(n).is_some_and(|h| {
            stored_hash(r).is_some_and(|mine| n.row.entry_hash(&mine, &mut probe) == h)
        })
    });
    match written_at(r, page, at, scratch) {
        Some(orig) if orig != id => Some(Problem {
            kind: ProblemKind::Reordered,
            ids: vec![id, orig],
            message: format!("record at position {id} was written as record {orig}"),
        }),
        // Its own content, chained to a hash now stored elsewhere: the break before it.
        Some(_) if previous_failed => None,
        Some(_) => Some(Problem {
            kind: ProblemKind::Reordered,
            ids: vec![id - 1, id],
            message: format!(
                "record {id} does not follow record {}: the records before it were changed or reordered",
                id - 1
            ),
        }),
        None if next
            .is_some_and(|n| written_at(n, page, at + 1, scratch) == Some(n.row.id - 1)) =>
        {
            Some(Problem {
                kind: ProblemKind::Inserted,
                ids: vec![id],
                message: format!(
                    "record {id} was inserted: the records after it were moved up by one"
                ),
            })
        }
        None if next_links || next.is_none() => Some(Problem {
            kind: ProblemKind::Altered,
            ids: vec![id],
            message: format!(
                "record {id} was altered: its content no longer matches its entry hash \
                 (or record {} was rewritten with a recomputed hash)",
                id - 1
            ),
        }),
        None => Some(Problem {
            kind: ProblemKind::Inserted,
            ids: vec![id],
            message: format!(
                "record {id} was not written by the chain (inserted, or altered with its hash recomputed)"
            ),
        }),
    }
}

/// Adds a problem, folding a run of records all moved by the same offset into one.
fn push_folded(problems: &mut Vec<Problem>, p: Problem) {
    if let (ProblemKind::Reordered, [pos, orig]) = (p.kind, p.ids.as_slice())
        && let Some(last) = problems.last_mut()
        && last.kind == ProblemKind::Reordered
        && let [first_pos, first_orig, rest @ ..] = last.ids.as_slice()
    {
        let end = rest.first().copied().unwrap_or(*first_pos);
        if pos - orig == first_pos - first_orig && *pos == end + 1 && pos - orig != 0 {
            let (fp, fo) = (*first_pos, *first_orig);
            last.ids = vec![fp, fo, *pos];
            last.message = format!(
                "records at positions {fp} to {pos} were written {} position(s) earlier (moved)",
                pos - orig
            );
            return;
        }
    }
    problems.push(p);
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

/// A checkpoint to hold the store against: stored in it, or given from outside.
#[derive(Debug, Clone)]
struct Target {
    label: String,
    size: u64,
    root: [u8; 32],
}

/// What `verify` checks besides the chain.
#[derive(Debug, Default)]
pub struct Options {
    /// The log's public key; without it stored checkpoints are checked for roots only.
    pub key: Option<NoteVerifier>,
    /// Checkpoints kept outside the store: (where from, signed note).
    pub external: Vec<(String, String)>,
    /// Re-verify every accepted token against its archived key set.
    pub signatures: bool,
}

/// Everything `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The chain pass.
    pub chain: ChainReport,
    /// Checkpoints held against the store (stored and external).
    pub checkpoints_checked: usize,
    /// Accepted tokens re-verified.
    pub signatures_checked: u64,
    /// Accepted tokens that could not be re-verified offline (HS256 needs the client secret).
    pub signatures_skipped: u64,
    /// Every problem, chain problems included.
    pub problems: Vec<Problem>,
}

fn checkpoint_problem(ids: Vec<i64>, message: String) -> Problem {
    Problem {
        kind: ProblemKind::Checkpoint,
        ids,
        message,
    }
}

/// Reads a signed note's checkpoint: verified with `key` when given, else parsed only.
fn read_checkpoint(note: &str, key: Option<&NoteVerifier>) -> Result<Checkpoint, String> {
    match key {
        Some(k) => k
            .verify_checkpoint(note)
            .map_err(|e| format!("signature does not verify: {e}")),
        None => {
            let body = note.split_once("\n\n").map_or(note, |(b, _)| b);
            Checkpoint::parse(&format!("{body}\n")).map_err(|e| e.to_string())
        }
    }
}

async fn targets(
    reader: &StoreReader,
    opts: &Options,
    problems: &mut Vec<Problem>,
) -> Result<Vec<Target>, StoreError> {
    let mut out = Vec::new();
    for stored in reader.checkpoints().await? {
        let label = format!("stored checkpoint {}", stored.tree_size);
        match read_checkpoint(&stored.note, opts.key.as_ref()) {
            Err(e) => problems.push(checkpoint_problem(
                vec![stored.tree_size],
                format!("{label}: {e}"),
            )),
            Ok(cp)
                if i64::try_from(cp.size).ok() != Some(stored.tree_size)
                    || cp.root != stored.root =>
            {
                problems.push(checkpoint_problem(
                    vec![stored.tree_size],
                    format!(
                        "{label}: its note says size {} and another root than its row",
                        cp.size
                    ),
                ));
            }
            Ok(cp) => out.push(Target {
                label,
                size: cp.size,
                root: cp.root,
            }),
        }
    }
    for (from, note) in &opts.external {
        match read_checkpoint(note, opts.key.as_ref()) {
            Err(e) => problems.push(checkpoint_problem(
                Vec::new(),
                format!("checkpoint {from}: {e}"),
            )),
            Ok(cp) => out.push(Target {
                label: format!("checkpoint {from}"),
                size: cp.size,
                root: cp.root,
            }),
        }
    }
    out.sort_by_key(|t| t.size);
    Ok(out)
}

/// Runs every check: guards, the chain, checkpoints (stored and external), the retention
/// anchor, and optionally the signatures of accepted tokens.
pub async fn run(reader: &StoreReader, opts: &Options) -> Result<Report, StoreError> {
    let mut report = Report::default();
    report.problems.extend(guards(reader).await?);
    let targets = targets(reader, opts, &mut report.problems).await?;
    report.checkpoints_checked = targets.len();

    let mut tree = Accumulator::new();
    let mut pending = targets.iter().peekable();
    let mut mismatches = Vec::new();
    let mut check =
        |tree: &Accumulator, pending: &mut std::iter::Peekable<std::slice::Iter<'_, Target>>| {
            while let Some(t) = pending.next_if(|t| t.size <= tree.size()) {
                if t.size == tree.size() && t.root != tree.root() {
                    mismatches.push(checkpoint_problem(
                    vec![i64::try_from(t.size).unwrap_or(i64::MAX)],
                    format!("{}: the records up to {} no longer hash to its root (rewritten, removed or reordered)", t.label, t.size),
                ));
                }
            }
        };
    check(&tree, &mut pending);
    let mut after = 0;
    let mut last_purged = None;
    loop {
        let page = reader.purged_hashes(after, PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        for (id, h) in page {
            tree.push(leaf_hash(&h));
            last_purged = Some((id, h));
            check(&tree, &mut pending);
        }
    }
    report.chain = chain(reader, |_, h| {
        tree.push(leaf_hash(&h));
        check(&tree, &mut pending);
    })
    .await?;
    let held = tree.size();
    report
        .problems
        .extend(report.chain.problems.iter().cloned());
    report.problems.append(&mut mismatches);
    for t in pending {
        report.problems.push(Problem {
            kind: ProblemKind::Truncated,
            ids: vec![
                i64::try_from(held).unwrap_or(i64::MAX) + 1,
                i64::try_from(t.size).unwrap_or(i64::MAX),
            ],
            message: format!(
                "{} covers {} records but the store holds {held}: records {} to {} are gone",
                t.label,
                t.size,
                held + 1,
                t.size
            ),
        });
    }
    if let Some((first_id, anchor)) = reader.anchor().await? {
        let matches = last_purged.is_some_and(|(id, h)| id == first_id - 1 && h == anchor);
        if !matches {
            report.problems.push(Problem {
                kind: ProblemKind::Anchor,
                ids: vec![first_id - 1],
                message: format!("the retention anchor before record {first_id} does not match the last purged entry hash"),
            });
        }
    }
    if opts.signatures {
        signatures(reader, &mut report).await?;
    }
    Ok(report)
}

/// Re-verifies every accepted token against the archived key set that verified it.
async fn signatures(reader: &StoreReader, report: &mut Report) -> Result<(), StoreError> {
    let mut sets: HashMap<Vec<u8>, Option<KeySet>> = HashMap::new();
    let mut after = 0;
    loop {
        let page = reader.chain_rows(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.row.id;
        for r in page
            .iter()
            .map(|r| &r.row)
            .filter(|r| r.outcome.as_deref() == Some("accepted"))
        {
            let fail = |message: String| Problem {
                kind: ProblemKind::Signature,
                ids: vec![r.id],
                message: format!("record {}: {message}", r.id),
            };
            let (Some(token), Some(alg_name)) = (&r.token, &r.alg) else {
                report
                    .problems
                    .push(fail("accepted without its token".into()));
                continue;
            };
            let Ok(alg) = alg_name.parse::<Algorithm>() else {
                report
                    .problems
                    .push(fail(format!("unknown alg {alg_name:?}")));
                continue;
            };
            if alg == Algorithm::HS256 {
                report.signatures_skipped += 1;
                continue;
            }
            let Some(digest) = &r.key_set_digest else {
                report.problems.push(fail("no key set recorded".into()));
                continue;
            };
            if !sets.contains_key(digest) {
                let set = reader
                    .key_set(digest)
                    .await?
                    .and_then(|(_, doc)| KeySet::parse(doc.as_bytes()).ok().map(|(s, _)| s));
                sets.insert(digest.clone(), set);
            }
            let Some(Some(set)) = sets.get(digest) else {
                report.problems.push(fail(format!(
                    "key set {} is not in the archive",
                    hex(digest)
                )));
                continue;
            };
            let Some((signing_input, signature)) = token.rsplit_once('.') else {
                report
                    .problems
                    .push(fail("stored token is not a JWS".into()));
                continue;
            };
            let ok = match set.select(r.kid.as_deref(), alg) {
                KeyMatch::Found(keys) => keys.iter().any(|k| {
                    jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), k, alg)
                        .unwrap_or(false)
                }),
                _ => false,
            };
            if ok {
                report.signatures_checked += 1;
            } else {
                report.problems.push(fail(
                    "the stored token does not verify against its archived key set".into(),
                ));
            }
        }
    }
    Ok(())
}
