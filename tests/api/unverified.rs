//! What a request refused before its signature verified may leave in the store: no claim, at
//! most 1 KiB of what it sent, nothing any claim filter, metadata query or grouping answers
//! with; records of old stores are cleaned by migration 0003 and shown the same way; and every
//! record names the HTTP status it answered with.

use std::process::Command;
use std::time::Duration;

use logout_ledger::store::chain::EventRow;
use logout_ledger::store::{AuditStore, EventFilter, KindFilter, Order};
use serde_json::{Map, Value, json};
use sqlx::{Connection, Row};

use crate::helpers::{AUDIENCE, TestApp, TestDb, both_backends, spawn_api_app, spawn_app_with};
use crate::query_api::logout;

const BIN: &str = env!("CARGO_BIN_EXE_logout-ledger");

/// One row of `sql` (every column cast to text by the query), NULL as `None`, on either backend.
async fn texts(db: &TestDb, sql: &str) -> Vec<Option<String>> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if db.path.is_some() {
        let mut c = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("open");
        let row = sqlx::query(sql).fetch_one(&mut c).await.expect("query");
        (0..row.len())
            .map(|i| row.try_get::<Option<String>, _>(i).expect("text"))
            .collect()
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("open");
        let row = sqlx::query(sql).fetch_one(&mut c).await.expect("query");
        (0..row.len())
            .map(|i| row.try_get::<Option<String>, _>(i).expect("text"))
            .collect()
    }
}

/// A `COUNT(*)` (or any one integer) on either backend.
async fn count(db: &TestDb, sql: &str) -> i64 {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if db.path.is_some() {
        let mut c = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("open");
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("count")
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("open");
        sqlx::query_scalar(sql)
            .fetch_one(&mut c)
            .await
            .expect("count")
    }
}

/// Runs statements on either backend, as someone with direct database access would.
async fn execute(db: &TestDb, statements: &[String]) {
    if db.path.is_some() {
        let mut c = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("open");
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("open");
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }
}

/// Rows of `metadata_pairs` of one record.
async fn pairs_of(db: &TestDb, id: i64) -> i64 {
    count(
        db,
        &format!("SELECT COUNT(*) FROM metadata_pairs WHERE event_id = {id}"),
    )
    .await
}

/// Whether every claim column of record `id` (and what derives from claims) is NULL.
async fn claim_columns_null(db: &TestDb, id: i64) -> bool {
    let sql = format!(
        "SELECT COUNT(*) FROM audit_events WHERE id = {id} AND iss IS NULL AND sub IS NULL \
         AND sid IS NULL AND jti IS NULL AND aud IS NULL AND iat IS NULL AND exp IS NULL \
         AND alg IS NULL AND kid IS NULL AND typ IS NULL AND events IS NULL \
         AND session_metadata IS NULL AND metadata_status IS NULL AND metadata_error IS NULL \
         AND key_set_digest IS NULL AND token IS NULL"
    );
    count(db, &sql).await == 1
}

/// The ids of `GET /api/v1/events?{query}` (asserting 200).
async fn event_ids(app: &TestApp, query: &str) -> Vec<i64> {
    let a = app.api_get(&format!("/api/v1/events?{query}")).await;
    assert_eq!(a.status, 200, "{query}: {}", a.body);
    a.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

/// The group keys of `GET /api/v1/reports/summary?group_by={dimension}`, with their counts.
async fn groups(app: &TestApp, dimension: &str) -> Vec<(Value, i64)> {
    let a = app
        .api_get(&format!("/api/v1/reports/summary?group_by={dimension}"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["key"][dimension].clone(),
                g["count"].as_i64().expect("count"),
            )
        })
        .collect()
}

/// Runs `logout-ledger query --format ndjson` with `args`; the output's lines.
fn cli_query(app: &TestApp, args: &[&str]) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["query", "--database", &app.db.url, "--format", "ndjson"])
        .args(args)
        .output()
        .expect("run query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Every record read both ways: NDJSON built by the database (the fast path) and records
/// decoded and serialised (the slow path). They must be the same bytes.
async fn assert_both_paths_agree(app: &TestApp) {
    let reader = AuditStore::open_reader(&app.db.url).await.expect("reader");
    let f = EventFilter {
        kind: KindFilter::All,
        order: Order::Asc,
        limit: 10_000,
        ..EventFilter::default()
    };
    let fast = reader.ndjson_page(&f).await.expect("page");
    let slow: Vec<String> = reader
        .query(&f)
        .await
        .expect("query")
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert_eq!(fast.lines.split('\n').collect::<Vec<_>>(), slow);
}

/// A compact JWS whose signature is four zero bytes: signed by nobody.
fn unsigned(header: &Value, claims: &Map<String, Value>) -> String {
    format!(
        "{}.AAAAAA",
        logout_ledger::local_issuer::signing_input(header, claims)
    )
}

/// Session metadata of 25 pairs, `org_id` = `org` among them.
fn metadata(org: &str) -> Value {
    let mut m = Map::new();
    m.insert("org_id".into(), json!(org));
    for i in 1..25 {
        m.insert(
            format!("k{i:02}"),
            json!(format!("value-{i}-{}", "v".repeat(200))),
        );
    }
    Value::Object(m)
}

/// The request-derived bytes a stored record holds: reason, detail, the token's hash, source,
/// user agent and details.
async fn request_bytes(db: &TestDb, id: i64) -> usize {
    let row = texts(
        db,
        &format!(
            "SELECT reason, reason_detail, source_ip, user_agent, details, \
             CAST(length(token_sha256) AS TEXT) FROM audit_events WHERE id = {id}"
        ),
    )
    .await;
    let hash: usize = row[5].as_deref().unwrap_or("0").parse().expect("length");
    assert_eq!(hash, 32);
    row[..5]
        .iter()
        .map(|v| v.as_ref().map_or(0, String::len))
        .sum::<usize>()
        + hash
}

both_backends!(a_large_forgery_from_an_unknown_issuer_leaves_no_claim_and_at_most_a_kibibyte);
async fn a_large_forgery_from_an_unknown_issuer_leaves_no_claim_and_at_most_a_kibibyte() {
    let app = spawn_api_app().await;
    logout(
        &app,
        "auth0|alice",
        Some("s-alice"),
        Some(json!({"org_id": "acme"})),
    )
    .await;
    let forger = format!("https://forger.example/{}", "i".repeat(1000));
    let header = json!({"alg": "RS256", "kid": "k".repeat(600), "typ": "t".repeat(600)});
    let mut claims = app.claims();
    claims.insert("iss".into(), json!(forger));
    claims.insert("sub".into(), json!("auth0|victim"));
    claims.insert("sid".into(), json!("forged-sid"));
    claims.insert("aud".into(), json!([AUDIENCE, "other"]));
    claims.insert("session_metadata".into(), metadata("forged-org"));
    let short = unsigned(&header, &claims).len();
    claims.insert("pad".into(), json!("p".repeat((58 * 1024 - short) * 3 / 4)));
    let token = unsigned(&header, &claims);
    assert!(
        (56 * 1024..60 * 1024).contains(&token.len()),
        "{}",
        token.len()
    );

    let r = app
        .client
        .post(app.url("/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", format!("Mozilla/{}", "m".repeat(300)))
        .body(format!(
            "logout_token={}",
            crate::helpers::urlencode(&token)
        ))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("json");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.starts_with("unknown_issuer:"))
    );

    let record = app.last_record().await;
    let id = record.id;
    assert_eq!(record.reason.as_deref(), Some("unknown_issuer"));
    assert!(
        claim_columns_null(&app.db, id).await,
        "claim columns filled"
    );
    assert_eq!(pairs_of(&app.db, id).await, 0);
    let bytes = request_bytes(&app.db, id).await;
    assert!(bytes <= 1024, "{bytes} request-derived bytes");
    let detail = record.reason_detail.clone().expect("detail");
    assert!(
        detail.chars().count() <= 200 && detail.starts_with("issuer \"https://forger.example/"),
        "{detail}"
    );
    let stored = texts(
        &app.db,
        &format!("SELECT details, CAST(http_status AS TEXT) FROM audit_events WHERE id = {id}"),
    )
    .await;
    let details: Value =
        serde_json::from_str(stored[0].as_deref().expect("details")).expect("JSON");
    assert_eq!(stored[1].as_deref(), Some("400"));
    let unverified = &details["unverified"];
    assert_eq!(
        unverified["iss"],
        json!(forger.chars().take(128).collect::<String>())
    );
    assert_eq!(unverified["kid"], json!("k".repeat(128)));
    assert_eq!(unverified["typ"], json!("t".repeat(128)));
    assert_eq!(unverified["alg"], "RS256");
    assert_eq!(details["token_bytes"], json!(token.len()));

    // As presented: no claims, the unverified values apart, the status and the length.
    assert_eq!(
        (
            &record.iss,
            &record.sub,
            &record.sid,
            &record.aud,
            &record.kid
        ),
        (&None, &None, &None, &None, &None)
    );
    assert_eq!(
        (
            &record.session_metadata,
            &record.metadata_status,
            &record.details
        ),
        (&None, &None, &None)
    );
    assert_eq!(record.unverified.as_ref(), Some(unverified));
    assert_eq!(record.http_status, Some(400));
    assert_eq!(record.token_bytes, i64::try_from(token.len()).ok());
    assert_eq!(record.user_agent.as_ref().map(String::len), Some(128));

    // No claim filter, metadata query or grouping sees it; outcome, reason and exports do.
    let iss = crate::helpers::urlencode(&forger);
    let cut = crate::helpers::urlencode(&forger.chars().take(128).collect::<String>());
    for query in [
        format!("iss={iss}"),
        format!("iss={cut}"),
        "sub=auth0%7Cvictim".into(),
        "sid=forged-sid".into(),
        "meta.org_id=forged-org".into(),
        format!("meta.k01=value-1-{}", "v".repeat(200)),
    ] {
        assert_eq!(event_ids(&app, &query).await, Vec::<i64>::new(), "{query}");
    }
    let alice = app.records().await[0].id;
    assert_eq!(event_ids(&app, "has_meta=org_id").await, vec![alice]);
    assert_eq!(event_ids(&app, "has_meta=k01").await, Vec::<i64>::new());
    let by_issuer = groups(&app, "issuer").await;
    assert_eq!(
        by_issuer,
        vec![(Value::Null, 1), (json!(app.op.issuer()), 1)],
        "the forgery counts under no issuer"
    );
    let by_org = groups(&app, "meta:org_id").await;
    assert_eq!(by_org, vec![(Value::Null, 1), (json!("acme"), 1)]);
    let subject = app.api_get("/api/v1/subjects/auth0%7Cvictim/logouts").await;
    assert_eq!(subject.body["events"], json!([]));
    assert_eq!(event_ids(&app, "outcome=rejected").await, vec![id]);
    let listed = app.api_get("/api/v1/events?reason=unknown_issuer").await;
    let shown = &listed.body["events"][0];
    assert_eq!(shown["id"], id);
    assert_eq!(shown["unverified"], *unverified);
    assert_eq!(shown["http_status"], 400);
    assert_eq!(shown["token_bytes"], json!(token.len()));
    assert_eq!(shown["iss"], Value::Null);

    let (status, ndjson) = app
        .api_text("/api/v1/export?format=ndjson&outcome=rejected")
        .await;
    assert_eq!(status, 200);
    let line: Value = serde_json::from_str(ndjson.trim_end()).expect("one line");
    assert_eq!(line, *shown);
    let (_, csv) = app
        .api_text("/api/v1/export?format=csv&reason=unknown_issuer")
        .await;
    let rows: Vec<&str> = csv.split("\r\n").collect();
    assert!(
        rows[0].contains(",unverified,") && rows[0].contains(",http_status,"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].contains("\"{\"\"alg\"\":\"\"RS256\"\""),
        "{}",
        rows[1]
    );
    let (_, ocsf) = app
        .api_text("/api/v1/export?format=ocsf&outcome=rejected")
        .await;
    let event: Value = serde_json::from_str(ocsf.trim_end()).expect("OCSF");
    assert_eq!(event["unmapped"]["unverified"], *unverified);
    assert_eq!(
        event["session"],
        json!({}),
        "no issuer or session from a forgery"
    );

    for args in [
        vec!["--sub", "auth0|victim"],
        vec!["--iss", &forger],
        vec!["--sid", "forged-sid"],
        vec!["--meta", "org_id=forged-org"],
        vec!["--has-meta", "k01"],
    ] {
        assert_eq!(cli_query(&app, &args), Vec::<Value>::new(), "{args:?}");
    }
    let by_reason = cli_query(&app, &["--reason", "unknown_issuer"]);
    assert_eq!(by_reason.len(), 1);
    assert_eq!(by_reason[0]["unverified"], *unverified);
    assert_both_paths_agree(&app).await;
}

both_backends!(a_bad_signature_under_the_real_issuer_leaves_no_claim_either);
async fn a_bad_signature_under_the_real_issuer_leaves_no_claim_either() {
    let app = spawn_api_app().await;
    app.op.add_unpublished_rsa("forger").await.expect("key");
    let mut claims = app.claims();
    claims.insert("sub".into(), json!("auth0|sig-victim"));
    claims.insert("session_metadata".into(), metadata("sig-org"));
    let token = app
        .op
        .sign_with_header("forger", &json!({"alg": "RS256", "kid": "rsa-1"}), &claims)
        .expect("sign");
    let a = app.post_token(&token).await;
    assert_eq!((a.status, a.code()), (400, "bad_signature"));
    let record = app.last_record().await;
    assert!(claim_columns_null(&app.db, record.id).await);
    assert_eq!(pairs_of(&app.db, record.id).await, 0);
    assert!(request_bytes(&app.db, record.id).await <= 1024);
    let u = record.unverified.clone().expect("unverified");
    assert_eq!(
        (&u["iss"], &u["alg"], &u["kid"], &u["typ"]),
        (
            &json!(app.op.issuer()),
            &json!("RS256"),
            &json!("rsa-1"),
            &Value::Null
        )
    );
    for query in [
        "sub=auth0%7Csig-victim",
        "meta.org_id=sig-org",
        "has_meta=org_id",
    ] {
        assert_eq!(event_ids(&app, query).await, Vec::<i64>::new(), "{query}");
    }
    let iss = crate::helpers::urlencode(app.op.issuer());
    assert_eq!(
        event_ids(&app, &format!("iss={iss}")).await,
        Vec::<i64>::new()
    );
    assert_eq!(groups(&app, "issuer").await, vec![(Value::Null, 1)]);
    assert_eq!(
        event_ids(&app, "reason=bad_signature").await,
        vec![record.id]
    );
    assert_both_paths_agree(&app).await;
}

both_backends!(an_unsigned_token_without_iss_leaves_no_claim_and_no_metadata);
async fn an_unsigned_token_without_iss_leaves_no_claim_and_no_metadata() {
    // Found by the validator fuzz target: a missing `iss` was `missing_claim`, a rule after the
    // signature, so an unsigned token's claims and metadata were stored as verified.
    let app = spawn_api_app().await;
    let mut claims = app.claims();
    claims.remove("iss");
    claims.insert("sub".into(), json!("auth0|no-iss-victim"));
    claims.insert("session_metadata".into(), metadata("no-iss-org"));
    let token = unsigned(&json!({"alg": "RS256", "kid": "rsa-1"}), &claims);
    let a = app.post_token(&token).await;
    assert_eq!(
        (a.status, a.code()),
        (400, "unknown_issuer"),
        "{:?}",
        a.body
    );
    let record = app.last_record().await;
    assert_eq!(record.claims_verified, Some(false));
    assert!(claim_columns_null(&app.db, record.id).await);
    assert_eq!(pairs_of(&app.db, record.id).await, 0);
    for query in [
        "sub=auth0%7Cno-iss-victim",
        "meta.org_id=no-iss-org",
        "has_meta=org_id",
    ] {
        assert_eq!(event_ids(&app, query).await, Vec::<i64>::new(), "{query}");
    }
}

both_backends!(rejections_after_the_signature_keep_their_claims_and_metadata);
async fn rejections_after_the_signature_keep_their_claims_and_metadata() {
    let app = spawn_api_app().await;
    let now = logout_ledger::clock::Clock::now_secs(&logout_ledger::clock::SystemClock);
    let mut wrong_audience = app.claims();
    wrong_audience.insert("aud".into(), json!("other-app"));
    wrong_audience.insert("sub".into(), json!("auth0|late"));
    wrong_audience.insert("session_metadata".into(), json!({"org_id": "signed-org"}));
    let mut expired = wrong_audience.clone();
    expired.insert("aud".into(), json!(AUDIENCE));
    expired.insert("iat".into(), json!(now - 200));
    expired.insert("exp".into(), json!(now - 80));
    let mut ids = Vec::new();
    for (claims, code) in [(wrong_audience, "wrong_audience"), (expired, "expired")] {
        let a = app.post_token(&app.sign(&claims)).await;
        assert_eq!((a.status, a.code()), (400, code));
        let r = app.last_record().await;
        assert_eq!(r.sub.as_deref(), Some("auth0|late"));
        assert_eq!(r.iss.as_deref(), Some(app.op.issuer()));
        assert_eq!(r.metadata_status.as_deref(), Some("ok"));
        assert_eq!(
            (&r.unverified, &r.token_bytes, &r.details),
            (&None, &None, &None)
        );
        assert_eq!(r.http_status, Some(400));
        assert_eq!(pairs_of(&app.db, r.id).await, 1);
        ids.push(r.id);
    }
    assert_eq!(
        event_ids(&app, "meta.org_id=signed-org&order=asc").await,
        ids
    );
    assert_eq!(event_ids(&app, "sub=auth0%7Clate&order=asc").await, ids);
    assert_eq!(event_ids(&app, "has_meta=org_id&order=asc").await, ids);
    assert_eq!(
        groups(&app, "issuer").await,
        vec![(json!(app.op.issuer()), 2)]
    );
    assert_both_paths_agree(&app).await;
}

/// Appends a record shaped as the service wrote unverified rejections before this change
/// (claims filled, metadata pairs indexed), chained correctly, with direct database access.
async fn append_legacy_row(db: &TestDb) -> i64 {
    let last = texts(
        db,
        "SELECT CAST(id AS TEXT) FROM audit_events ORDER BY id DESC LIMIT 1",
    )
    .await;
    let last_id: i64 = last[0].as_deref().expect("id").parse().expect("id");
    let prev: [u8; 32] = if db.path.is_some() {
        let mut c = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("open");
        let h: Vec<u8> = sqlx::query_scalar("SELECT entry_hash FROM audit_events WHERE id = ?")
            .bind(last_id)
            .fetch_one(&mut c)
            .await
            .expect("hash");
        h.try_into().expect("32 bytes")
    } else {
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("open");
        let h: Vec<u8> = sqlx::query_scalar("SELECT entry_hash FROM audit_events WHERE id = $1")
            .bind(last_id)
            .fetch_one(&mut c)
            .await
            .expect("hash");
        h.try_into().expect("32 bytes")
    };
    let now = logout_ledger::clock::Clock::now_millis(&logout_ledger::clock::SystemClock);
    let row = EventRow {
        id: last_id + 1,
        kind: "logout".into(),
        received_at: now,
        outcome: Some("rejected".into()),
        http_status: Some(400),
        reason: Some("unknown_issuer".into()),
        reason_detail: Some("issuer \"https://forger.example/\" is not configured".into()),
        iss: Some("https://forger.example/".into()),
        sub: Some("auth0|legacy-victim".into()),
        sid: Some("legacy-sid".into()),
        jti: Some("legacy-jti".into()),
        aud: Some(format!("[\"{AUDIENCE}\"]")),
        iat: Some(now / 1000),
        exp: Some(now / 1000 + 120),
        alg: Some("RS256".into()),
        kid: Some("legacy-kid".into()),
        typ: Some("JWT".into()),
        events: Some("{\"http://schemas.openid.net/event/backchannel-logout\":{}}".into()),
        session_metadata: Some("{\"device\":\"forged\",\"org_id\":\"legacy-org\"}".into()),
        metadata_status: Some("ok".into()),
        source_ip: Some("127.0.0.1".into()),
        user_agent: Some("legacy".into()),
        token_sha256: Some(vec![9; 32]),
        claims_verified: Some(false),
        ..EventRow::default()
    };
    let hash = row.entry_hash(&prev, &mut Vec::new());
    let columns = "id, kind, received_at, outcome, http_status, reason, reason_detail, iss, sub, \
         sid, jti, aud, iat, exp, alg, kid, typ, events, session_metadata, metadata_status, \
         source_ip, user_agent, token_sha256, claims_verified, entry_hash";
    macro_rules! bind_row {
        ($q:expr) => {
            $q.bind(row.id)
                .bind(row.kind.clone())
                .bind(row.received_at)
                .bind(row.outcome.clone())
                .bind(row.http_status)
                .bind(row.reason.clone())
                .bind(row.reason_detail.clone())
                .bind(row.iss.clone())
                .bind(row.sub.clone())
                .bind(row.sid.clone())
                .bind(row.jti.clone())
                .bind(row.aud.clone())
                .bind(row.iat)
                .bind(row.exp)
                .bind(row.alg.clone())
                .bind(row.kid.clone())
                .bind(row.typ.clone())
                .bind(row.events.clone())
                .bind(row.session_metadata.clone())
                .bind(row.metadata_status.clone())
                .bind(row.source_ip.clone())
                .bind(row.user_agent.clone())
                .bind(row.token_sha256.clone())
                .bind(row.claims_verified)
                .bind(hash.to_vec())
        };
    }
    if db.path.is_some() {
        let marks = vec!["?"; 25].join(", ");
        let sql = format!("INSERT INTO audit_events ({columns}) VALUES ({marks})");
        let mut c = sqlx::SqliteConnection::connect(&db.url)
            .await
            .expect("open");
        bind_row!(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .execute(&mut c)
            .await
            .expect("insert");
    } else {
        let marks: Vec<String> = (1..=25)
            .map(|i| match i {
                3 => "ll_ts($3)".to_owned(),
                i => format!("${i}"),
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_events ({columns}) VALUES ({})",
            marks.join(", ")
        );
        let mut c = sqlx::PgConnection::connect(&db.url).await.expect("open");
        bind_row!(sqlx::query(sqlx::AssertSqlSafe(sql)))
            .execute(&mut c)
            .await
            .expect("insert");
    }
    let id = row.id;
    execute(
        db,
        &[format!(
            "INSERT INTO metadata_pairs (key, value, event_id) VALUES \
             ('org_id', 'legacy-org', {id}), ('device', 'forged', {id})"
        )],
    )
    .await;
    id
}

both_backends!(an_old_store_is_cleaned_by_migration_0003_and_still_verifies);
async fn an_old_store_is_cleaned_by_migration_0003_and_still_verifies() {
    let app = spawn_api_app().await;
    logout(
        &app,
        "auth0|alice",
        Some("s-alice"),
        Some(json!({"org_id": "acme"})),
    )
    .await;
    let alice = app.last_record().await.id;
    let (db, op, dir, settings) = (
        std::sync::Arc::clone(&app.db),
        std::sync::Arc::clone(&app.op),
        std::sync::Arc::clone(&app.dir),
        app.settings.clone(),
    );
    app.stop().await;
    // The store as it was before migration 0003: the row a forgery left, and its pairs.
    let legacy = append_legacy_row(&db).await;
    execute(
        &db,
        &["DELETE FROM _sqlx_migrations WHERE version = 3".to_owned()],
    )
    .await;
    assert_eq!(pairs_of(&db, legacy).await, 2);

    let app = crate::helpers::start(op, dir, db, settings, true).await;
    assert_eq!(
        pairs_of(&app.db, legacy).await,
        0,
        "migration 0003 removed them"
    );
    assert_eq!(pairs_of(&app.db, alice).await, 1, "verified pairs stay");
    assert_eq!(
        count(
            &app.db,
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 3"
        )
        .await,
        1
    );
    let out = Command::new(BIN)
        .args(["verify", "--database", &app.db.url])
        .output()
        .expect("verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("OK: the audit trail is intact"),
        "{text}"
    );

    // The old row's claims answer no claim filter and no grouping.
    for query in [
        "iss=https%3A%2F%2Fforger.example%2F",
        "sub=auth0%7Clegacy-victim",
        "sid=legacy-sid",
        "jti=legacy-jti",
        "meta.org_id=legacy-org",
        "has_meta=device",
    ] {
        assert_eq!(event_ids(&app, query).await, Vec::<i64>::new(), "{query}");
    }
    assert_eq!(event_ids(&app, "has_meta=org_id").await, vec![alice]);
    assert_eq!(
        groups(&app, "issuer").await,
        vec![(Value::Null, 1), (json!(app.op.issuer()), 1)]
    );
    assert_eq!(
        groups(&app, "meta:org_id").await,
        vec![(Value::Null, 1), (json!("acme"), 1)]
    );
    let session = app
        .api_get("/api/v1/sessions/legacy-sid?iss=https%3A%2F%2Fforger.example%2F")
        .await;
    assert_eq!(session.body["logged_out"], false);
    assert_eq!(
        cli_query(&app, &["--sub", "auth0|legacy-victim"]),
        Vec::<Value>::new()
    );

    // Presented without claims: what it said is under `unverified`.
    assert_eq!(event_ids(&app, "reason=unknown_issuer").await, vec![legacy]);
    let shown = app.api_get(&format!("/api/v1/events/{legacy}")).await.body;
    for claim in [
        "iss",
        "sub",
        "sid",
        "jti",
        "aud",
        "kid",
        "session_metadata",
        "metadata_status",
    ] {
        assert_eq!(shown[claim], Value::Null, "{claim}");
    }
    let u = &shown["unverified"];
    assert_eq!(u["iss"], "https://forger.example/");
    assert_eq!(u["sub"], "auth0|legacy-victim");
    assert_eq!(u["aud"], json!([AUDIENCE]));
    assert_eq!(u["session_metadata"]["org_id"], "legacy-org");
    assert_eq!(
        (&shown["http_status"], &shown["token_bytes"]),
        (&json!(400), &Value::Null)
    );
    let record = app
        .records()
        .await
        .into_iter()
        .find(|r| r.id == legacy)
        .expect("legacy record");
    assert_eq!(record.unverified.as_ref(), Some(u));
    assert_both_paths_agree(&app).await;
}

both_backends!(every_answer_records_and_shows_its_http_status);
async fn every_answer_records_and_shows_its_http_status() {
    let app = spawn_app_with(|s| {
        crate::helpers::with_api(s);
        s.keys.refresh_cooldown = Duration::ZERO;
    })
    .await;
    let token = app.valid_token();
    let mut answers = Vec::new();
    answers.push(("accepted", app.post_token(&token).await.status));
    answers.push(("duplicate", app.post_token(&token).await.status));
    answers.push(("malformed_token", app.post_token("garbage").await.status));
    let big = format!("logout_token={}", "a".repeat(70 * 1024));
    answers.push((
        "malformed_request",
        app.post_raw("application/x-www-form-urlencoded", big)
            .await
            .status,
    ));
    app.op.set_available(false);
    app.op.rotate_rsa("rsa-2", false).await.expect("rotate");
    let later = app.op.sign("rsa-2", "RS256", &app.claims()).expect("sign");
    answers.push(("keys_unavailable", app.post_token(&later).await.status));
    let statuses: Vec<u16> = answers.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, vec![200, 200, 400, 413, 503]);

    let records = app.records().await;
    assert_eq!(records.len(), answers.len());
    for (r, (what, status)) in records.iter().zip(&answers) {
        let code = r.reason.as_deref().or(r.outcome.as_deref());
        assert_eq!(code, Some(*what));
        assert_eq!(r.http_status, Some(i64::from(*status)), "{what}");
        let stored = texts(
            &app.db,
            &format!(
                "SELECT CAST(http_status AS TEXT) FROM audit_events WHERE id = {}",
                r.id
            ),
        )
        .await;
        assert_eq!(stored[0], Some(status.to_string()), "{what}");
        let one = app.api_get(&format!("/api/v1/events/{}", r.id)).await.body;
        assert_eq!(one["http_status"], json!(status), "{what}");
    }
    let page = app.api_get("/api/v1/events?order=asc").await.body;
    let listed: Vec<Value> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["http_status"].clone())
        .collect();
    assert_eq!(
        listed,
        statuses.iter().map(|s| json!(s)).collect::<Vec<_>>()
    );
    assert!(records[3].unverified.is_some() && records[4].unverified.is_some());
    assert_eq!(records[2].token_bytes, Some(7), "\"garbage\" is 7 bytes");
    assert_eq!(records[3].token_bytes, None, "no token was read");
    assert_both_paths_agree(&app).await;
}
