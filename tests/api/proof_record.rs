//! Inclusion proofs carry the record: `verify-proof` recomputes the entry hash from the record
//! and the previous entry hash, shows what the record says, and refuses a proof whose record or
//! previous hash was edited.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use logout_ledger::clock::format_millis;
use logout_ledger::store::chain::COLUMNS;
use serde_json::Value;

use crate::helpers::both_backends;
use crate::ledger::{Ledger, ledger};

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

/// What the refusal of an edited record says.
const ALTERED: &str = "the record does not hash to the entry hash: it was altered";

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run logout-ledger");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every record as `query --format json` prints it, in id order.
fn query(l: &Ledger) -> Vec<Value> {
    let out = run(
        &[
            "query",
            "--database",
            &l.db.url,
            "--order",
            "asc",
            "--limit",
            "1000",
            "--format",
            "json",
            "--kind",
            "all",
        ],
        None,
    );
    serde_json::from_str(&stdout_of(&out)).expect("query json")
}

fn first(records: &[Value], outcome: &str) -> Value {
    records
        .iter()
        .find(|r| r["kind"] == "logout" && r["outcome"] == outcome)
        .unwrap_or_else(|| panic!("no {outcome} logout"))
        .clone()
}

fn prove(l: &Ledger, id: i64) -> Value {
    let out = run(
        &["prove", "--database", &l.db.url, "--event", &id.to_string()],
        None,
    );
    serde_json::from_str(&stdout_of(&out)).expect("proof json")
}

/// Runs `verify-proof` on `proof` (through standard input): (success, stdout, stderr).
fn verify_proof(l: &Ledger, proof: &Value) -> (bool, String, String) {
    let key = l.key.public.display().to_string();
    let out = run(
        &["verify-proof", "--key", &key, "-"],
        Some(&proof.to_string()),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

both_backends!(a_genuine_proof_verifies_and_shows_what_the_record_says);
async fn a_genuine_proof_verifies_and_shows_what_the_record_says() {
    let l = ledger(2).await;
    let accepted = first(&query(&l), "accepted");
    let id = accepted["id"].as_i64().expect("id");
    let proof = prove(&l, id);
    assert_eq!(proof["record"]["id"], id);
    assert_eq!(
        proof["previous_entry_hash"].as_str().map(str::len),
        Some(64)
    );
    let (ok, stdout, stderr) = verify_proof(&l, &proof);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with(&format!("OK: record {id} ")), "{stdout}");
    for (column, value) in [
        ("id", id.to_string()),
        ("kind", "\"logout\"".into()),
        ("outcome", "\"accepted\"".into()),
        (
            "received_at",
            accepted["received_at"].to_string().replace('"', ""),
        ),
        ("iss", accepted["iss"].to_string()),
        ("sub", accepted["sub"].to_string()),
        ("jti", accepted["jti"].to_string()),
    ] {
        assert!(
            stdout.contains(&format!("\n  {column}: {value}\n")),
            "{column}: {value} not in {stdout}"
        );
    }
    // The genesis record's proof starts the chain from 32 zero bytes.
    let genesis = prove(&l, 1);
    assert_eq!(genesis["previous_entry_hash"], "0".repeat(64));
    let (ok, _, stderr) = verify_proof(&l, &genesis);
    assert!(ok, "{stderr}");
}

both_backends!(a_proof_whose_record_was_edited_is_refused_as_altered);
async fn a_proof_whose_record_was_edited_is_refused_as_altered() {
    let l = ledger(2).await;
    let id = first(&query(&l), "accepted")["id"].as_i64().expect("id");
    let proof = prove(&l, id);
    assert!(verify_proof(&l, &proof).0, "the genuine proof holds");
    for (column, edit) in [
        ("sub", Value::from("someone-else")),
        ("sid", Value::Null),
        ("outcome", Value::from("rejected")),
        ("received_at", Value::from(0)),
    ] {
        let mut edited = proof.clone();
        edited["record"][column] = edit;
        assert_ne!(edited, proof, "{column} was changed");
        let (ok, stdout, stderr) = verify_proof(&l, &edited);
        assert!(!ok, "an edited {column} verified: {stdout}");
        assert!(stderr.contains(ALTERED), "{column}: {stderr}");
    }
    let mut old = proof.clone();
    old.as_object_mut().expect("object").remove("record");
    let (ok, _, stderr) = verify_proof(&l, &old);
    assert!(!ok);
    assert!(stderr.contains("carries no record"), "{stderr}");
}

both_backends!(a_proof_whose_previous_entry_hash_was_edited_is_refused);
async fn a_proof_whose_previous_entry_hash_was_edited_is_refused() {
    let l = ledger(2).await;
    let id = first(&query(&l), "accepted")["id"].as_i64().expect("id");
    let proof = prove(&l, id);
    let original = proof["previous_entry_hash"].as_str().expect("hex");
    let flipped = format!(
        "{}{}",
        if original.starts_with('0') { "1" } else { "0" },
        &original[1..]
    );
    // Another real entry hash of the log (the record's own) is no better than a flipped digit.
    for prev in [
        flipped,
        proof["entry_hash"].as_str().expect("hex").to_owned(),
    ] {
        let mut edited = proof.clone();
        edited["previous_entry_hash"] = prev.clone().into();
        let (ok, _, stderr) = verify_proof(&l, &edited);
        assert!(!ok, "previous hash {prev} verified");
        assert!(stderr.contains(ALTERED), "{stderr}");
    }
}

both_backends!(the_record_in_a_proof_is_what_query_returns_for_that_id);
async fn the_record_in_a_proof_is_what_query_returns_for_that_id() {
    let l = ledger(5).await;
    let records = query(&l);
    let shown = [first(&records, "accepted"), first(&records, "rejected")];
    let system = records
        .iter()
        .find(|r| r["kind"] == "system")
        .expect("a system record")
        .clone();
    for listed in shown.iter().chain([&system]) {
        let id = listed["id"].as_i64().expect("id");
        let record = prove(&l, id)["record"].clone();
        for column in COLUMNS {
            match column {
                // Shown differently (below), or not shown by query at all.
                "received_at" | "aud" | "session_metadata" | "claims_verified" | "details" => {}
                "events" | "token" | "key_set_digest" => {}
                _ => assert_eq!(record[column], listed[column], "record {id}: {column}"),
            }
        }
        let millis = record["received_at"].as_i64().expect("millis");
        assert_eq!(listed["received_at"], format_millis(millis), "record {id}");
        for column in ["aud", "session_metadata"] {
            let parsed: Option<Value> = record[column]
                .as_str()
                .map(|t| serde_json::from_str(t).expect("JSON text"));
            assert_eq!(
                parsed.unwrap_or(Value::Null),
                listed[column],
                "record {id}: {column}"
            );
        }
        let verified = record["claims_verified"].as_i64().map(|v| v == 1);
        assert_eq!(
            verified.map_or(Value::Null, Value::from),
            listed["claims_verified"],
            "record {id}: claims_verified"
        );
        if listed["kind"] == "system" {
            let details: Value =
                serde_json::from_str(record["details"].as_str().expect("details")).expect("json");
            assert_eq!(details, listed["details"], "record {id}: details");
        }
    }
    assert_eq!(shown[0]["outcome"], "accepted");
    assert!(
        shown[0]["sub"].is_string(),
        "an accepted logout names its subject"
    );
}
