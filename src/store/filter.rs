//! Which records a query wants: the filters shared by the CLI and the query API, and the
//! opaque keyset cursor that pages through them.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use super::Outcome;
use crate::clock::format_millis;
use crate::logout_token::{MetadataStatus, Reason};

/// Most rows one query returns.
pub const MAX_LIMIT: u32 = 10_000;

/// Sort order by sequence number (arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first.
    #[default]
    Desc,
    /// Oldest first.
    Asc,
}

impl FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "desc" => Ok(Order::Desc),
            "asc" => Ok(Order::Asc),
            other => Err(format!("order must be desc or asc, not {other:?}")),
        }
    }
}

/// Which kinds of record a query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KindFilter {
    /// Records of the logout endpoint.
    #[default]
    Logout,
    /// Reads of the audit data.
    Access,
    /// The service's own life.
    System,
    /// Everything.
    All,
}

impl FromStr for KindFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logout" => Ok(KindFilter::Logout),
            "access" => Ok(KindFilter::Access),
            "system" => Ok(KindFilter::System),
            "all" => Ok(KindFilter::All),
            other => Err(format!(
                "kind must be logout, access, system or all, not {other:?}"
            )),
        }
    }
}

impl KindFilter {
    /// The stored `kind`, or `None` for all.
    pub fn code(self) -> Option<&'static str> {
        match self {
            KindFilter::Logout => Some("logout"),
            KindFilter::Access => Some("access"),
            KindFilter::System => Some("system"),
            KindFilter::All => None,
        }
    }
}

impl Order {
    /// `desc` or `asc`.
    pub fn code(self) -> &'static str {
        match self {
            Order::Desc => "desc",
            Order::Asc => "asc",
        }
    }
}

/// A conjunction of filters; `None` (or empty) means "any".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// Record kinds.
    pub kind: KindFilter,
    /// Exact `iss`.
    pub iss: Option<String>,
    /// Exact `sub`.
    pub sub: Option<String>,
    /// Exact `sid`.
    pub sid: Option<String>,
    /// Exact `jti`.
    pub jti: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
    /// Rejection code.
    pub reason: Option<String>,
    /// Session-metadata pairs that must all be present.
    pub meta: Vec<(String, String)>,
    /// Session-metadata keys that must be present (any value).
    pub has_meta: Vec<String>,
    /// Metadata status.
    pub metadata_status: Option<MetadataStatus>,
    /// Only records whose claims passed verification (accepted and duplicate logouts).
    pub verified: bool,
    /// Received at or after (ms since epoch).
    pub since: Option<i64>,
    /// Received before (ms since epoch).
    pub until: Option<i64>,
    /// Keyset position: only records beyond this id in `order` (the next page).
    pub after: Option<i64>,
    /// Only ids in this inclusive range, known to hold every match (an export's snapshot).
    pub id_range: Option<(i64, i64)>,
    /// Most rows.
    pub limit: u32,
    /// Sort order.
    pub order: Order,
}

impl Default for EventFilter {
    fn default() -> Self {
        Self {
            kind: KindFilter::Logout,
            iss: None,
            sub: None,
            sid: None,
            jti: None,
            outcome: None,
            reason: None,
            meta: Vec::new(),
            has_meta: Vec::new(),
            metadata_status: None,
            verified: false,
            since: None,
            until: None,
            after: None,
            id_range: None,
            limit: 100,
            order: Order::Desc,
        }
    }
}

impl EventFilter {
    /// Whether a filter reads a claim or the session metadata (`iss`, `sub`, `sid`, `jti`,
    /// `meta.*`, `has_meta`): such filters skip logouts refused before their signature
    /// verified, whose claims (in records from before migration 0003) a forger wrote.
    pub fn filters_claims(&self) -> bool {
        self.iss.is_some()
            || self.sub.is_some()
            || self.sid.is_some()
            || self.jti.is_some()
            || !self.meta.is_empty()
            || !self.has_meta.is_empty()
    }

    /// The filters in force, as JSON for an access record: only those set, times in RFC 3339.
    pub fn describe(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!(self.kind.code().unwrap_or("all")));
        let text = [
            ("iss", &self.iss),
            ("sub", &self.sub),
            ("sid", &self.sid),
            ("jti", &self.jti),
            ("reason", &self.reason),
        ];
        for (name, value) in text {
            if let Some(v) = value {
                m.insert(name.into(), json!(v));
            }
        }
        if let Some(o) = self.outcome {
            m.insert("outcome".into(), json!(o.code()));
        }
        for (key, value) in &self.meta {
            m.insert(format!("meta.{key}"), json!(value));
        }
        if !self.has_meta.is_empty() {
            m.insert("has_meta".into(), json!(self.has_meta));
        }
        if let Some(s) = self.metadata_status {
            m.insert("metadata_status".into(), json!(s.code()));
        }
        if self.verified {
            m.insert("verified".into(), json!(true));
        }
        for (name, value) in [("since", self.since), ("until", self.until)] {
            if let Some(ms) = value {
                m.insert(name.into(), json!(format_millis(ms)));
            }
        }
        if let Some(id) = self.after {
            m.insert("after_id".into(), json!(id));
        }
        if let Some((lo, hi)) = self.id_range {
            m.insert("ids".into(), json!([lo, hi]));
        }
        Value::Object(m)
    }
}

/// Where the next page starts: an opaque token naming the last record returned and the order.
/// Pages are keyed on the sequence number, so records arriving meanwhile never shift a page:
/// no duplicates, no gaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The order the pages are read in.
    pub order: Order,
    /// The last record of the previous page.
    pub id: i64,
}

impl Cursor {
    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        let o = match self.order {
            Order::Desc => 'd',
            Order::Asc => 'a',
        };
        URL_SAFE_NO_PAD.encode(format!("v1:{o}:{}", self.id))
    }

    /// Reads a cursor given back by a client.
    pub fn decode(s: &str) -> Result<Self, String> {
        let bad = || "not a cursor returned by this service".to_owned();
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut parts = text.split(':');
        let (Some("v1"), Some(o), Some(id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let order = match o {
            "d" => Order::Desc,
            "a" => Order::Asc,
            _ => return Err(bad()),
        };
        let id = id.parse::<i64>().ok().filter(|i| *i >= 0).ok_or_else(bad)?;
        Ok(Self { order, id })
    }

    /// Checks the cursor was issued for this order and returns the id to continue after.
    pub fn continue_in(&self, order: Order) -> Result<i64, String> {
        if self.order == order {
            Ok(self.id)
        } else {
            Err(format!(
                "this cursor pages in {} order; ask with order={} or drop the cursor",
                self.order.code(),
                self.order.code()
            ))
        }
    }
}

/// Parses `KEY=VALUE` for a metadata filter.
pub fn parse_meta(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Parses an outcome code.
pub fn parse_outcome(s: &str) -> Result<Outcome, String> {
    Outcome::from_code(s)
        .ok_or_else(|| format!("outcome must be accepted, duplicate or rejected, not {s:?}"))
}

/// Checks a metadata key the way Auth0 limits them: 1-255 ASCII letters, digits, `_` or `-`.
pub fn parse_meta_key(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "metadata key {s:?} must be 1-255 ASCII letters, digits, '_' or '-'"
        ))
    }
}

/// Parses a metadata status code.
pub fn parse_metadata_status(s: &str) -> Result<MetadataStatus, String> {
    [
        MetadataStatus::Absent,
        MetadataStatus::Ok,
        MetadataStatus::Invalid,
    ]
    .into_iter()
    .find(|m| m.code() == s)
    .ok_or_else(|| format!("metadata_status must be absent, ok or invalid, not {s:?}"))
}

/// Checks a rejection code.
pub fn parse_reason(s: &str) -> Result<String, String> {
    Reason::from_code(s)
        .map(|r| r.code().to_owned())
        .ok_or_else(|| format!("unknown reason code {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_filter_values() {
        assert_eq!(
            parse_meta("org_id=acme=1"),
            Ok(("org_id".into(), "acme=1".into()))
        );
        assert!(parse_meta("=x").is_err());
        assert_eq!(parse_outcome("duplicate"), Ok(Outcome::Duplicate));
        assert!(parse_outcome("ok").is_err());
        assert_eq!(parse_reason("replay").as_deref(), Ok("replay"));
        assert!(parse_reason("nope").is_err());
        assert_eq!("asc".parse::<Order>(), Ok(Order::Asc));
        assert_eq!(parse_metadata_status("ok"), Ok(MetadataStatus::Ok));
        assert!(parse_meta_key("org_id").is_ok());
        assert!(parse_meta_key("a\"b").is_err());
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries_and_other_orders() {
        let c = Cursor {
            order: Order::Desc,
            id: 42,
        };
        let s = c.encode();
        assert_eq!(Cursor::decode(&s), Ok(c));
        assert_eq!(c.continue_in(Order::Desc), Ok(42));
        assert!(c.continue_in(Order::Asc).is_err());
        for bad in [
            "",
            "xyz",
            "djE6ZDotMQ",
            "djI6ZDox",
            "djE6eDox",
            "djE6ZDoxOjI",
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}
