//! Tamper evidence: the store (the SQLite file, or the PostgreSQL database) is altered behind
//! the service's back and `verify` must name each problem; checkpoints, proofs, retention and
//! signature re-verification.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use logout_ledger::ledger::checkpoint::CheckpointSettings;
use logout_ledger::tlog::NoteSigner;
use logout_ledger::tlog::note::{generate_pkcs8, pem_encode, public_key_pem};
use sqlx::{Connection, Row, SqliteConnection};

use crate::helpers::{AUDIENCE, TempDir, TestApp, TestDb, both_backends, spawn_app_with};

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

/// A log key on disk (as `keygen` writes it) and the settings that use it.
pub(crate) struct LogKey {
    private: PathBuf,
    pub(crate) public: PathBuf,
    dir: PathBuf,
}

fn log_key(dir: &Path) -> LogKey {
    let der = generate_pkcs8().expect("key");
    let signer = NoteSigner::new("test.logout-ledger", &der).expect("signer");
    let private = dir.join("log.key");
    let public = dir.join("log.key.pub");
    std::fs::write(&private, pem_encode("PRIVATE KEY", &der)).expect("write key");
    std::fs::write(&public, format!("{}\n", signer.verifier_key())).expect("write pub");
    std::fs::write(
        dir.join("log.key.pub.pem"),
        public_key_pem(signer.public_key()),
    )
    .expect("write pem");
    LogKey {
        private,
        public,
        dir: dir.join("checkpoints"),
    }
}

/// A stopped service's store holding `n` logouts (every 5th rejected) and a final checkpoint.
pub(crate) struct Ledger {
    pub(crate) db: Arc<TestDb>,
    pub(crate) key: LogKey,
    _dir: Arc<TempDir>,
    app_op: Arc<logout_ledger::local_issuer::LocalIssuer>,
}

async fn serve_with_checkpoints() -> (TestApp, LogKey) {
    let dir = Arc::new(TempDir::new());
    let key = log_key(&dir.0);
    let (private, cdir) = (key.private.clone(), key.dir.clone());
    let app = spawn_app_with(move |s| {
        let signer =
            logout_ledger::ledger::checkpoint::load_signer(&private, None).expect("signer");
        s.checkpoints = Some(CheckpointSettings {
            signer: Arc::new(signer),
            interval: Duration::from_secs(3600),
            dir: Some(cdir),
        });
    })
    .await;
    // Keep the key directory alive as long as the app's.
    std::mem::forget(dir);
    (app, key)
}

pub(crate) async fn ledger(n: usize) -> Ledger {
    let (app, key) = serve_with_checkpoints().await;
    for i in 0..n {
        let token = if i % 5 == 4 {
            "forged.token.value".to_owned()
        } else {
            app.valid_token()
        };
        app.post_token(&token).await;
    }
    let (db, dir, op) = (
        Arc::clone(&app.db),
        Arc::clone(&app.dir),
        Arc::clone(&app.op),
    );
    app.stop().await;
    Ledger {
        db,
        key,
        _dir: dir,
        app_op: op,
    }
}

fn url(db: &TestDb) -> String {
    db.url.clone()
}

/// Runs `verify`; returns (success, stdout).
fn verify(db: &TestDb, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("verify")
        .args(["--database", &url(db)])
        .args(args)
        .output()
        .expect("run verify");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// Runs statements on the store as someone with direct database access would.
pub(crate) async fn tamper(db: &TestDb, statements: &[&str]) {
    for sql in statements {
        run_sql(db, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Runs one statement on either backend; `DROP TRIGGER name` is given its table on
/// PostgreSQL.
async fn run_sql(db: &TestDb, sql: &str) -> Result<(), String> {
    if db.path.is_some() {
        let mut conn = SqliteConnection::connect(&db.url).await.expect("open");
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        let sql = match sql.strip_prefix("DROP TRIGGER ") {
            Some(name) if name.starts_with("checkpoints_") => {
                format!("{sql} ON checkpoints")
            }
            Some(_) => format!("{sql} ON audit_events"),
            None => sql.to_owned(),
        };
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("open");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

const DROP_GUARDS: [&str; 2] = [
    "DROP TRIGGER audit_events_no_update",
    "DROP TRIGGER audit_events_no_delete",
];

fn key_arg(l: &Ledger) -> [String; 2] {
    ["--key".into(), l.key.public.display().to_string()]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

both_backends!(an_untouched_store_verifies_with_its_key_outside_checkpoints_and_signatures);
async fn an_untouched_store_verifies_with_its_key_outside_checkpoints_and_signatures() {
    let l = ledger(20).await;
    let copies: Vec<PathBuf> = std::fs::read_dir(&l.key.dir)
        .expect("checkpoint dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(copies.len(), 1, "the shutdown checkpoint was copied out");
    let mut a: Vec<String> = key_arg(&l).to_vec();
    a.extend([
        "--checkpoint".into(),
        copies[0].display().to_string(),
        "--signatures".into(),
    ]);
    let (ok, out) = verify(&l.db, &args(&a));
    assert!(ok, "{out}");
    assert!(out.contains("OK: the audit trail is intact"), "{out}");
    assert!(
        out.contains("16 accepted tokens re-verified offline"),
        "{out}"
    );
    assert!(out.contains("checkpoints: 2 held"), "{out}");
}

both_backends!(the_store_refuses_updates_and_deletes);
async fn the_store_refuses_updates_and_deletes() {
    let l = ledger(3).await;
    let update = run_sql(&l.db, "UPDATE audit_events SET sub = 'x' WHERE id = 3").await;
    assert!(update.is_err_and(|e| e.contains("append-only")));
    let delete = run_sql(&l.db, "DELETE FROM audit_events WHERE id = 3").await;
    assert!(delete.is_err_and(|e| e.contains("retention")));
    let cp = run_sql(&l.db, "DELETE FROM checkpoints").await;
    assert!(cp.is_err());
}

both_backends!(an_edited_field_is_named_altered_and_the_missing_guards_too);
async fn an_edited_field_is_named_altered_and_the_missing_guards_too() {
    let l = ledger(10).await;
    tamper(
        &l.db,
        &[
            DROP_GUARDS[0],
            "UPDATE audit_events SET sub = 'auth0|someone-else' WHERE id = 5",
        ],
    )
    .await;
    let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
    assert!(!ok);
    assert!(
        out.contains("PROBLEM altered: record 5 was altered"),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM guard_missing: trigger audit_events_no_update"),
        "{out}"
    );
    assert!(
        !out.contains("PROBLEM checkpoint"),
        "stored entry hashes are untouched, so the roots hold: {out}"
    );
}

both_backends!(a_deleted_row_is_named_missing);
async fn a_deleted_row_is_named_missing() {
    let l = ledger(10).await;
    tamper(
        &l.db,
        &[DROP_GUARDS[1], "DELETE FROM audit_events WHERE id = 6"],
    )
    .await;
    let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
    assert!(!ok);
    assert!(
        out.contains("PROBLEM missing: record 6 is missing"),
        "{out}"
    );
}

both_backends!(swapped_rows_are_named_reordered);
async fn swapped_rows_are_named_reordered() {
    let l = ledger(10).await;
    tamper(
        &l.db,
        &[
            DROP_GUARDS[0],
            "UPDATE audit_events SET id = 1000000 WHERE id = 4",
            "UPDATE audit_events SET id = 4 WHERE id = 5",
            "UPDATE audit_events SET id = 5 WHERE id = 1000000",
        ],
    )
    .await;
    let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
    assert!(!ok);
    assert!(
        out.contains("PROBLEM reordered: record at position 4 was written as record 5"),
        "{out}"
    );
    assert!(
        out.contains("PROBLEM reordered: record at position 5 was written as record 4"),
        "{out}"
    );
}

#[tokio::test]
async fn an_inserted_row_is_named_inserted() {
    let l = ledger(10).await;
    let mut conn = SqliteConnection::connect(&url(&l.db)).await.expect("open");
    for sql in DROP_GUARDS {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("drop");
    }
    let max: i64 = sqlx::query_scalar("SELECT MAX(id) FROM audit_events")
        .fetch_one(&mut conn)
        .await
        .expect("max");
    // Make room at 7 (highest first), then forge a record there.
    for id in (7..=max).rev() {
        sqlx::query("UPDATE audit_events SET id = ? WHERE id = ?")
            .bind(id + 1)
            .bind(id)
            .execute(&mut conn)
            .await
            .expect("shift");
    }
    sqlx::query(
        "INSERT INTO audit_events (id, kind, received_at, outcome, http_status, sub, metadata_status, claims_verified, entry_hash) \
         VALUES (7, 'logout', 0, 'accepted', 200, 'auth0|forged', 'absent', 1, zeroblob(32))",
    )
    .execute(&mut conn)
    .await
    .expect("insert");
    let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
    assert!(!ok);
    assert!(
        out.contains("PROBLEM inserted: record 7 was inserted"),
        "{out}"
    );
    assert!(out.contains("were written 1 position(s) earlier"), "{out}");
}

both_backends!(a_truncated_tail_is_named_truncated);
async fn a_truncated_tail_is_named_truncated() {
    let l = ledger(10).await;
    tamper(
        &l.db,
        &[DROP_GUARDS[1], "DELETE FROM audit_events WHERE id >= 9"],
    )
    .await;
    let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
    assert!(!ok);
    assert!(out.contains("PROBLEM truncated:"), "{out}");
    assert!(out.contains("records 9 to"), "{out}");
}

#[tokio::test]
async fn a_replaced_checkpoint_is_caught() {
    let l = ledger(5).await;
    let other =
        NoteSigner::new("test.logout-ledger", &generate_pkcs8().expect("key")).expect("signer");
    let mut conn = SqliteConnection::connect(&url(&l.db)).await.expect("open");
    let row = sqlx::query("SELECT tree_size, note FROM checkpoints")
        .fetch_one(&mut conn)
        .await
        .expect("cp");
    let size: i64 = row.get(0);
    let note: String = row.get(1);
    let body = note
        .split_once("\n\n")
        .map(|(b, _)| format!("{b}\n"))
        .expect("body");
    let forged = other.sign(&body).expect("sign");
    sqlx::query("DROP TRIGGER checkpoints_no_update")
        .execute(&mut conn)
        .await
        .expect("drop");
    sqlx::query("UPDATE checkpoints SET note = ? WHERE tree_size = ?")
        .bind(forged)
        .bind(size)
        .execute(&mut conn)
        .await
        .expect("replace");
    let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "PROBLEM checkpoint: stored checkpoint {size}: signature does not verify"
        )),
        "{out}"
    );
}

#[tokio::test]
async fn a_rewritten_history_is_caught_by_an_outside_checkpoint() {
    let l = ledger(10).await;
    let copy = std::fs::read_dir(&l.key.dir)
        .expect("dir")
        .next()
        .expect("one copy")
        .expect("entry")
        .path();
    // The attacker edits record 3, recomputes every later hash and drops the stored checkpoints.
    let mut conn = SqliteConnection::connect(&url(&l.db)).await.expect("open");
    for sql in [
        "DROP TRIGGER audit_events_no_update",
        "DROP TRIGGER checkpoints_no_delete",
        "DELETE FROM checkpoints",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect(sql);
    }
    sqlx::query("UPDATE audit_events SET sub = 'auth0|nobody' WHERE id = 3")
        .execute(&mut conn)
        .await
        .expect("edit");
    drop(conn);
    rechain(&l.db).await;
    let (ok, out) = verify(&l.db, &[]);
    assert!(!ok, "the guards are gone: {out}");
    assert!(
        !out.contains("altered"),
        "a recomputed chain looks intact on its own: {out}"
    );
    let mut a = key_arg(&l).to_vec();
    a.extend(["--checkpoint".into(), copy.display().to_string()]);
    let (ok, out) = verify(&l.db, &args(&a));
    assert!(!ok);
    assert!(out.contains("no longer hash to its root"), "{out}");
}

/// Recomputes every entry hash as an attacker who knows the format would.
async fn rechain(db: &TestDb) {
    let reader = logout_ledger::store::AuditStore::open_reader(&url(db))
        .await
        .expect("reader");
    let rows = reader.chain_rows(0, 100_000).await.expect("rows");
    let mut conn = SqliteConnection::connect(&url(db)).await.expect("open");
    let mut prev = logout_ledger::store::chain::GENESIS;
    let mut scratch = Vec::new();
    for r in rows {
        let h = r.row.entry_hash(&prev, &mut scratch);
        sqlx::query("UPDATE audit_events SET entry_hash = ? WHERE id = ?")
            .bind(&h[..])
            .bind(r.row.id)
            .execute(&mut conn)
            .await
            .expect("rehash");
        prev = h;
    }
}

both_backends!(prove_and_verify_proof_offline_and_corrupted_proofs_fail);
async fn prove_and_verify_proof_offline_and_corrupted_proofs_fail() {
    let l = ledger(6).await;
    let out = Command::new(BIN)
        .args(["prove", "--database", &url(&l.db), "--event", "4"])
        .output()
        .expect("prove");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let proof: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(proof["id"], 4);
    assert!(
        proof["inclusion_path"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    let check = |p: &serde_json::Value| {
        let file = l.key.dir.join(format!("proof-{}.json", aws_random()));
        std::fs::write(&file, p.to_string()).expect("write proof");
        let out = Command::new(BIN)
            .args([
                "verify-proof",
                "--key",
                &l.key.public.display().to_string(),
                &file.display().to_string(),
            ])
            .output()
            .expect("verify-proof");
        out.status.success()
    };
    assert!(check(&proof), "a genuine proof holds");
    let mut wrong_id = proof.clone();
    wrong_id["id"] = 5.into();
    assert!(!check(&wrong_id));
    let mut flipped = proof.clone();
    let first = flipped["inclusion_path"][0]
        .as_str()
        .expect("hex")
        .to_owned();
    let flipped_hex = format!(
        "{}{}",
        if first.starts_with('0') { "1" } else { "0" },
        &first[1..]
    );
    flipped["inclusion_path"][0] = flipped_hex.into();
    assert!(!check(&flipped));
    let mut short = proof.clone();
    short["inclusion_path"].as_array_mut().expect("array").pop();
    assert!(!check(&short));
    let mut size = proof.clone();
    size["tree_size"] = (proof["tree_size"].as_u64().expect("size") + 1).into();
    assert!(!check(&size));
}

fn aws_random() -> String {
    logout_ledger::local_issuer::random_id()
}

both_backends!(purge_removes_checkpointed_ranges_and_verify_stays_green);
async fn purge_removes_checkpointed_ranges_and_verify_stays_green() {
    let l = ledger(10).await;
    let all_before = crate::helpers::all_records_in(&l.db.url).await.len();
    let tomorrow = logout_ledger::clock::format_millis(
        logout_ledger::clock::Clock::now_millis(&logout_ledger::clock::SystemClock) + 86_400_000,
    );
    let dry = Command::new(BIN)
        .args([
            "purge",
            "--database",
            &url(&l.db),
            "--before",
            &tomorrow,
            "--dry-run",
        ])
        .output()
        .expect("dry");
    assert!(dry.status.success());
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("would remove records 1..="),
        "{}",
        String::from_utf8_lossy(&dry.stdout)
    );
    assert_eq!(
        crate::helpers::all_records_in(&l.db.url).await.len(),
        all_before,
        "a dry run removes nothing"
    );

    let run = Command::new(BIN)
        .args(["purge", "--database", &url(&l.db), "--before", &tomorrow])
        .output()
        .expect("purge");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let left = crate::helpers::all_records_in(&l.db.url).await;
    let kinds: Vec<String> = left
        .iter()
        .map(|r| r.action.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds,
        ["checkpoint", "retention"],
        "only what came after the last checkpoint, and the retention record"
    );
    let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
    assert!(ok, "{out}");
    // Old checkpoints still verify (the purged entry hashes are kept); a second run finds nothing.
    let again = Command::new(BIN)
        .args(["purge", "--database", &url(&l.db), "--before", &tomorrow])
        .output()
        .expect("purge");
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}

both_backends!(signatures_reverify_across_a_key_rotation);
async fn signatures_reverify_across_a_key_rotation() {
    let (app, key) = serve_with_checkpoints().await;
    for _ in 0..3 {
        assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    }
    let app = app
        .restart(|s| s.keys.refresh_cooldown = Duration::ZERO)
        .await;
    app.op.rotate_rsa("rsa-2", true).await.expect("rotate");
    for _ in 0..3 {
        let t = app
            .op
            .sign("rsa-2", "RS256", &app.op.claims(AUDIENCE))
            .expect("sign");
        assert_eq!(app.post_token(&t).await.status, 200);
    }
    let changes: Vec<serde_json::Value> = app
        .all_records()
        .await
        .into_iter()
        .filter(|r| r.action.as_deref() == Some("keyset_change"))
        .filter_map(|r| r.details)
        .collect();
    assert_eq!(
        changes.len(),
        2,
        "the first key set and the rotation are on the record"
    );
    assert_eq!(changes[1]["added"], serde_json::json!(["rsa-2"]));
    assert_eq!(changes[1]["removed"], serde_json::json!(["rsa-1"]));
    let db = Arc::clone(&app.db);
    let _dir = Arc::clone(&app.dir);
    app.stop().await;
    let (ok, out) = verify(
        &db,
        &["--key", &key.public.display().to_string(), "--signatures"],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("6 accepted tokens re-verified offline"),
        "{out}"
    );
}

both_backends!(a_crash_between_batches_leaves_a_verifiable_chain);
async fn a_crash_between_batches_leaves_a_verifiable_chain() {
    let op = logout_ledger::local_issuer::LocalIssuer::start()
        .await
        .expect("issuer");
    let dir = TempDir::new();
    let db = TestDb::new(&dir).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--issuer",
            op.issuer(),
            "--audience",
            AUDIENCE,
            "--allow-insecure-http",
        ])
        .args([
            "--database",
            &url(&db),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "off")
        .spawn()
        .expect("spawn");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tokens: Vec<String> = (0..400)
        .map(|_| {
            op.sign("rsa-1", "RS256", &op.claims(AUDIENCE))
                .expect("sign")
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for t in tokens {
        let (client, base) = (client.clone(), base.clone());
        tasks.spawn(async move {
            client
                .post(format!("{base}/backchannel-logout"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("logout_token={t}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        });
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let mut acknowledged = 0;
    while let Some(status) = tasks.join_next().await {
        if status.expect("task") == 200 {
            acknowledged += 1;
        }
    }
    let accepted = crate::helpers::records_in(&db.url)
        .await
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("accepted"))
        .count();
    assert!(
        accepted >= acknowledged,
        "every acknowledged logout survived the crash: {accepted} < {acknowledged}"
    );
    let (ok, out) = verify(&db, &[]);
    assert!(ok, "{out}");
}

both_backends!(the_checkpoint_signature_verifies_with_openssl);
async fn the_checkpoint_signature_verifies_with_openssl() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let l = ledger(3).await;
    let copy = std::fs::read_dir(&l.key.dir)
        .expect("dir")
        .next()
        .expect("copy")
        .expect("entry")
        .path();
    let note = std::fs::read_to_string(&copy).expect("note");
    let (body, sigs) = note.split_once("\n\n").expect("signed note");
    let sig_b64 = sigs.trim_end().rsplit(' ').next().expect("signature");
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sig_b64)
        .expect("base64");
    let dir = &l.key.dir;
    std::fs::write(dir.join("body.txt"), format!("{body}\n")).expect("body");
    std::fs::write(dir.join("sig.bin"), &raw[4..]).expect("sig");
    let pem = l.key.private.with_extension("key.pub.pem");
    let status = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(&pem)
        .args(["-rawin", "-in"])
        .arg(dir.join("body.txt"))
        .arg("-sigfile")
        .arg(dir.join("sig.bin"))
        .output()
        .expect("openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let _ = &l.app_op;
}

#[tokio::test]
async fn on_postgres_truncate_is_refused_and_a_disabled_guard_counts_as_missing() {
    crate::helpers::run_on(crate::helpers::Backend::Postgres, async {
        let l = ledger(3).await;
        let truncate = run_sql(&l.db, "TRUNCATE audit_events").await;
        assert!(
            truncate.is_err_and(|e| e.contains("retention")),
            "TRUNCATE is refused"
        );
        tamper(
            &l.db,
            &["ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update"],
        )
        .await;
        let (ok, out) = verify(&l.db, &args(&key_arg(&l)));
        assert!(!ok);
        assert!(
            out.contains("PROBLEM guard_missing: trigger audit_events_no_update"),
            "{out}"
        );
    })
    .await;
}
