//! JSON parsing that refuses a repeated member name in any object.
//!
//! RFC 7515 §4 and RFC 7519 §4 let a parser refuse duplicate names; the plain `serde_json`
//! map keeps the last one, so `{"alg":"none","alg":"RS256"}` would read as RS256 here while
//! another library reads `none`. Refusing them removes that ambiguity.

use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// A JSON value whose objects, at any depth, name each member once.
pub(super) struct StrictValue(pub(super) Value);

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without repeated member names")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if out.contains_key(&name) {
                let shown: String = name.chars().take(64).collect();
                return Err(A::Error::custom(format!(
                    "repeats the member name {shown:?}"
                )));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(name, v);
        }
        Ok(Value::Object(out))
    }
}

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Value, serde_json::Error> {
        serde_json::from_str::<StrictValue>(s).map(|v| v.0)
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let doc = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#;
        let plain: Value = serde_json::from_str(doc).expect("plain");
        assert_eq!(parse(doc).expect("strict"), plain);
    }

    #[test]
    fn refuses_repeats_at_any_depth() {
        for bad in [
            r#"{"alg":"none","alg":"RS256"}"#,
            r#"{"events":{"e":{},"e":{}}}"#,
            r#"{"a":[{"x":1,"x":1}]}"#,
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(
                e.is_data() && e.to_string().contains("repeats"),
                "{bad}: {e}"
            );
        }
        assert!(parse(r#"{"a":{"a":1}}"#).is_ok(), "same name at two depths");
    }
}
