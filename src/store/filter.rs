//! Which records a query wants: the filters shared by the CLI (and later the query API).

use std::str::FromStr;

use super::Outcome;
use crate::logout_token::Reason;

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

/// A conjunction of filters; `None` means "any".
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
    /// Received at or after (ms since epoch).
    pub since: Option<i64>,
    /// Received before (ms since epoch).
    pub until: Option<i64>,
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
            since: None,
            until: None,
            limit: 100,
            order: Order::Desc,
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
    }
}
