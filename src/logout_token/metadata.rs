//! Auth0's `session_metadata` claim: parsed against Auth0's published limits.
//!
//! Metadata that breaks the limits does not make the logout invalid (the issuer signed it); it
//! is stored as received, marked `invalid` with the reason, so compliance can find it.

use serde_json::Value;

/// Most key/value pairs Auth0 allows.
pub const MAX_PAIRS: usize = 25;
/// Longest key or value, in Unicode scalar values.
pub const MAX_CHARS: usize = 255;
/// Largest invalid metadata JSON stored verbatim; beyond it a marker is stored instead.
pub const MAX_STORED_BYTES: usize = 16 * 1024;

/// Whether the claim was present and within limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataStatus {
    /// No `session_metadata` claim.
    Absent,
    /// Present and within every limit.
    Ok,
    /// Present but breaking a limit (see the error).
    Invalid,
}

impl MetadataStatus {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            MetadataStatus::Absent => "absent",
            MetadataStatus::Ok => "ok",
            MetadataStatus::Invalid => "invalid",
        }
    }
}

/// The result of reading `session_metadata`: what to store and how to index it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMetadata {
    /// Status of the claim.
    pub status: MetadataStatus,
    /// Why it is invalid, when it is.
    pub error: Option<String>,
    /// The JSON to store: as received, or a size marker beyond [`MAX_STORED_BYTES`].
    pub stored_json: Option<String>,
    /// The pairs, for indexing; empty unless the status is `Ok`.
    pub pairs: Vec<(String, String)>,
}

fn key_is_valid(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_CHARS
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check(value: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = value else {
        return Err("session_metadata is not a JSON object".into());
    };
    if map.len() > MAX_PAIRS {
        return Err(format!("{} pairs, at most {MAX_PAIRS} allowed", map.len()));
    }
    let mut pairs = Vec::with_capacity(map.len());
    for (key, v) in map {
        if !key_is_valid(key) {
            let shown: String = key.chars().take(40).collect();
            return Err(format!(
                "key {shown:?} must be 1-{MAX_CHARS} characters of ASCII letters, digits, '_' or '-'"
            ));
        }
        let Value::String(s) = v else {
            return Err(format!("value of {key:?} is not a string"));
        };
        if s.contains('\0') {
            // Not storable as text (PostgreSQL) nor as jsonb: refused on every backend alike.
            return Err(format!("value of {key:?} contains a NUL character"));
        }
        let n = s.chars().count();
        if n > MAX_CHARS {
            return Err(format!(
                "value of {key:?} has {n} characters, at most {MAX_CHARS} allowed"
            ));
        }
        pairs.push((key.clone(), s.clone()));
    }
    Ok(pairs)
}

impl SessionMetadata {
    /// Reads the claim (or its absence).
    pub fn from_claim(claim: Option<&Value>) -> Self {
        let Some(value) = claim else {
            return Self {
                status: MetadataStatus::Absent,
                error: None,
                stored_json: None,
                pairs: Vec::new(),
            };
        };
        let json = value.to_string();
        match check(value) {
            // Valid metadata is bounded by the limits themselves (25 pairs of 255 characters),
            // so it is stored whole, even when multi-byte characters take it past 16 KiB.
            Ok(pairs) => Self {
                status: MetadataStatus::Ok,
                error: None,
                stored_json: Some(json),
                pairs,
            },
            Err(error) => {
                let stored = if json.len() > MAX_STORED_BYTES {
                    serde_json::json!({ "$truncated": { "bytes": json.len() } }).to_string()
                } else {
                    json
                };
                Self {
                    status: MetadataStatus::Invalid,
                    error: Some(error),
                    stored_json: Some(stored),
                    pairs: Vec::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full(pairs: usize, key_len: usize, value: &str) -> Value {
        let mut m = serde_json::Map::new();
        for i in 0..pairs {
            let key = format!("{i:0>width$}", width = key_len);
            m.insert(key, Value::String(value.to_owned()));
        }
        Value::Object(m)
    }

    #[test]
    fn absent_is_absent() {
        let m = SessionMetadata::from_claim(None);
        assert_eq!(m.status, MetadataStatus::Absent);
        assert!(m.stored_json.is_none());
    }

    #[test]
    fn limits_are_inclusive() {
        let v = "é".repeat(MAX_CHARS);
        let m = SessionMetadata::from_claim(Some(&full(MAX_PAIRS, MAX_CHARS, &v)));
        assert_eq!(m.status, MetadataStatus::Ok, "{:?}", m.error);
        assert_eq!(m.pairs.len(), MAX_PAIRS);
    }

    #[test]
    fn each_limit_is_enforced() {
        let cases = [
            full(MAX_PAIRS + 1, 2, "v"),
            full(1, MAX_CHARS + 1, "v"),
            full(1, 2, &"x".repeat(MAX_CHARS + 1)),
            json!({"": "v"}),
            json!({"bad key": "v"}),
            json!({"k": {"nested": "x"}}),
            json!({"k": 1}),
            json!(["a"]),
        ];
        for case in cases {
            let m = SessionMetadata::from_claim(Some(&case));
            assert_eq!(m.status, MetadataStatus::Invalid, "{case}");
            assert!(m.error.is_some());
            assert!(m.pairs.is_empty());
            assert!(m.stored_json.is_some());
        }
    }

    #[test]
    fn huge_metadata_is_replaced_by_a_marker() {
        let big = full(200, 10, &"x".repeat(200));
        let m = SessionMetadata::from_claim(Some(&big));
        assert_eq!(m.status, MetadataStatus::Invalid);
        let stored = m.stored_json.expect("marker");
        assert!(
            stored.len() < 100 && stored.contains("$truncated"),
            "{stored}"
        );
    }
}
