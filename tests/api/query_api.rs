//! The query API: bearer tokens, each filter, pages that hold still while records arrive, one
//! record with its token, bad parameters, the OpenAPI document, and the access record each read
//! leaves.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use crate::helpers::{API_LABEL, TestApp, both_backends, spawn_api_app, spawn_app};

/// Posts a valid logout for `sub`; `sid` replaced (or removed with `None`), metadata added.
pub(crate) async fn logout(
    app: &TestApp,
    sub: &str,
    sid: Option<&str>,
    meta: Option<Value>,
) -> Map<String, Value> {
    let mut c = app.claims();
    c.insert("sub".into(), json!(sub));
    match sid {
        Some(s) => c.insert("sid".into(), json!(s)),
        None => c.remove("sid"),
    };
    if let Some(m) = meta {
        c.insert("session_metadata".into(), m);
    }
    assert_eq!(app.post_token(&app.sign(&c)).await.status, 200);
    c
}

/// The ids of a page's events.
fn ids(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

/// `GET /api/v1/events?{query}`, asserting 200; the page.
async fn events(app: &TestApp, query: &str) -> Value {
    let a = app.api_get(&format!("/api/v1/events?{query}")).await;
    assert_eq!(a.status, 200, "{query}: {}", a.body);
    a.body
}

/// The access records, oldest first.
pub(crate) async fn access_records(app: &TestApp) -> Vec<Value> {
    app.all_records()
        .await
        .into_iter()
        .filter(|r| r.kind == "access")
        .map(|r| {
            let mut d = r.details.expect("details");
            d["action"] = json!(r.action);
            d
        })
        .collect()
}

both_backends!(requests_without_a_configured_bearer_token_get_401_and_no_data);
async fn requests_without_a_configured_bearer_token_get_401_and_no_data() {
    let app = spawn_api_app().await;
    logout(&app, "auth0|alice", Some("s1"), None).await;
    for token in [None, Some("llq_wrong"), Some("")] {
        let a = app.api_get_as("/api/v1/events", token).await;
        assert_eq!(a.status, 401, "{token:?}");
        assert!(
            a.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer"))
        );
        assert_eq!(a.body["error"], "unauthorized");
    }
    let basic = app
        .client
        .get(app.api_url("/api/v1/events"))
        .header("authorization", "Basic YXVkaXRvcjp4")
        .send()
        .await
        .expect("request");
    assert_eq!(basic.status(), 401);
    assert_eq!(app.api_get("/api/v1/events").await.status, 200);
    let doc = app.api_get_as("/api/v1/openapi.json", None).await;
    assert_eq!(doc.status, 200, "the document needs no token");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("logout_ledger_api_unauthorized_total 4"),
        "{metrics}"
    );
    assert_eq!(
        access_records(&app).await.len(),
        1,
        "only the authorised read"
    );
}

both_backends!(without_a_token_the_api_does_not_start_and_the_receiver_still_runs);
async fn without_a_token_the_api_does_not_start_and_the_receiver_still_runs() {
    let app = spawn_app().await;
    assert!(app.api.is_none());
    assert_eq!(app.post_token(&app.valid_token()).await.status, 200);
    let start = &app.all_records().await[0];
    assert_eq!(start.action.as_deref(), Some("start"));
    assert_eq!(
        start.details.as_ref().map(|d| &d["api"]),
        Some(&Value::Null)
    );
}

both_backends!(the_api_listener_stops_with_the_receiver);
async fn the_api_listener_stops_with_the_receiver() {
    let app = spawn_api_app().await;
    let url = app.api_url("/api/v1/openapi.json");
    assert_eq!(app.api_get("/api/v1/events").await.status, 200);
    let client = app.client.clone();
    app.stop().await;
    assert!(
        client.get(&url).send().await.is_err(),
        "nothing listens any more"
    );
}

both_backends!(each_filter_alone_and_combined_selects_its_records);
async fn each_filter_alone_and_combined_selects_its_records() {
    let app = spawn_api_app().await;
    let acme = |device: &str| json!({"org_id": "acme", "device": device});
    let a1 = logout(&app, "auth0|alice", Some("s-a1"), Some(acme("mac"))).await;
    logout(&app, "auth0|alice", Some("s-a2"), Some(acme("phone"))).await;
    logout(&app, "auth0|bob", None, Some(json!({"org_id": "globex"}))).await;
    let mut expired = app.claims();
    expired.insert("sub".into(), json!("auth0|alice"));
    expired.insert("exp".into(), json!(1_000));
    assert_eq!(app.post_token(&app.sign(&expired)).await.status, 400);
    let mut bad_meta = app.claims();
    bad_meta.insert("sub".into(), json!("auth0|carol"));
    bad_meta.insert("session_metadata".into(), json!({"org_id": 7}));
    assert_eq!(app.post_token(&app.sign(&bad_meta)).await.status, 200);
    let all = ids(&events(&app, "order=asc").await);
    assert_eq!(all.len(), 5);
    let iss = crate::helpers::urlencode(app.op.issuer());
    let cases: Vec<(String, Vec<usize>)> = vec![
        ("sub=auth0%7Calice".into(), vec![0, 1, 3]),
        ("sid=s-a1".into(), vec![0]),
        (format!("jti={}", a1["jti"].as_str().expect("jti")), vec![0]),
        ("outcome=rejected".into(), vec![3]),
        ("reason=expired".into(), vec![3]),
        (format!("iss={iss}"), vec![0, 1, 2, 3, 4]),
        ("iss=https%3A%2F%2Fother.example".into(), vec![]),
        ("meta.org_id=acme".into(), vec![0, 1]),
        ("meta.org_id=acme&meta.device=phone".into(), vec![1]),
        ("meta.org_id=globex&meta.device=phone".into(), vec![]),
        ("has_meta=device".into(), vec![0, 1]),
        ("has_meta=org_id&has_meta=device".into(), vec![0, 1]),
        ("metadata_status=invalid".into(), vec![4]),
        ("metadata_status=absent".into(), vec![3]),
        ("verified=true".into(), vec![0, 1, 2, 4]),
        ("verified=true&sub=auth0%7Calice".into(), vec![0, 1]),
        (
            "sub=auth0%7Calice&outcome=accepted&meta.device=mac".into(),
            vec![0],
        ),
        (
            "since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z".into(),
            vec![0, 1, 2, 3, 4],
        ),
        ("until=2000-01-01T00:00:00Z".into(), vec![]),
        ("since=2100-01-01T00:00:00Z".into(), vec![]),
        (
            "since=2000-01-01T00:00:00Z&meta.org_id=acme".into(),
            vec![0, 1],
        ),
    ];
    for (query, want) in cases {
        let want: Vec<i64> = want.iter().map(|i| all[*i]).collect();
        let got = ids(&events(&app, &format!("{query}&order=asc")).await);
        assert_eq!(got, want, "{query}");
    }
    let desc = ids(&events(&app, "").await);
    assert_eq!(
        desc,
        all.iter().rev().copied().collect::<Vec<_>>(),
        "newest first by default"
    );
    let system = events(&app, "kind=system").await;
    assert!(system["events"].as_array().is_some_and(|e| !e.is_empty()));
    let every = ids(&events(&app, "kind=all&order=asc&limit=1000").await);
    assert!(every.len() > all.len() && every.windows(2).all(|w| w[0] < w[1]));
    let row = &events(&app, "sid=s-a1").await["events"][0];
    for field in [
        "id",
        "kind",
        "received_at",
        "outcome",
        "reason",
        "iss",
        "sub",
        "sid",
        "jti",
        "aud",
        "session_metadata",
        "metadata_status",
        "claims_verified",
        "token_sha256",
    ] {
        assert!(row.get(field).is_some(), "field {field}");
    }
    assert_eq!(row["session_metadata"]["device"], "mac");
}

both_backends!(pages_hold_still_while_records_arrive_concurrently);
async fn pages_hold_still_while_records_arrive_concurrently() {
    let app = spawn_api_app().await;
    let tokens: Vec<String> = (0..25).map(|_| app.valid_token()).collect();
    app.post_concurrently(tokens).await;
    let writer = {
        let (client, url) = (app.client.clone(), app.url("/backchannel-logout"));
        let tokens: Vec<String> = (0..30).map(|_| app.valid_token()).collect();
        tokio::spawn(async move {
            for t in tokens {
                let body = format!("logout_token={}", crate::helpers::urlencode(&t));
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .expect("post");
                assert_eq!(r.status(), 200);
            }
        })
    };
    let mut seen = Vec::new();
    let mut first_top = None;
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=7&cursor={c}"),
            None => "limit=7".into(),
        };
        let page = events(&app, &q).await;
        let page_ids = ids(&page);
        first_top = first_top.or(page_ids.first().copied());
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    writer.await.expect("writer");
    let top = first_top.expect("a first page");
    let expected: Vec<i64> = app
        .records()
        .await
        .iter()
        .rev()
        .map(|r| r.id)
        .filter(|id| *id <= top)
        .collect();
    assert_eq!(
        seen, expected,
        "every record up to the first page's top, once, in order"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());

    let mut asc = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor
            .as_ref()
            .map_or("order=asc&limit=20".to_owned(), |c| {
                format!("order=asc&limit=20&cursor={c}")
            });
        let page = events(&app, &q).await;
        asc.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let all: Vec<i64> = app.records().await.iter().map(|r| r.id).collect();
    assert_eq!(asc, all);
    let first = events(&app, "limit=1").await;
    let c = first["next_cursor"].as_str().expect("cursor").to_owned();
    let a = app
        .api_get(&format!("/api/v1/events?order=asc&cursor={c}"))
        .await;
    assert_eq!(
        (a.status, a.body["parameter"].as_str()),
        (400, Some("cursor"))
    );
}

both_backends!(one_record_comes_with_its_token_header_and_claims);
async fn one_record_comes_with_its_token_header_and_claims() {
    let app = spawn_api_app().await;
    let claims = logout(&app, "auth0|alice", Some("s1"), None).await;
    let accepted = app.last_record().await;
    let a = app
        .api_get(&format!("/api/v1/events/{}", accepted.id))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["id"], accepted.id);
    assert_eq!(a.body["token_claims"]["jti"], claims["jti"]);
    assert_eq!(a.body["token_header"]["alg"], "RS256");
    assert_eq!(a.body["token_header"]["kid"], "rsa-1");
    assert_eq!(
        a.body["token"].as_str().map(|t| t.split('.').count()),
        Some(3)
    );
    assert_eq!(a.body["outcome"], "accepted");
    assert_eq!(app.post_token("not-a-token").await.status, 400);
    let rejected = app.last_record().await;
    let r = app
        .api_get(&format!("/api/v1/events/{}", rejected.id))
        .await;
    assert_eq!((r.status, &r.body["token"]), (200, &Value::Null));
    assert_eq!(app.api_get("/api/v1/events/999999").await.status, 404);
    let bad = app.api_get("/api/v1/events/abc").await;
    assert_eq!(
        (bad.status, bad.body["parameter"].as_str()),
        (400, Some("id"))
    );
}

both_backends!(bad_parameters_get_400_naming_the_parameter);
async fn bad_parameters_get_400_naming_the_parameter() {
    let app = spawn_api_app().await;
    let cases = [
        ("/api/v1/events?limit=1001", "limit"),
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?limit=ten", "limit"),
        ("/api/v1/events?since=yesterday", "since"),
        ("/api/v1/events?subject=x", "subject"),
        ("/api/v1/events?order=sideways", "order"),
        ("/api/v1/events?cursor=garbage", "cursor"),
        ("/api/v1/events?kind=logouts", "kind"),
        ("/api/v1/events?outcome=ok", "outcome"),
        ("/api/v1/events?reason=nope", "reason"),
        ("/api/v1/events?meta.org%20id=x", "meta.org id"),
        ("/api/v1/events?has_meta=a.b", "has_meta"),
        ("/api/v1/events?verified=yes", "verified"),
        ("/api/v1/events?sub=a&sub=b", "sub"),
        ("/api/v1/reports/summary", "group_by"),
        ("/api/v1/reports/summary?group_by=week", "group_by"),
        (
            "/api/v1/reports/summary?group_by=day&group_by=issuer&group_by=outcome",
            "group_by",
        ),
        ("/api/v1/export", "format"),
        ("/api/v1/export?format=xml", "format"),
        ("/api/v1/export?format=ocsf&kind=access", "kind"),
        ("/api/v1/sessions/s1?sub=auth0%7Calice", "since"),
        ("/api/v1/sessions/s1?limit=3", "limit"),
        ("/api/v1/subjects/auth0%7Calice/logouts?sub=x", "sub"),
    ];
    for (path, parameter) in cases {
        let a = app.api_get(path).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.body["error"], "invalid_parameter", "{path}");
        assert_eq!(a.body["parameter"], parameter, "{path}");
        assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(
        access_records(&app).await.is_empty(),
        "refused reads read nothing"
    );
}

both_backends!(every_read_but_the_session_check_leaves_an_access_record);
async fn every_read_but_the_session_check_leaves_an_access_record() {
    let app = spawn_api_app().await;
    logout(
        &app,
        "auth0|alice",
        Some("s1"),
        Some(json!({"org_id": "acme"})),
    )
    .await;
    let id = app.last_record().await.id;
    let reads = [
        "/api/v1/events?meta.org_id=acme",
        &format!("/api/v1/events/{id}"),
        "/api/v1/subjects/auth0%7Calice/logouts",
        "/api/v1/export?format=ndjson",
        "/api/v1/reports/summary?group_by=outcome",
        "/api/v1/sessions/s1",
    ];
    for path in reads {
        assert_eq!(app.api_get(path).await.status, 200, "{path}");
    }
    let access = access_records(&app).await;
    let got: Vec<(&str, &str, i64)> = access
        .iter()
        .map(|d| {
            (
                d["action"].as_str().unwrap_or(""),
                d["what"].as_str().unwrap_or(""),
                d["rows"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("query", "GET /api/v1/events", 1),
            ("read_event", "GET /api/v1/events/{id}", 1),
            ("query", "GET /api/v1/subjects/{sub}/logouts", 1),
            ("export", "GET /api/v1/export", 1),
            ("report", "GET /api/v1/reports/summary", 1),
        ]
    );
    for d in &access {
        assert_eq!(
            (d["who"].as_str(), d["via"].as_str()),
            (Some(API_LABEL), Some("api"))
        );
    }
    assert_eq!(access[0]["filters"]["meta.org_id"], "acme");
    assert_eq!(access[2]["filters"]["sub"], "auth0|alice");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("logout_ledger_session_checks_total{logged_out=\"true\"} 1"),
        "{metrics}"
    );
    let listed = app.api_get("/api/v1/events?kind=access&order=asc").await;
    assert_eq!(
        ids(&listed.body).len(),
        5,
        "reads of the access log are listed too"
    );
}

both_backends!(the_openapi_document_describes_exactly_the_served_routes);
async fn the_openapi_document_describes_exactly_the_served_routes() {
    let app = spawn_api_app().await;
    logout(&app, "auth0|alice", Some("s1"), None).await;
    let id = app.last_record().await.id;
    let doc = app.api_get_as("/api/v1/openapi.json", None).await.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 11);
    for (path, item) in paths {
        if item.get("post").is_some() {
            // The one change (a delivery retry) is tested in tests/api/deliveries.rs.
            assert_eq!(path, "/api/v1/deliveries/retry");
            continue;
        }
        let op = &item["get"];
        let concrete = path
            .replace("{id}", &id.to_string())
            .replace("{sid}", "s1")
            .replace("{sub}", "auth0%7Calice");
        let mut query = Vec::new();
        for p in op["parameters"].as_array().expect("parameters") {
            if p["in"] == "query" && p["required"] == true {
                let value = match p["name"].as_str() {
                    Some("format") => "csv",
                    Some("group_by") => "outcome",
                    other => panic!("required {other:?}"),
                };
                query.push(format!("{}={value}", p["name"].as_str().unwrap_or("")));
            }
        }
        let url = format!("{concrete}?{}", query.join("&"));
        // No checkpoint covers the record here: the proof answers 409 `not_checkpointed`.
        let expected = if path.ends_with("/proof") { 409 } else { 200 };
        assert_eq!(app.api_get(&url).await.status, expected, "{url}");
        if op["security"] != json!([]) {
            assert_eq!(app.api_get_as(&url, None).await.status, 401, "{url}");
        }
    }
    assert_eq!(app.api_get("/api/v1/sessions").await.status, 404);
    assert_eq!(app.api_get("/api/v1/nothing").await.status, 404);
    let record = &events(&app, "").await["events"][0];
    let fields: HashSet<&String> = record.as_object().expect("record").keys().collect();
    let documented: HashSet<&String> = doc["components"]["schemas"]["Record"]["properties"]
        .as_object()
        .expect("record schema")
        .keys()
        .collect();
    assert_eq!(fields, documented, "the Record schema names every field");
}

both_backends!(summaries_count_per_outcome_reason_day_and_metadata_value);
async fn summaries_count_per_outcome_reason_day_and_metadata_value() {
    let app = spawn_api_app().await;
    for org in ["acme", "acme", "globex"] {
        logout(
            &app,
            "auth0|u",
            Some(&format!("s-{org}-{}", rand_suffix())),
            Some(json!({"org_id": org})),
        )
        .await;
    }
    assert_eq!(app.post_token("garbage").await.status, 400);
    let s = app
        .api_get("/api/v1/reports/summary?group_by=outcome")
        .await
        .body;
    assert_eq!(s["total"], 4);
    assert_eq!(
        s["groups"],
        json!([
            {"key": {"outcome": "accepted"}, "count": 3},
            {"key": {"outcome": "rejected"}, "count": 1},
        ])
    );
    let s = app
        .api_get("/api/v1/reports/summary?group_by=day&group_by=meta:org_id&verified=true")
        .await
        .body;
    let groups = s["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{s}");
    assert_eq!(groups[0]["key"]["meta:org_id"], "acme");
    assert_eq!(groups[0]["count"], 2);
    assert!(
        groups[0]["key"]["day"]
            .as_str()
            .is_some_and(|d| d.len() == 10)
    );
    let r = app
        .api_get("/api/v1/reports/summary?group_by=reason&outcome=rejected")
        .await
        .body;
    assert_eq!(
        r["groups"],
        json!([{"key": {"reason": "malformed_token"}, "count": 1}])
    );
}

fn rand_suffix() -> String {
    logout_ledger::local_issuer::random_id()
}
