//! CSV per RFC 4180: a header row of the field names, CRLF line ends, `session_metadata`,
//! `unverified` and other structured fields as one JSON cell, and spreadsheet formulas
//! neutralised.

use serde_json::Value;

use crate::store::StoredRecord;

/// The field names, in output order (the header row).
pub const FIELDS: [&str; 29] = [
    "id",
    "kind",
    "received_at",
    "outcome",
    "http_status",
    "reason",
    "reason_detail",
    "iss",
    "sub",
    "sid",
    "jti",
    "aud",
    "iat",
    "exp",
    "alg",
    "kid",
    "typ",
    "session_metadata",
    "metadata_status",
    "metadata_error",
    "source_ip",
    "user_agent",
    "token_sha256",
    "token_bytes",
    "duplicate_of",
    "claims_verified",
    "unverified",
    "action",
    "details",
];

/// Quotes a cell per RFC 4180 and prefixes `'` to a cell a spreadsheet would run as a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or a carriage return).
pub fn cell(raw: &str) -> String {
    let neutral = if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{raw}")
    } else {
        raw.to_owned()
    };
    if neutral.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Appends the header row.
pub fn header(out: &mut Vec<u8>) {
    out.extend_from_slice(FIELDS.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one record as a row.
pub fn row(out: &mut Vec<u8>, record: &StoredRecord) -> Result<(), serde_json::Error> {
    let v = serde_json::to_value(record)?;
    for (i, field) in FIELDS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(cell(&text(&v[*field])).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_neutralises_formulas() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM"), "'@SUM");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("\rx"), "\"'\rx\"");
        assert_eq!(cell("line\nbreak"), "\"line\nbreak\"");
    }
}
