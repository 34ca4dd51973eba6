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
