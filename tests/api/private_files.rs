//! Files only the service can read (0600 files, 0700 directories under umask 022), 503 answers
//! that reveal nothing internal, and access records naming the real operating-system account.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::{TempDir, both_backends, spawn_app_with};

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

/// The binary run under umask 022 (through `sh`, so no unsafe `pre_exec`).
fn under_umask(args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .env_remove("LOGOUT_LEDGER_API_TOKENS");
    c
}

/// `serve` for `issuer` on the store `url`, listening on `listen`, under umask 022.
fn serve(issuer: &str, url: &str, listen: &str, extra: &[&str]) -> Command {
    let mut c = under_umask(&[
        "serve",
        "--issuer",
        issuer,
        "--audience",
        "test-client",
        "--allow-insecure-http",
        "--database",
        url,
        "--listen",
        listen,
    ]);
    c.args(extra);
    c
}

fn run(args: &[&str]) -> Output {
    under_umask(args).output().expect("run")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits (at most 10 s) for every path to exist.
fn wait_for(paths: &[&Path]) {
    for _ in 0..400 {
        if paths.iter().all(|p| p.exists()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("never appeared: {paths:?}");
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
async fn serve_export_and_checkpoints_write_owner_only_files_under_umask_022() {
    let op = logout_ledger::local_issuer::LocalIssuer::start()
        .await
        .expect("issuer");
    let dir = TempDir::new();
    let key = dir.0.join("ckpt.key");
    let key_arg = key.display().to_string();
    let out = run(&["keygen", "--output", &key_arg]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&key), 0o600);
    // --force over a world-readable key narrows it again.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run(&["keygen", "--output", &key_arg, "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&key), 0o600, "keygen --force");

    let db = dir.0.join("ledger.db");
    let url = format!("sqlite://{}", db.display());
    let ckpt = dir.0.join("ckpt").join("copies");
    let ckpt_arg = ckpt.display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = serve(
        op.issuer(),
        &url,
        &listen,
        &[
            "--signing-key-file",
            &key_arg,
            "--checkpoint-interval",
            "1s",
            "--checkpoint-dir",
            &ckpt_arg,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("serve");
    let wal = dir.0.join("ledger.db-wal");
    let shm = dir.0.join("ledger.db-shm");
    let any_copy = || {
        std::fs::read_dir(&ckpt)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(Result::ok)
            .map(|e| e.path())
    };
    wait_for(&[&db, &wal, &shm, &ckpt]);
    let mut copy = None;
    for _ in 0..200 {
        copy = any_copy().filter(|p| !p.to_string_lossy().ends_with(".tmp"));
        if copy.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let modes = [
        ("db", mode(&db)),
        ("wal", mode(&wal)),
        ("shm", mode(&shm)),
        ("checkpoint dir", mode(&ckpt)),
        ("checkpoint parent", mode(ckpt.parent().expect("parent"))),
        ("checkpoint copy", mode(&copy.expect("a checkpoint copy"))),
    ];
    stop(child);
    let expected = [
        ("db", 0o600),
        ("wal", 0o600),
        ("shm", 0o600),
        ("checkpoint dir", 0o700),
        ("checkpoint parent", 0o700),
        ("checkpoint copy", 0o600),
    ];
    let octal = |m: &[(&str, u32)]| {
        m.iter()
            .map(|(n, m)| format!("{n} {m:o}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(octal(&modes), octal(&expected));

    let export = dir.0.join("out.ndjson");
    let export_arg = export.display().to_string();
    let out = run(&[
        "export",
        "--format",
        "ndjson",
        "--database",
        &url,
        "--output",
        &export_arg,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&export), 0o600, "export file");
}

#[test]
fn serve_refuses_a_signing_key_others_can_read() {
    let dir = TempDir::new();
    let key = dir.0.join("open.key");
    let key_arg = key.display().to_string();
    let out = run(&["keygen", "--output", &key_arg]);
    assert!(out.status.success(), "{out:?}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let db = format!("sqlite://{}", dir.0.join("l.db").display());
    let out = run(&[
        "serve",
        "--issuer",
        "http://127.0.0.1:9/",
        "--audience",
        "x",
        "--allow-insecure-http",
        "--database",
        &db,
        "--listen",
        "127.0.0.1:0",
        "--signing-key-file",
        &key_arg,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&key_arg) && stderr.contains(&format!("chmod 600 {key_arg}")),
        "{stderr}"
    );
    assert!(
        !dir.0.join("l.db").exists(),
        "refused before opening the store"
    );
}

#[tokio::test]
async fn serve_warns_about_an_existing_store_others_can_read() {
    let op = logout_ledger::local_issuer::LocalIssuer::start()
        .await
        .expect("issuer");
    let dir = TempDir::new();
    let db = dir.0.join("old.db");
    std::fs::write(&db, b"").expect("an empty file is an empty SQLite database");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("sqlite://{}", db.display());
    let mut child = serve(op.issuer(), &url, &listen, &[])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let ready = format!("http://{listen}/readyz");
    let mut up = false;
    for _ in 0..400 {
        if let Ok(r) = reqwest::get(&ready).await
            && r.status() == 200
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("stderr");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(up, "an open store is a warning, not a refusal: {stderr}");
    let path = db.display().to_string();
    assert!(
        stderr.contains(&path) && stderr.contains("mode 644") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert_eq!(mode(&db), 0o644, "the operator's file is left as it is");
}

both_backends!(a_503_names_its_code_only_while_the_record_keeps_the_detail);
async fn a_503_names_its_code_only_while_the_record_keeps_the_detail() {
    let app = spawn_app_with(|s| s.keys.refresh_cooldown = Duration::ZERO).await;
    app.op.set_available(false);
    app.op.rotate_rsa("rsa-2", false).await.expect("rotate");
    let token = app.op.sign("rsa-2", "RS256", &app.claims()).expect("sign");
    let a = app.post_token(&token).await;
    assert_eq!(
        (a.status, a.code()),
        (503, "keys_unavailable"),
        "{:?}",
        a.body
    );
    let body = a.body.to_string();
    let host = app.op.addr().to_string();
    assert!(
        !body.contains("http") && !body.contains(&host),
        "the answer reveals internals: {body}"
    );
    assert!(body.contains("retry"), "{body}");
    let detail = app.last_record().await.reason_detail.unwrap_or_default();
    assert!(
        detail.contains(&host),
        "the record keeps the detail: {detail}"
    );
}

both_backends!(an_access_record_names_the_account_not_user);
async fn an_access_record_names_the_account_not_user() {
    let app = spawn_app_with(|_| {}).await;
    assert_eq!(app.post_token("garbage").await.status, 400);
    let out = Command::new(BIN)
        .args(["query", "--database", &app.db.url])
        .env("USER", "mallory")
        .env("LOGNAME", "mallory")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let all = app.all_records().await;
    let access = all
        .iter()
        .rev()
        .find(|r| r.kind == "access")
        .expect("an access record");
    let who = access.details.as_ref().expect("details")["who"]
        .as_str()
        .expect("who")
        .to_owned();
    assert_ne!(who, "mallory");
    let expected = os_account();
    assert_eq!(who, expected);
}

/// The account of this process's real user id, read independently of the binary's code:
/// its `/etc/passwd` name, else `uid:N`.
pub(crate) fn os_account() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("uid")
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| format!("uid:{uid}"))
}
