//! Query-string parsing: names checked against the route's documented parameters (a typo is a
//! 400, never a silently wider query), values parsed into the store's filter types.

use crate::clock::parse_rfc3339_millis;
use crate::store::{
    Cursor, EventFilter, KindFilter, Order, parse_meta_key, parse_metadata_status, parse_outcome,
    parse_reason,
};

use super::error::ApiError;
use super::routes::{In, META_PARAM, Route};

/// Largest page the API returns.
pub(crate) const MAX_PAGE: u32 = 1000;
/// Page size when none is asked for.
pub(crate) const DEFAULT_PAGE: u32 = 100;

/// A request's query parameters, checked against its route.
#[derive(Debug)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses and checks the raw query string.
    pub(crate) fn parse(raw: Option<&str>, route: &Route) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let documented = |name: &str| {
            route.params().find(|p| {
                p.location == In::Query
                    && (p.name == name || (p.name == META_PARAM && name.starts_with("meta.")))
            })
        };
        for (i, (name, value)) in pairs.iter().enumerate() {
            let Some(param) = documented(name) else {
                return Err(ApiError::invalid(
                    name.as_str(),
                    "unknown parameter (see /api/v1/openapi.json)",
                ));
            };
            if !param.repeatable && pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(ApiError::invalid(name.as_str(), "given more than once"));
            }
            if value.is_empty() {
                return Err(ApiError::invalid(name.as_str(), "must not be empty"));
            }
        }
        for p in route.params() {
            if p.location == In::Query && p.required && !pairs.iter().any(|(n, _)| n == p.name) {
                return Err(ApiError::invalid(p.name, "is required"));
            }
        }
        Ok(Self { pairs })
    }

    /// The value of a parameter given at most once.
    pub(crate) fn one(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable parameter.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses a parameter's value with `parse`, naming the parameter in the error.
    pub(crate) fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ApiError> {
        self.one(name)
            .map(|v| parse(v).map_err(|m| ApiError::invalid(name, m)))
            .transpose()
    }

    /// The filters (everything but paging), with `kind` defaulting to `logout`.
    pub(crate) fn filter(&self) -> Result<EventFilter, ApiError> {
        let text = |name: &str| self.one(name).map(str::to_owned);
        let mut f = EventFilter {
            kind: self
                .parsed("kind", |s| s.parse::<KindFilter>())?
                .unwrap_or_default(),
            iss: text("iss"),
            sub: text("sub"),
            sid: text("sid"),
            jti: text("jti"),
            outcome: self.parsed("outcome", parse_outcome)?,
            reason: self.parsed("reason", parse_reason)?,
            metadata_status: self.parsed("metadata_status", parse_metadata_status)?,
            verified: self.parsed("verified", parse_bool)?.unwrap_or(false),
            since: self.parsed("since", parse_rfc3339_millis)?,
            until: self.parsed("until", parse_rfc3339_millis)?,
            ..EventFilter::default()
        };
        if let (Some(s), Some(u)) = (f.since, f.until)
            && u <= s
        {
            return Err(ApiError::invalid("until", "must be later than since"));
        }
        for (name, value) in &self.pairs {
            if let Some(key) = name.strip_prefix("meta.") {
                let key = parse_meta_key(key).map_err(|m| ApiError::invalid(name.as_str(), m))?;
                f.meta.push((key, value.clone()));
            }
        }
        for key in self.all("has_meta") {
            f.has_meta
                .push(parse_meta_key(key).map_err(|m| ApiError::invalid("has_meta", m))?);
        }
        Ok(f)
    }

    /// Applies `order` (default `default`), `limit` and `cursor` to `f`.
    pub(crate) fn page(&self, f: &mut EventFilter, default: Order) -> Result<(), ApiError> {
        f.order = self
            .parsed("order", |s| s.parse::<Order>())?
            .unwrap_or(default);
        f.limit = self.parsed("limit", parse_limit)?.unwrap_or(DEFAULT_PAGE);
        f.after = self.parsed("cursor", |s| Cursor::decode(s)?.continue_in(f.order))?;
        Ok(())
    }
}

/// `true` or `false`.
pub(crate) fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("must be true or false, not {other:?}")),
    }
}

pub(crate) fn parse_limit(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {MAX_PAGE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::{Op, route};

    fn events(q: &str) -> Result<EventFilter, ApiError> {
        let p = Params::parse(Some(q), route(Op::Events))?;
        let mut f = p.filter()?;
        p.page(&mut f, Order::Desc)?;
        Ok(f)
    }

    fn refused(q: &str) -> String {
        match events(q) {
            Err(ApiError::InvalidParameter { parameter, .. }) => parameter,
            other => panic!("{q}: {other:?}"),
        }
    }

    #[test]
    fn parses_every_filter() {
        let f = events(
            "sub=auth0%7Cal&meta.org_id=acme&meta.region=eu&has_meta=device&verified=true\
             &since=2026-01-01T00:00:00Z&kind=all&order=asc&limit=1000&outcome=accepted",
        )
        .expect("valid");
        assert_eq!(f.sub.as_deref(), Some("auth0|al"));
        assert_eq!(f.meta.len(), 2);
        assert_eq!(f.has_meta, ["device"]);
        assert!(f.verified);
        assert_eq!(
            (f.kind, f.order, f.limit),
            (KindFilter::All, Order::Asc, 1000)
        );
    }

    #[test]
    fn names_the_parameter_at_fault() {
        assert_eq!(refused("limit=1001"), "limit");
        assert_eq!(refused("limit=0"), "limit");
        assert_eq!(refused("subject=x"), "subject");
        assert_eq!(refused("sub=a&sub=b"), "sub");
        assert_eq!(refused("since=yesterday"), "since");
        assert_eq!(refused("outcome=ok"), "outcome");
        assert_eq!(refused("meta.a%22b=x"), "meta.a\"b");
        assert_eq!(refused("cursor=nope"), "cursor");
        assert_eq!(refused("verified=yes"), "verified");
        assert_eq!(refused("sid="), "sid");
        assert_eq!(
            refused("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z"),
            "until"
        );
        let asc = Cursor {
            order: Order::Asc,
            id: 3,
        };
        assert_eq!(refused(&format!("cursor={}", asc.encode())), "cursor");
    }
}
