//! Inclusion proofs: that a record's entry hash is in the tree a signed checkpoint commits to,
//! checkable offline with the log's public key alone (RFC 6962 / RFC 9162 §2.1.3).

use serde::{Deserialize, Serialize};

use crate::store::{StoreError, StoreReader};
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
}

fn unhex(s: &str) -> Result<[u8; 32], ProofFailure> {
    let bytes: Result<Vec<u8>, _> = (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or(())
        })
        .collect();
    bytes
        .ok()
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
    let mut after = 0;
    while (leaves.len() as u64) < cp.size {
        let page = reader.entry_hashes(after, PAGE).await?;
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        for (i, h) in page {
            if (leaves.len() as u64) < cp.size {
                if i == id {
                    entry = Some(h);
                }
                leaves.push(leaf_hash(&h));
            }
        }
    }
    let entry = entry.ok_or(ProofFailure::UnknownRecord(id))?;
    if leaves.len() as u64 != cp.size || merkle::root(&leaves) != cp.root {
        return Err(ProofFailure::StoreMismatch(cp.size));
    }
    let index = u64::try_from(id - 1).unwrap_or(0);
    let path = merkle::inclusion_proof(&leaves, index)
        .map_err(|e| ProofFailure::Invalid(e.to_string()))?;
    Ok(InclusionProof {
        id,
        entry_hash: hex(&entry),
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
    let proof: InclusionProof =
        serde_json::from_str(text).map_err(|e| ProofFailure::NotAProof(e.to_string()))?;
    let cp = verify_proof(&proof, key)?;
    Ok((proof, cp))
}

/// Checks a proof offline: the checkpoint's signature with `key`, then the path to its root.
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
    use aws_lc_rs::signature::Ed25519KeyPair;

    #[test]
    fn ids_below_one_are_invalid_not_an_overflow() {
        // Found with the proof fuzz target: `id - 1` overflowed for i64::MIN.
        let pair = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("seed");
        let signer = NoteSigner::from_key_pair("log", pair).expect("signer");
        let entry = [9u8; 32];
        let cp = Checkpoint::new("log", 1, merkle::root(&[leaf_hash(&entry)]));
        let mut proof = InclusionProof {
            id: 1,
            entry_hash: hex(&entry),
            tree_size: 1,
            inclusion_path: vec![],
            checkpoint: signer.sign(&cp.body()).expect("sign"),
        };
        let text = serde_json::to_string(&proof).expect("json");
        assert!(verify_proof_json(&text, &signer.verifier()).is_ok());
        for id in [0, -1, i64::MIN] {
            proof.id = id;
            let e = verify_proof(&proof, &signer.verifier()).expect_err("below one");
            assert!(matches!(e, ProofFailure::Invalid(_)), "{id}: {e}");
        }
        let e = verify_proof_json("{}", &signer.verifier()).expect_err("not a proof");
        assert!(matches!(e, ProofFailure::NotAProof(_)), "{e}");
    }
}
