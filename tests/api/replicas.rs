//! Several replicas on one PostgreSQL database: three `serve` processes share the store while
//! thousands of logouts race across them, identical re-deliveries and reused `jti`s included;
//! the three also start at once on the empty database, racing to migrate it.
//! One gapless chain, each `(iss, jti)` accepted at most once, and `verify` green afterwards.

use std::collections::HashMap;
use std::sync::Arc;

use logout_ledger::local_issuer::LocalIssuer;
use logout_ledger::store::{AuditStore, EventFilter, KindFilter, Order, StoredRecord};
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::{
    AUDIENCE, Backend, TempDir, TestDb, post_raw, run_on, spawn_replica, urlencode,
};

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

/// Every record of any kind, oldest first.
async fn everything(url: &str) -> Vec<StoredRecord> {
    let reader = AuditStore::open_reader(url).await.expect("reader");
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = reader
            .query(&EventFilter {
                kind: KindFilter::All,
                order: Order::Asc,
                limit: 1000,
                after,
                ..EventFilter::default()
            })
            .await
            .expect("query");
        let Some(last) = page.last() else {
            return all;
        };
        after = Some(last.id);
        all.extend(page);
    }
}

#[tokio::test]
async fn three_replicas_keep_one_chain_and_accept_each_jti_once() {
    run_on(Backend::Postgres, three_replicas()).await;
}

async fn three_replicas() {
    let op = Arc::new(LocalIssuer::start().await.expect("issuer"));
    let dir = TempDir::new();
    let db = TestDb::new(&dir).await;
    // All three start at once on the empty database: they race to migrate it.
    let (first, second, third) = tokio::join!(
        spawn_replica(&op, &db.url, &[]),
        spawn_replica(&op, &db.url, &[]),
        spawn_replica(&op, &db.url, &[])
    );
    let bases: Vec<String> = [&first, &second, &third]
        .iter()
        .map(|r| r.base.clone())
        .collect();

    // (replica, token, group): unique tokens; triples of one token, one copy to each replica
    // at once; pairs of different tokens sharing a jti, sent to two replicas at once.
    let mut plan: Vec<(usize, String, String)> = Vec::new();
    for i in 0..900 {
        let c = op.claims(AUDIENCE);
        let t = op.sign("rsa-1", "RS256", &c).expect("sign");
        plan.push((i % 3, t, format!("u{i}")));
    }
    for i in 0..300 {
        let t = op
            .sign("rsa-1", "RS256", &op.claims(AUDIENCE))
            .expect("sign");
        for r in 0..3 {
            plan.push((r, t.clone(), format!("t{i}")));
        }
    }
    for i in 0..300 {
        let a = op.claims(AUDIENCE);
        let mut b = op.claims(AUDIENCE);
        b.insert("jti".into(), a["jti"].clone());
        b.insert("sub".into(), json!("auth0|someone-else"));
        plan.push((
            i % 3,
            op.sign("rsa-1", "RS256", &a).expect("sign"),
            format!("p{i}"),
        ));
        plan.push((
            (i + 1) % 3,
            op.sign("rsa-1", "RS256", &b).expect("sign"),
            format!("p{i}"),
        ));
    }
    // Copies of one group go out back to back, so they race inside the replicas.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let limit = Arc::new(tokio::sync::Semaphore::new(96));
    let mut tasks = JoinSet::new();
    for (replica, token, group) in plan {
        let permit = Arc::clone(&limit).acquire_owned().await.expect("permit");
        let (client, url) = (
            client.clone(),
            format!("{}/backchannel-logout", bases[replica]),
        );
        tasks.spawn(async move {
            let body = format!("logout_token={}", urlencode(&token));
            let a = post_raw(
                &client,
                &url,
                "application/x-www-form-urlencoded",
                body.into(),
            )
            .await;
            drop(permit);
            (group, a.status, a.code().to_owned())
        });
    }
    let mut answers: HashMap<String, Vec<(u16, String)>> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (group, status, code) = done.expect("request");
        answers.entry(group).or_default().push((status, code));
    }
    for (group, got) in &answers {
        let mut statuses: Vec<u16> = got.iter().map(|g| g.0).collect();
        statuses.sort_unstable();
        match group.as_bytes()[0] {
            b'u' => assert_eq!(statuses, [200], "{group}: {got:?}"),
            b't' => assert_eq!(statuses, [200, 200, 200], "{group}: {got:?}"),
            _ => {
                assert_eq!(statuses, [200, 400], "{group}: {got:?}");
                assert!(got.iter().any(|g| g.1 == "replay"), "{group}: {got:?}");
            }
        }
    }

    let all = everything(&db.url).await;
    let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        (1..=all.len() as i64).collect::<Vec<_>>(),
        "one gapless chain across replicas"
    );
    let logouts: Vec<&StoredRecord> = all.iter().filter(|r| r.kind == "logout").collect();
    assert_eq!(
        logouts.len(),
        900 + 900 + 600,
        "every request is on the record"
    );
    let mut accepted: HashMap<(&str, &str), usize> = HashMap::new();
    for r in &logouts {
        if r.outcome.as_deref() == Some("accepted") {
            let key = (
                r.iss.as_deref().unwrap_or_default(),
                r.jti.as_deref().unwrap_or_default(),
            );
            *accepted.entry(key).or_default() += 1;
        }
    }
    assert_eq!(accepted.len(), 900 + 300 + 300);
    assert!(
        accepted.values().all(|n| *n == 1),
        "no (iss, jti) accepted twice"
    );
    let count = |outcome: &str| {
        logouts
            .iter()
            .filter(|r| r.outcome.as_deref() == Some(outcome))
            .count()
    };
    assert_eq!(count("duplicate"), 600, "two re-deliveries of each triple");
    assert_eq!(
        logouts
            .iter()
            .filter(|r| r.reason.as_deref() == Some("replay"))
            .count(),
        300
    );
    let by_id: HashMap<i64, &&StoredRecord> = logouts.iter().map(|r| (r.id, r)).collect();
    for d in logouts
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("duplicate"))
    {
        let original = d.duplicate_of.and_then(|id| by_id.get(&id));
        assert!(
            original.is_some_and(|o| o.outcome.as_deref() == Some("accepted") && o.jti == d.jti),
            "a duplicate points at the acceptance of its token"
        );
    }

    // Verify while the replicas still run, then after they stop.
    let verify = || {
        std::process::Command::new(BIN)
            .args(["verify", "--database", &db.url])
            .output()
            .expect("verify")
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for mut r in [first, second, third] {
        let _ = r.child.start_kill();
        let _ = r.child.wait().await;
    }
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
