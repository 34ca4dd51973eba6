//! Inclusion proofs: that a record's entry hash is in the tree a signed checkpoint commits to,
//! checkable offline with the log's public key alone (RFC 6962 / RFC 9162 §2.1.3). A proof
//! carries the record and the previous entry hash, so its entry hash is recomputed, not believed.

mod record;

use serde::{Deserialize, Serialize};

pub use record::ProofRecord;

use crate::store::{StoreError, StoreReader};
use crate::tlog::entry::GENESIS;
use crate::tlog::merkle::{self, leaf_hash};
use crate::tlog::{Checkpoint, NoteVerifier};
use crate::util::hex;

/// Leaves read per query.
const PAGE: u32 = 50_000;

/// A self-contained inclusion proof, as `prove` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// The record's sequence number (leaf index + 1).
    pub id: i64,
    /// The record's entry hash, hex.
    pub entry_hash: String,
    /// The record's chained columns, as hashed.
    pub record: ProofRecord,
    /// The entry hash before the record's (genesis, 32 zero bytes, for record 1), hex.
    pub previous_entry_hash: String,
    /// Size of the tree the checkpoint signs.
    pub tree_size: u64,
    /// Sibling hashes from the leaf up, hex.
    pub inclusion_path: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

/// Why a proof could not be made or does not hold.
#[derive(Debug, thiserror::Error)]
pub enum ProofFailure {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No checkpoint covers the record yet.
    #[error("no checkpoint covers record {0} yet")]
    NotCovered(i64),
    /// The record is not stored (never written, or removed).
    #[error("record {0} has no entry hash in the store")]
    UnknownRecord(i64),
    /// The checkpoint does not verify or parse.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The store's leaves do not hash to the checkpoint's root.
    #[error("the store does not match the checkpoint at size {0}; run verify")]
    StoreMismatch(u64),
    /// The proof is malformed or does not lead to the signed root.
    #[error("the proof does not hold: {0}")]
    Invalid(String),
    /// The document is not an inclusion proof as `prove` prints it.
    #[error("not an inclusion proof: {0}")]
    NotAProof(String),
    /// The proof carries no record (made before proofs did): nothing to recompute.
    #[error(
        "the proof carries no record, so its entry hash cannot be recomputed; make it again with this version's prove"
    )]
    NoRecord,
    /// The record and previous entry hash do not reproduce the proof's entry hash.
    #[error("the record does not hash to the entry hash: it was altered")]
    Altered,
    /// Retention removed the record: only its entry hash is left.
    #[error("record {0} was removed by retention: only its entry hash is kept, not its content")]
    Purged(i64),
}

fn unhex(s: &str) -> Result<[u8; 32], ProofFailure> {
    record::hex_bytes(s)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ProofFailure::Invalid(format!("{s:?} is not a 32-byte hex hash")))
}

fn read(note: &str, key: Option<&NoteVerifier>) -> Result<Checkpoint, ProofFailure> {
    match key {
        Some(k) => k
            .verify_checkpoint(note)
            .map_err(|e| ProofFailure::Checkpoint(e.to_string())),
        None => {
            let body = note.split_once("\n\n").map_or(note, |(b, _)| b);
            Checkpoint::parse(&format!("{body}\n"))
                .map_err(|e| ProofFailure::Checkpoint(e.to_string()))
        }
    }
}

/// Builds the proof for record `id` against `checkpoint` (a signed note), or against the
/// latest stored checkpoint that covers it.
pub async fn prove(
    reader: &StoreReader,
    id: i64,
    checkpoint: Option<String>,
    key: Option<&NoteVerifier>,
) -> Result<InclusionProof, ProofFailure> {
    build(reader, id, checkpoint, key, true).await
}

/// The proof of record `id` against the latest checkpoint covering it, exactly as the store
/// holds it, without checking it here: for a verifier elsewhere (the console checks it in the
/// browser), which must see an altered record fail rather than be told so by the server.
pub async fn proof_as_stored(
    reader: &StoreReader,
    id: i64,
) -> Result<InclusionProof, ProofFailure> {
    build(reader, id, None, None, false).await
}

/// Builds a proof; `check` holds it against the checkpoint's root and the record's entry hash.
async fn build(
    reader: &StoreReader,
    id: i64,
    checkpoint: Option<String>,
    key: Option<&NoteVerifier>,
    check: bool,
) -> Result<InclusionProof, ProofFailure> {
    let note = match checkpoint {
        Some(n) => n,
        None => reader
            .checkpoints()
            .await?
            .into_iter()
            .rfind(|c| c.tree_size >= id)
            .map(|c| c.note)
            .ok_or(ProofFailure::NotCovered(id))?,
    };
    let cp = read(&note, key)?;
    if id < 1 || u64::try_from(id).map_or(true, |i| i > cp.size) {
        return Err(ProofFailure::NotCovered(id));
    }
    let mut leaves = Vec::with_capacity(usize::try_from(cp.size).unwrap_or(0));
    let mut entry = None;
    let mut prev = (id == 1).then_some(GENESIS);
    let mut after = 0;
    while (leaves.len() as u64) < cp.size {
        let page = reader.entry_hashes(after, PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        for (i, h) in page {
            if (leaves.len() as u64) < cp.size {
                if i == id {
                    entry = Some(h);
                } else if i == id - 1 {
                    prev = Some(h);
                }
                leaves.push(leaf_hash(&h));
            }
        }
    }
    let entry = entry.ok_or(ProofFailure::UnknownRecord(id))?;
    if leaves.len() as u64 != cp.size || (check && merkle::root(&leaves) != cp.root) {
        return Err(ProofFailure::StoreMismatch(cp.size));
    }
    let prev = prev.ok_or(ProofFailure::StoreMismatch(cp.size))?;
    let row = reader
        .chain_rows(id - 1, 1)
        .await?
        .into_iter()
        .find(|r| r.row.id == id)
        .ok_or(ProofFailure::Purged(id))?;
    let record = ProofRecord::from_row(&row.row);
    if check && record.entry_hash(&prev) != entry {
        return Err(ProofFailure::StoreMismatch(cp.size));
    }
    let index = u64::try_from(id - 1).unwrap_or(0);
    let path = merkle::inclusion_proof(&leaves, index)
        .map_err(|e| ProofFailure::Invalid(e.to_string()))?;
    Ok(InclusionProof {
        id,
        entry_hash: hex(&entry),
        record,
        previous_entry_hash: hex(&prev),
        tree_size: cp.size,
        inclusion_path: path.iter().map(|h| hex(h)).collect(),
        checkpoint: note,
    })
}

/// Reads a proof document (the JSON `prove` prints) and checks it offline with `key`: what
/// `verify-proof` runs, in one function so it can be fuzzed.
pub fn verify_proof_json(
    text: &str,
    key: &NoteVerifier,
) -> Result<(InclusionProof, Checkpoint), ProofFailure> {
    let proof: InclusionProof = serde_json::from_str(text).map_err(|e| {
        let old = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .is_ok_and(|doc| !doc.contains_key("record"));
        if old {
            ProofFailure::NoRecord
        } else {
            ProofFailure::NotAProof(e.to_string())
        }
    })?;
    let cp = verify_proof(&proof, key)?;
    Ok((proof, cp))
}

/// Checks a proof offline: the checkpoint's signature with `key`, the record and previous hash
/// against the entry hash, then the path to the checkpoint's root.
pub fn verify_proof(
    proof: &InclusionProof,
    key: &NoteVerifier,
) -> Result<Checkpoint, ProofFailure> {
    let cp = key
        .verify_checkpoint(&proof.checkpoint)
        .map_err(|e| ProofFailure::Checkpoint(e.to_string()))?;
    if cp.size != proof.tree_size {
        return Err(ProofFailure::Invalid(format!(
            "tree_size {} but the checkpoint signs {}",
            proof.tree_size, cp.size
        )));
    }
    let index = proof
        .id
        .checked_sub(1)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| ProofFailure::Invalid("id must be at least 1".into()))?;
    let entry = unhex(&proof.entry_hash)?;
    if proof.record.int("id") != Some(proof.id) {
        return Err(ProofFailure::Invalid(format!(
            "the record's id is not the proof's id {}",
            proof.id
        )));
    }
    if proof.record.entry_hash(&unhex(&proof.previous_entry_hash)?) != entry {
        return Err(ProofFailure::Altered);
    }
    let path = proof
        .inclusion_path
        .iter()
        .map(|h| unhex(h))
        .collect::<Result<Vec<_>, _>>()?;
    merkle::verify_inclusion(&leaf_hash(&entry), index, cp.size, &path, &cp.root)
        .map_err(|e| ProofFailure::Invalid(e.to_string()))?;
    Ok(cp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::NoteSigner;
    use crate::tlog::entry::EventRow;
    use aws_lc_rs::signature::Ed25519KeyPair;

    fn signer() -> NoteSigner {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("seed");
        NoteSigner::from_key_pair("log", pair).expect("signer")
    }

    fn row(id: i64, sub: &str) -> EventRow {
        EventRow {
            id,
            kind: "logout".into(),
            received_at: 1_764_201_600_000 + id,
            outcome: Some("accepted".into()),
            iss: Some("https://op.example/".into()),
            sub: Some(sub.into()),
            ..EventRow::default()
        }
    }

    /// The proof of record `id` in a chained log of two records, signed at size 2.
    fn proof_of(id: i64) -> InclusionProof {
        let rows = [row(1, "alice"), row(2, "bob")];
        let mut prev = GENESIS;
        let mut hashes = Vec::new();
        for r in &rows {
            let h = r.entry_hash(&prev, &mut Vec::new());
            hashes.push((prev, h));
            prev = h;
        }
        let leaves: Vec<_> = hashes.iter().map(|(_, h)| leaf_hash(h)).collect();
        let cp = Checkpoint::new("log", 2, merkle::root(&leaves));
        let at = usize::try_from(id - 1).expect("id");
        let path = merkle::inclusion_proof(&leaves, at as u64).expect("path");
        InclusionProof {
            id,
            entry_hash: hex(&hashes[at].1),
            record: ProofRecord::from_row(&rows[at]),
            previous_entry_hash: hex(&hashes[at].0),
            tree_size: 2,
            inclusion_path: path.iter().map(|h| hex(h)).collect(),
            checkpoint: signer().sign(&cp.body()).expect("sign"),
        }
    }

    #[test]
    fn ids_below_one_are_invalid_not_an_overflow() {
        // Found with the proof fuzz target: `id - 1` overflowed for i64::MIN.
        let mut proof = proof_of(1);
        let text = serde_json::to_string(&proof).expect("json");
        assert!(verify_proof_json(&text, &signer().verifier()).is_ok());
        for id in [0, -1, i64::MIN] {
            proof.id = id;
            let e = verify_proof(&proof, &signer().verifier()).expect_err("below one");
            assert!(matches!(e, ProofFailure::Invalid(_)), "{id}: {e}");
        }
        let e = verify_proof_json("{}", &signer().verifier()).expect_err("not a proof");
        assert!(matches!(e, ProofFailure::NoRecord), "{e}");
        let e = verify_proof_json("[]", &signer().verifier()).expect_err("not a proof");
        assert!(matches!(e, ProofFailure::NotAProof(_)), "{e}");
    }

    #[test]
    fn the_entry_hash_is_recomputed_from_the_record_and_the_previous_hash() {
        let key = signer().verifier();
        for id in [1, 2] {
            let proof = proof_of(id);
            assert!(verify_proof(&proof, &key).is_ok(), "{id}");
            let mut value = serde_json::to_value(&proof).expect("json");
            value["record"]["sub"] = "mallory".into();
            let e = verify_proof_json(&value.to_string(), &key).expect_err("edited sub");
            assert!(matches!(e, ProofFailure::Altered), "{e}");
            assert_eq!(
                e.to_string(),
                "the record does not hash to the entry hash: it was altered"
            );
            let mut moved = proof.clone();
            moved.previous_entry_hash = hex(&[1; 32]);
            let e = verify_proof(&moved, &key).expect_err("edited previous hash");
            assert!(matches!(e, ProofFailure::Altered), "{e}");
        }
        // The other record of the log, under this proof's path: its hash is not this entry.
        let mut swapped = proof_of(2);
        swapped.record = proof_of(1).record;
        let e = verify_proof(&swapped, &key).expect_err("another record");
        assert!(matches!(e, ProofFailure::Invalid(_)), "{e}");
    }

    #[test]
    fn a_proof_without_its_record_is_refused_by_name() {
        let mut value = serde_json::to_value(proof_of(2)).expect("json");
        value.as_object_mut().expect("object").remove("record");
        let e = verify_proof_json(&value.to_string(), &signer().verifier()).expect_err("old");
        assert!(matches!(e, ProofFailure::NoRecord), "{e}");
        let mut value = serde_json::to_value(proof_of(2)).expect("json");
        value
            .as_object_mut()
            .expect("object")
            .remove("previous_entry_hash");
        let e = verify_proof_json(&value.to_string(), &signer().verifier()).expect_err("no prev");
        assert!(e.to_string().contains("previous_entry_hash"), "{e}");
    }
}
