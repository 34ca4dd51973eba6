//! What a target receives: which records match its filters, and the JSON event built from a
//! stored record (the webhook body and the NATS message, the same bytes on every retry).

use serde_json::{Value, json};

use crate::config::DeliverySettings;
use crate::store::StoredRecord;

/// The event type of an accepted logout.
pub const ACCEPTED: &str = "logout.accepted";
/// The event type of a duplicate logout (delivered only to targets that ask for it).
pub const DUPLICATE: &str = "logout.duplicate";

/// The event type `target` gets for `record`, or `None` when its filters leave it out.
pub fn matches(target: &DeliverySettings, record: &StoredRecord) -> Option<&'static str> {
    if record.kind != "logout" {
        return None;
    }
    let event_type = match record.outcome.as_deref() {
        Some("accepted") if target.accepted => ACCEPTED,
        Some("duplicate") if target.duplicates => DUPLICATE,
        _ => return None,
    };
    if !target.issuers.is_empty()
        && !record
            .iss
            .as_ref()
            .is_some_and(|iss| target.issuers.contains(iss))
    {
        return None;
    }
    if !target.audiences.is_empty()
        && !record
            .aud
            .as_ref()
            .is_some_and(|aud| aud.iter().any(|a| target.audiences.contains(a)))
    {
        return None;
    }
    if !target.meta.is_empty() {
        let valid = record.metadata_status.as_deref() == Some("ok");
        let pairs = record.session_metadata.as_ref().and_then(Value::as_object);
        let holds = |k: &String, v: &String| {
            pairs.and_then(|p| p.get(k)).and_then(Value::as_str) == Some(v.as_str())
        };
        if !valid || !target.meta.iter().all(|(k, v)| holds(k, v)) {
            return None;
        }
    }
    Some(event_type)
}

/// The JSON event of one record: `{"type", "timestamp", "data": {...}}`, the timestamp being
/// the record's time.
pub fn body(event_type: &str, record: &StoredRecord) -> Vec<u8> {
    let metadata = match record.metadata_status.as_deref() {
        Some("ok") => record.session_metadata.clone().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let mut data = json!({
        "id": record.id,
        "received_at": record.received_at,
        "iss": record.iss,
        "sub": record.sub,
        "sid": record.sid,
        "jti": record.jti,
        "aud": record.aud,
        "session_metadata": metadata,
    });
    if let (Some(original), Some(obj)) = (record.duplicate_of, data.as_object_mut()) {
        obj.insert("duplicate_of".into(), json!(original));
    }
    let event = json!({
        "type": event_type,
        "timestamp": record.received_at,
        "data": data,
    });
    event.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::config::DeliveryKind;

    fn record(outcome: &str) -> StoredRecord {
        serde_json::from_value(json!({
            "id": 7, "kind": "logout", "received_at": "2026-12-07T10:00:00.000Z",
            "outcome": outcome, "iss": "https://acme.eu.auth0.com/", "sub": "auth0|bob",
            "sid": "s-1", "jti": "j-1", "aud": ["web-app", "api"],
            "session_metadata": {"org_id": "org_acme", "region": "eu"},
            "metadata_status": "ok", "claims_verified": true,
        }))
        .expect("a record")
    }

    fn target() -> DeliverySettings {
        let url = "https://app.example/logout".parse().expect("url");
        DeliverySettings::new("t", DeliveryKind::Backchannel { url })
    }

    #[test]
    fn every_filter_must_hold() {
        let r = record("accepted");
        assert_eq!(matches(&target(), &r), Some(ACCEPTED));
        assert_eq!(matches(&target(), &record("duplicate")), None);
        assert_eq!(matches(&target(), &record("rejected")), None);
        let dup = DeliverySettings {
            duplicates: true,
            ..target()
        };
        assert_eq!(matches(&dup, &record("duplicate")), Some(DUPLICATE));
        let other_issuer = DeliverySettings {
            issuers: vec!["https://other.example/".into()],
            ..target()
        };
        assert_eq!(matches(&other_issuer, &r), None);
        let audience = DeliverySettings {
            audiences: vec!["api".into()],
            ..target()
        };
        assert_eq!(matches(&audience, &r), Some(ACCEPTED));
        let org = |v: &str| DeliverySettings {
            meta: BTreeMap::from([("org_id".to_owned(), v.to_owned())]),
            ..target()
        };
        assert_eq!(matches(&org("org_acme"), &r), Some(ACCEPTED));
        assert_eq!(matches(&org("org_other"), &r), None);
        let mut invalid = r.clone();
        invalid.metadata_status = Some("invalid".into());
        assert_eq!(
            matches(&org("org_acme"), &invalid),
            None,
            "only valid metadata"
        );
    }

    #[test]
    fn the_event_names_the_record() {
        let body: serde_json::Value =
            serde_json::from_slice(&body(ACCEPTED, &record("accepted"))).expect("json");
        assert_eq!(body["type"], "logout.accepted");
        assert_eq!(body["timestamp"], "2026-12-07T10:00:00.000Z");
        assert_eq!(body["data"]["id"], 7);
        assert_eq!(body["data"]["session_metadata"]["org_id"], "org_acme");
        assert!(body["data"].get("duplicate_of").is_none());
    }
}
