//! Target `proof`: what `logout-ledger verify-proof` reads, `ledger::prove::verify_proof_json`.
//!
//! A fixed log of 16 chained records; the fixed checkpoint key (see [`crate::checkpoint`]) signs its
//! tree heads of every size. Input starting with `{`: the proof document itself. Otherwise a
//! structured input: byte 1 picks the tree size, byte 2 the record, the rest are tampering
//! operations applied to the real proof before it is written as JSON.
//!
//! What must hold: no panic; an accepted proof names a record of the fixed log with that
//! record's own content, previous entry hash and entry hash, in hex digits, against a tree head
//! the key signed; a real proof always verifies and any tampering with it never does.

use std::sync::OnceLock;

use logout_ledger::keys::jwks::hex;
use logout_ledger::ledger::prove::{InclusionProof, ProofRecord, verify_proof_json};
use logout_ledger::store::chain::{EventRow, GENESIS};
use logout_ledger::tlog::merkle::{self, Hash, leaf_hash};

use crate::checkpoint::{KEY_NAME, signer};

/// Entries in the fixed log.
pub const LOG_SIZE: usize = 16;

struct Log {
    records: Vec<ProofRecord>,
    /// Entry hash of record i + 1, after GENESIS for record 1.
    entries: Vec<Hash>,
    leaves: Vec<Hash>,
    /// The signed checkpoint note of each size 1..=LOG_SIZE (index size - 1).
    notes: Vec<String>,
}

fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let rows: Vec<EventRow> = (1..=LOG_SIZE as i64)
            .map(|id| EventRow {
                id,
                kind: "logout".into(),
                received_at: 1_764_201_600_000 + id,
                outcome: Some("accepted".into()),
                sub: Some(format!("user {id}")),
                token_sha256: Some(vec![id as u8; 32]),
                ..EventRow::default()
            })
            .collect();
        let mut prev = GENESIS;
        let entries: Vec<Hash> = rows
            .iter()
            .map(|r| {
                prev = r.entry_hash(&prev, &mut Vec::new());
                prev
            })
            .collect();
        let records = rows.iter().map(ProofRecord::from_row).collect();
        let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        let notes = (1..=LOG_SIZE)
            .map(|size| {
                let cp = logout_ledger::tlog::Checkpoint::new(
                    KEY_NAME,
                    size as u64,
                    merkle::root(&leaves[..size]),
                );
                signer().sign(&cp.body()).expect("sign")
            })
            .collect();
        Log {
            records,
            entries,
            leaves,
            notes,
        }
    })
}

/// The real proof of record `id` (1-based) in the tree of `size`.
pub fn real_proof(id: usize, size: usize) -> InclusionProof {
    let log = log();
    let path = merkle::inclusion_proof(&log.leaves[..size], (id - 1) as u64).expect("in range");
    InclusionProof {
        id: id as i64,
        entry_hash: hex(&log.entries[id - 1]),
        record: log.records[id - 1].clone(),
        previous_entry_hash: hex(&previous(id)),
        tree_size: size as u64,
        inclusion_path: path.iter().map(|h| hex(h)).collect(),
        checkpoint: log.notes[size - 1].clone(),
    }
}

/// The entry hash before record `id` (1-based).
fn previous(id: usize) -> Hash {
    id.checked_sub(2).map_or(GENESIS, |i| log().entries[i])
}

fn check_document(text: &str) {
    let verifier = signer().verifier();
    let Ok((proof, cp)) = verify_proof_json(text, &verifier) else {
        return;
    };
    let log = log();
    let size = usize::try_from(cp.size).expect("small");
    assert!(
        (1..=LOG_SIZE).contains(&size),
        "a tree head the key never signed"
    );
    assert_eq!(cp.origin, KEY_NAME);
    assert_eq!(cp.root, merkle::root(&log.leaves[..size]));
    assert_eq!(proof.tree_size, cp.size);
    let index = usize::try_from(proof.id - 1).expect("id >= 1");
    assert!(index < size, "record {} outside the tree", proof.id);
    // Hex digits of either case are one hash (the fuzzer found uppercase accepted, harmless);
    // anything that is not a hex digit, such as a `+` that `from_str_radix` would take, is not.
    assert!(
        proof.entry_hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "accepted a non-hex entry hash {:?}",
        proof.entry_hash
    );
    assert_eq!(
        proof.entry_hash.to_ascii_lowercase(),
        hex(&log.entries[index]),
        "accepted an entry hash that is not the record's own"
    );
    assert_eq!(
        proof.record, log.records[index],
        "accepted a record that is not the logged one"
    );
    assert_eq!(
        proof.previous_entry_hash.to_ascii_lowercase(),
        hex(&previous(index + 1)),
        "accepted a previous entry hash that is not the record's predecessor's"
    );
}

fn check_tampering(data: &[u8]) {
    let size = 1 + usize::from(data.first().copied().unwrap_or(0)) % LOG_SIZE;
    let id = 1 + usize::from(data.get(1).copied().unwrap_or(0)) % size;
    let real = real_proof(id, size);
    let mut proof = real.clone();
    for op in data.get(2..).unwrap_or_default().chunks(2) {
        let (kind, arg) = (op[0], op.get(1).copied().unwrap_or(0));
        let arg_usize = usize::from(arg);
        match kind % 8 {
            0 if !proof.inclusion_path.is_empty() => {
                let n = proof.inclusion_path.len();
                let h = &mut proof.inclusion_path[arg_usize % n];
                let pos = (arg_usize / n) % h.len().max(1);
                flip_hex(h, pos);
            }
            1 => {
                proof.inclusion_path.pop();
            }
            2 => proof.inclusion_path.push(hex(&[arg; 32])),
            3 => proof.id = proof.id.wrapping_add(i64::from(arg as i8)),
            4 => proof.tree_size = proof.tree_size.wrapping_add(u64::from(arg)),
            5 => flip_hex(&mut proof.entry_hash, arg_usize % 64),
            6 => flip_hex(&mut proof.previous_entry_hash, arg_usize % 64),
            _ => proof.record = edited(&proof.record, arg),
        }
    }
    let text = serde_json::to_string(&proof).expect("json");
    let verifier = signer().verifier();
    let result = verify_proof_json(&text, &verifier);
    if proof == real {
        let (_, cp) = result.expect("a real proof verifies");
        assert_eq!(cp.size, size as u64);
    } else {
        assert!(result.is_err(), "a tampered proof verified: {text}");
    }
    check_document(&text);
}

/// The record with its `sub` (or, for odd `arg`, its whole content) replaced.
fn edited(record: &ProofRecord, arg: u8) -> ProofRecord {
    if arg % 2 == 1 {
        return log().records[usize::from(arg / 2) % LOG_SIZE].clone();
    }
    let mut value = serde_json::to_value(record).expect("json");
    value["sub"] = format!("user {}", arg / 2).into();
    serde_json::from_value(value).expect("a record")
}

/// Replaces one hex digit with another (so the string stays well-formed hex).
fn flip_hex(h: &mut String, pos: usize) {
    let Some(c) = h.chars().nth(pos) else { return };
    let flipped = if c == '0' { '1' } else { '0' };
    h.replace_range(pos..pos + c.len_utf8(), flipped.encode_utf8(&mut [0; 4]));
}

/// Runs one input through the proof reader and checks what must hold.
pub fn check(data: &[u8]) {
    match data.first() {
        Some(b'{') => {
            if let Ok(text) = std::str::from_utf8(data) {
                check_document(text);
            }
        }
        Some(_) => check_tampering(&data[1..]),
        None => {}
    }
}
