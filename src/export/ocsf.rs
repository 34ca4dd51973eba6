//! Logout records as OCSF (Open Cybersecurity Schema Framework, 1.3.0) Authentication events:
//! class 3002, activity 2 (Logoff), one JSON object a line.
//!
//! Mapping: `time` = received_at (ms); `status_id` 1 (Success) for accepted and duplicate,
//! 2 (Failure) for rejected, with the rejection code in `status_code` and its detail in
//! `status_detail`; `user.uid` = sub; `session.uid` = sid and `session.issuer` = iss;
//! `auth_protocol_id` 4 (OpenID); `src_endpoint.ip` = the sender's address;
//! `http_request` = the POST to `/backchannel-logout` with its user agent; `service.uid` = the
//! audience (the relying party's client id); `metadata.uid` = the record id, `metadata.product`
//! = logout-ledger and its version, `metadata.correlation_uid` = jti. Everything OCSF has no
//! attribute for — the session metadata, its status, the HTTP status answered, the token's hash
//! and length, alg/kid/typ, iat/exp, duplicate_of, claims_verified and, for a logout refused
//! before its signature verified, the `unverified` values (never `user`, `session` or
//! `service`: those hold verified claims only) — is under `unmapped`, with the CLI's field
//! names.

use serde_json::{Map, Value, json};

use super::ExportError;
use crate::clock::parse_rfc3339_millis;
use crate::store::StoredRecord;

/// The OCSF schema version written in `metadata.version`.
pub const OCSF_VERSION: &str = "1.3.0";

/// Inserts `value` unless it is null.
fn put(m: &mut Map<String, Value>, key: &str, value: Value) {
    if !value.is_null() {
        m.insert(key.into(), value);
    }
}

/// An object of the non-null pairs.
fn object(pairs: &[(&str, Value)]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        put(&mut m, k, v.clone());
    }
    Value::Object(m)
}

/// One logout record as an OCSF Authentication Logoff event.
pub fn event(r: &StoredRecord) -> Result<Value, ExportError> {
    if r.kind != "logout" {
        return Err(ExportError::Encode {
            id: r.id,
            message: format!("OCSF export covers logout records, not {}", r.kind),
        });
    }
    let time = parse_rfc3339_millis(&r.received_at)
        .map_err(|message| ExportError::Encode { id: r.id, message })?;
    let mut e = class();
    e.insert("time".into(), json!(time));
    status(&mut e, r);
    e.insert("auth_protocol_id".into(), json!(4));
    e.insert("auth_protocol".into(), json!("OpenID"));
    parties(&mut e, r);
    e.insert("metadata".into(), metadata(r));
    e.insert("unmapped".into(), unmapped(r));
    Ok(Value::Object(e))
}

/// What every event is: an Authentication Logoff.
fn class() -> Map<String, Value> {
    let mut e = Map::new();
    e.insert("activity_id".into(), json!(2));
    e.insert("activity_name".into(), json!("Logoff"));
    e.insert("category_uid".into(), json!(3));
    e.insert(
        "category_name".into(),
        json!("Identity & Access Management"),
    );
    e.insert("class_uid".into(), json!(3002));
    e.insert("class_name".into(), json!("Authentication"));
    e.insert("type_uid".into(), json!(300_202));
    e.insert("type_name".into(), json!("Authentication: Logoff"));
    e
}

/// Success or failure, its severity, the rejection and a one-line message.
fn status(e: &mut Map<String, Value>, r: &StoredRecord) {
    let success = r.outcome.as_deref() != Some("rejected");
    let (status_id, status, severity_id, severity) = if success {
        (1, "Success", 1, "Informational")
    } else {
        (2, "Failure", 2, "Low")
    };
    let message = match (r.outcome.as_deref(), &r.reason) {
        (Some("duplicate"), _) => "Back-Channel Logout re-delivered (duplicate)".to_owned(),
        (_, Some(reason)) => format!("Back-Channel Logout rejected: {reason}"),
        _ => "Back-Channel Logout accepted".to_owned(),
    };
    e.insert("severity_id".into(), json!(severity_id));
    e.insert("severity".into(), json!(severity));
    e.insert("status_id".into(), json!(status_id));
    e.insert("status".into(), json!(status));
    put(e, "status_code", json!(r.reason));
    put(e, "status_detail", json!(r.reason_detail));
    e.insert("message".into(), json!(message));
}

/// Who logged out of what (verified claims only), and who sent the request.
fn parties(e: &mut Map<String, Value>, r: &StoredRecord) {
    let service = match r.aud.as_deref() {
        Some([one]) => object(&[("uid", json!(one)), ("name", json!(one))]),
        _ => Value::Null,
    };
    e.insert("user".into(), object(&[("uid", json!(r.sub))]));
    e.insert(
        "session".into(),
        object(&[("uid", json!(r.sid)), ("issuer", json!(r.iss))]),
    );
    put(e, "service", service);
    put(
        e,
        "src_endpoint",
        r.source_ip
            .as_ref()
            .map_or(Value::Null, |ip| json!({ "ip": ip })),
    );
    e.insert(
        "http_request".into(),
        object(&[
            ("http_method", json!("POST")),
            ("url", json!({ "path": "/backchannel-logout" })),
            ("user_agent", json!(r.user_agent)),
        ]),
    );
}

/// The event's own metadata: schema version, product, record id, the token's `jti`.
fn metadata(r: &StoredRecord) -> Value {
    object(&[
        ("version", json!(OCSF_VERSION)),
        (
            "product",
            json!({
                "name": "logout-ledger",
                "vendor_name": "logout-ledger",
                "version": env!("CARGO_PKG_VERSION"),
            }),
        ),
        ("uid", json!(r.id.to_string())),
        ("log_name", json!("audit_events")),
        ("original_time", json!(r.received_at)),
        ("correlation_uid", json!(r.jti)),
    ])
}

/// Everything OCSF has no attribute for, under the CLI's field names.
fn unmapped(r: &StoredRecord) -> Value {
    object(&[
        ("outcome", json!(r.outcome)),
        ("http_status", json!(r.http_status)),
        ("session_metadata", json!(r.session_metadata)),
        ("metadata_status", json!(r.metadata_status)),
        ("metadata_error", json!(r.metadata_error)),
        ("jti", json!(r.jti)),
        ("aud", json!(r.aud)),
        ("iat", json!(r.iat)),
        ("exp", json!(r.exp)),
        ("alg", json!(r.alg)),
        ("kid", json!(r.kid)),
        ("typ", json!(r.typ)),
        ("token_sha256", json!(r.token_sha256)),
        ("token_bytes", json!(r.token_bytes)),
        ("duplicate_of", json!(r.duplicate_of)),
        ("claims_verified", json!(r.claims_verified)),
        ("unverified", json!(r.unverified)),
    ])
}
