//! The query indexes: `EXPLAIN QUERY PLAN` of each indexed query kind shows no full scan of
//! `audit_events`.

use logout_ledger::store::{AuditStore, EventFilter, KindFilter};
use serde_json::json;

use crate::helpers::spawn_api_app;
use crate::query_api::logout;

fn full_scan(plan: &[String]) -> bool {
    plan.iter().any(|step| {
        let s = step.trim();
        s.starts_with("SCAN e") || s.starts_with("SCAN audit_events") || s.starts_with("SCAN d")
    })
}

#[tokio::test]
async fn indexed_queries_never_scan_the_whole_table() {
    let app = spawn_api_app().await;
    for i in 0..20 {
        let sid = format!("s{i}");
        logout(
            &app,
            &format!("auth0|u{}", i % 5),
            Some(&sid),
            Some(json!({"org_id": "acme"})),
        )
        .await;
    }
    let reader = AuditStore::open_reader(&app.db.url).await.expect("reader");
    let t = |s: &str| logout_ledger::clock::parse_rfc3339_millis(s).ok();
    let meta = vec![("org_id".to_owned(), "acme".to_owned())];
    let cases = [
        (
            "sub",
            EventFilter {
                sub: Some("auth0|u1".into()),
                ..EventFilter::default()
            },
        ),
        (
            "sid",
            EventFilter {
                sid: Some("s3".into()),
                ..EventFilter::default()
            },
        ),
        (
            "meta",
            EventFilter {
                meta: meta.clone(),
                ..EventFilter::default()
            },
        ),
        (
            "two metas",
            EventFilter {
                meta: vec![meta[0].clone(), ("device".into(), "mac".into())],
                ..EventFilter::default()
            },
        ),
        (
            "time range",
            EventFilter {
                since: t("2026-01-01T00:00:00Z"),
                until: t("2026-02-01T00:00:00Z"),
                ..EventFilter::default()
            },
        ),
        (
            "since",
            EventFilter {
                since: t("2026-01-01T00:00:00Z"),
                ..EventFilter::default()
            },
        ),
        (
            "time range, rejected, page 2",
            EventFilter {
                since: t("2026-01-01T00:00:00Z"),
                until: t("2026-02-01T00:00:00Z"),
                outcome: Some(logout_ledger::store::Outcome::Rejected),
                after: Some(10),
                ..EventFilter::default()
            },
        ),
        (
            "sub in a time range",
            EventFilter {
                sub: Some("auth0|u1".into()),
                since: t("2026-01-01T00:00:00Z"),
                after: Some(10),
                ..EventFilter::default()
            },
        ),
        (
            "meta in a time range",
            EventFilter {
                meta,
                since: t("2026-01-01T00:00:00Z"),
                ..EventFilter::default()
            },
        ),
        (
            "access records",
            EventFilter {
                kind: KindFilter::Access,
                ..EventFilter::default()
            },
        ),
    ];
    for (name, filter) in cases {
        let plan = reader.query_plan(&filter).await.expect("plan");
        assert!(!full_scan(&plan), "{name}: {plan:#?}");
        let index = match name {
            "sub" | "sub in a time range" => "audit_events_sub",
            "sid" => "audit_events_sid",
            n if n.contains("meta") => "PRIMARY KEY (key=? AND value=?)",
            "access records" => "audit_events_kind",
            _ => "COVERING INDEX audit_events_received_at",
        };
        assert!(plan.iter().any(|s| s.contains(index)), "{name}: {plan:#?}");
        assert!(
            !plan.iter().any(|s| s.contains("TEMP B-TREE")),
            "{name} needs no sort: {plan:#?}"
        );
    }
    let sessions = reader.session_plans().await.expect("plans");
    assert!(!full_scan(&sessions), "{sessions:#?}");
    assert!(
        sessions.iter().any(|s| s.contains("audit_events_sid")),
        "{sessions:#?}"
    );
    assert!(
        sessions
            .iter()
            .any(|s| s.contains("audit_events_subject_logouts")),
        "{sessions:#?}"
    );
}
