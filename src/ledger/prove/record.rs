//! The record an inclusion proof carries: one row's chained columns exactly as the canonical
//! encoding takes them (docs/audit-format.md), so a verifier recomputes its entry hash and sees
//! what the logged record says, not only that some hash is logged.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::clock::format_millis;
use crate::tlog::entry::{Cell, ColumnType, EventRow, LAYOUT, content_digest, encode_cell, finish};
use crate::util::hex;

/// The columns `verify-proof` shows, in this order, when the record has them.
const SHOWN: [&str; 11] = [
    "id",
    "kind",
    "outcome",
    "reason",
    "action",
    "received_at",
    "iss",
    "sub",
    "sid",
    "jti",
    "duplicate_of",
];

/// One column's value as hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn cell(&self) -> Cell<'_> {
        match self {
            Value::Null => Cell::Null,
            Value::Int(v) => Cell::Int(*v),
            Value::Text(t) => Cell::Text(t),
            Value::Blob(b) => Cell::Blob(b),
        }
    }
}

/// One record's chained columns in canonical order: a JSON object with every column of the
/// layout by name, values as hashed (integers, text, bytes as lowercase hex, or `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofRecord(Vec<Value>);

impl ProofRecord {
    /// The record as a stored row holds it.
    pub fn from_row(row: &EventRow) -> Self {
        Self(
            row.cells()
                .into_iter()
                .map(|c| match c {
                    Cell::Null => Value::Null,
                    Cell::Int(v) => Value::Int(v),
                    Cell::Text(t) => Value::Text(t.to_owned()),
                    Cell::Blob(b) => Value::Blob(b.to_vec()),
                })
                .collect(),
        )
    }

    /// The entry hash of this record after `prev`: the canonical encoding, as the writer hashes.
    pub fn entry_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut canonical = Vec::with_capacity(1024);
        for v in &self.0 {
            encode_cell(&mut canonical, v.cell());
        }
        finish(content_digest(&canonical), prev)
    }

    fn get(&self, column: &str) -> Option<&Value> {
        LAYOUT
            .iter()
            .position(|(name, _)| *name == column)
            .and_then(|i| self.0.get(i))
    }

    /// An integer column's value (`None` when NULL, unknown or not an integer).
    pub fn int(&self, column: &str) -> Option<i64> {
        match self.get(column) {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// A text column's value (`None` when NULL, unknown or not text).
    pub fn text(&self, column: &str) -> Option<&str> {
        match self.get(column) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    /// What the record says, for people: its identifying columns that are not NULL, with
    /// `received_at` as RFC 3339 and text JSON-quoted (so control characters cannot hide).
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        SHOWN
            .into_iter()
            .filter_map(|name| {
                let shown = match self.get(name)? {
                    Value::Null => return None,
                    Value::Int(ms) if name == "received_at" => format_millis(*ms),
                    Value::Int(v) => v.to_string(),
                    Value::Text(t) => serde_json::to_string(t).unwrap_or_default(),
                    Value::Blob(b) => hex(b),
                };
                Some((name, shown))
            })
            .collect()
    }
}

/// Decodes hex digits (either case) to bytes; `None` for anything else.
pub(super) fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |b: u8| char::from(b).to_digit(16);
            Some(u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).unwrap_or(0))
        })
        .collect()
}

impl Serialize for ProofRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(LAYOUT.len()))?;
        for ((name, _), v) in LAYOUT.iter().zip(&self.0) {
            match v {
                Value::Null => map.serialize_entry(name, &())?,
                Value::Int(i) => map.serialize_entry(name, i)?,
                Value::Text(t) => map.serialize_entry(name, t)?,
                Value::Blob(b) => map.serialize_entry(name, &hex(b))?,
            }
        }
        map.end()
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = ProofRecord;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with every chained column of the record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProofRecord, A::Error> {
        let mut values: Vec<Option<Value>> = vec![None; LAYOUT.len()];
        while let Some(key) = map.next_key::<String>()? {
            let Some(i) = LAYOUT.iter().position(|(name, _)| *name == key) else {
                return Err(de::Error::custom(format!("record: unknown column {key:?}")));
            };
            if values[i].is_some() {
                // Another reader might take the other value: one meaning only.
                return Err(de::Error::custom(format!("record: column {key:?} twice")));
            }
            let value = match LAYOUT[i].1 {
                ColumnType::Int => map.next_value::<Option<i64>>()?.map(Value::Int),
                ColumnType::Text => map.next_value::<Option<String>>()?.map(Value::Text),
                ColumnType::Blob => match map.next_value::<Option<String>>()? {
                    None => None,
                    Some(h) => Some(Value::Blob(hex_bytes(&h).ok_or_else(|| {
                        de::Error::custom(format!("record: column {key:?} is not hex bytes"))
                    })?)),
                },
            };
            values[i] = Some(value.unwrap_or(Value::Null));
        }
        values
            .into_iter()
            .zip(LAYOUT)
            .map(|(v, (name, _))| {
                v.ok_or_else(|| {
                    de::Error::custom(format!("record: column {name:?} missing (null for NULL)"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ProofRecord)
    }
}

impl<'de> Deserialize<'de> for ProofRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::entry::GENESIS;

    fn logout() -> EventRow {
        EventRow {
            id: 4,
            kind: "logout".into(),
            received_at: 1_764_201_600_123,
            outcome: Some("accepted".into()),
            http_status: Some(200),
            iss: Some("https://op.example/".into()),
            sub: Some("alice".into()),
            sid: Some("s-1".into()),
            jti: Some("j-1".into()),
            aud: Some(r#"["rp"]"#.into()),
            token_sha256: Some(vec![0xab; 32]),
            key_set_digest: Some(vec![0x01, 0x02]),
            claims_verified: Some(true),
            ..EventRow::default()
        }
    }

    #[test]
    fn the_recomputed_hash_is_the_writers_entry_hash() {
        let row = logout();
        let prev = [7u8; 32];
        let record = ProofRecord::from_row(&row);
        assert_eq!(
            record.entry_hash(&prev),
            row.entry_hash(&prev, &mut Vec::new())
        );
        let json = serde_json::to_string(&record).expect("json");
        let back: ProofRecord = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, record);
        assert_eq!(
            back.entry_hash(&prev),
            row.entry_hash(&prev, &mut Vec::new())
        );
        assert_ne!(back.entry_hash(&GENESIS), back.entry_hash(&prev));
    }

    #[test]
    fn the_json_form_names_every_column_in_canonical_order_with_values_as_hashed() {
        let value = serde_json::to_value(ProofRecord::from_row(&logout())).expect("json");
        let text = serde_json::to_string(&ProofRecord::from_row(&logout())).expect("json");
        let keys: Vec<&str> = LAYOUT.iter().map(|(n, _)| *n).collect();
        let mut at = 0;
        for k in &keys {
            let found = text[at..].find(&format!("\"{k}\":")).expect(k);
            at += found;
        }
        assert_eq!(value["sub"], "alice");
        assert_eq!(
            value["aud"], r#"["rp"]"#,
            "JSON columns stay text, as hashed"
        );
        assert_eq!(value["token_sha256"], "ab".repeat(32));
        assert_eq!(value["key_set_digest"], "0102");
        assert_eq!(value["claims_verified"], 1, "a boolean is hashed as 0/1");
        assert_eq!(value["reason"], serde_json::Value::Null);
    }

    #[test]
    fn an_edited_column_changes_the_recomputed_hash() {
        let row = logout();
        let good = row.entry_hash(&GENESIS, &mut Vec::new());
        let mut value = serde_json::to_value(ProofRecord::from_row(&row)).expect("json");
        for (column, edit) in [
            ("sub", serde_json::json!("mallory")),
            ("sid", serde_json::json!(null)),
            ("sub", serde_json::json!("")),
            ("received_at", serde_json::json!(1_764_201_600_124_i64)),
            ("token_sha256", serde_json::json!("ab".repeat(31))),
        ] {
            let original = value[column].clone();
            value[column] = edit;
            let edited: ProofRecord = serde_json::from_value(value.clone()).expect(column);
            assert_ne!(edited.entry_hash(&GENESIS), good, "{column}");
            value[column] = original;
        }
        let same: ProofRecord = serde_json::from_value(value).expect("restored");
        assert_eq!(same.entry_hash(&GENESIS), good);
    }

    #[test]
    fn a_record_that_is_not_the_documented_form_is_refused() {
        let value = serde_json::to_value(ProofRecord::from_row(&logout())).expect("json");
        let text = value.to_string();
        let refused = |t: &str| {
            serde_json::from_str::<ProofRecord>(t)
                .expect_err(t)
                .to_string()
        };
        let mut missing = value.clone();
        missing.as_object_mut().expect("object").remove("sid");
        assert!(refused(&missing.to_string()).contains("\"sid\" missing"));
        let mut extra = value.clone();
        extra["subject"] = "alice".into();
        assert!(refused(&extra.to_string()).contains("unknown column"));
        let twice = text.replacen('{', r#"{"sub":"mallory","#, 1);
        assert!(refused(&twice).contains("twice"));
        for (column, bad) in [
            ("id", serde_json::json!("4")),
            ("id", serde_json::json!(4.5)),
            ("iat", serde_json::json!(u64::MAX)),
            ("sub", serde_json::json!(5)),
            ("token_sha256", serde_json::json!("zz")),
            ("token_sha256", serde_json::json!("abc")),
            ("token_sha256", serde_json::json!("+a")),
        ] {
            let mut v = value.clone();
            v[column] = bad;
            refused(&v.to_string());
        }
    }

    #[test]
    fn the_summary_shows_what_the_record_says() {
        let summary = ProofRecord::from_row(&logout()).summary();
        let names: Vec<&str> = summary.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "id",
                "kind",
                "outcome",
                "received_at",
                "iss",
                "sub",
                "sid",
                "jti"
            ]
        );
        assert!(summary.contains(&("received_at", "2025-11-27T00:00:00.123Z".into())));
        assert!(summary.contains(&("sub", "\"alice\"".into())));
        let mut row = logout();
        row.sub = Some("a\u{1b}[2Jb\n".into());
        let shown = ProofRecord::from_row(&row).summary();
        assert!(shown.contains(&("sub", r#""a\u001b[2Jb\n""#.into())));
    }
}
