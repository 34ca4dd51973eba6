//! Bounded HTTP fetches of discovery documents and key sets: timeout, size cap, no redirect to
//! another host, and only URLs derived from configuration.

use std::time::Duration;

use reqwest::{Client, Url, redirect};
use serde::Deserialize;

use crate::config::{KeyFetchSettings, parse_fetch_url};

/// Shortest and longest cache lifetime taken from `Cache-Control: max-age`.
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a fetch failed. All are transient from the receiver's point of view.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection, TLS, timeout or redirect failure.
    #[error("request to {url} failed: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// The cause.
        message: String,
    },
    /// A non-2xx answer.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body exceeded the size cap.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The cap.
        limit: usize,
    },
    /// The discovery document is unusable.
    #[error("discovery document at {url}: {message}")]
    Discovery {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

/// A fetched body and how long it may be cached.
#[derive(Debug)]
pub(super) struct Fetched {
    /// The body bytes (at most the cap).
    pub body: Vec<u8>,
    /// Cache lifetime from `Cache-Control: max-age` (bounded), or the default.
    pub ttl: Duration,
}

/// Builds the client used for all issuer fetches.
pub(super) fn client(settings: &KeyFetchSettings) -> Result<Client, reqwest::Error> {
    let policy = redirect::Policy::custom(|attempt| {
        let same_host = attempt.previous().first().is_some_and(|first| {
            first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        let downgrade = attempt
            .previous()
            .first()
            .is_some_and(|f| f.scheme() == "https")
            && attempt.url().scheme() != "https";
        if attempt.previous().len() > 3 {
            attempt.error("too many redirects")
        } else if !same_host || downgrade {
            attempt.error("redirect to another host or scheme refused")
        } else {
            attempt.follow()
        }
    });
    Client::builder()
        .redirect(policy)
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("logout-ledger/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn max_age(headers: &reqwest::header::HeaderMap, default: Duration) -> Duration {
    let parsed = headers
        .get_all(reqwest::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim_matches('"').parse::<u64>().ok());
    match parsed {
        Some(secs) => Duration::from_secs(secs).clamp(MIN_TTL, MAX_TTL),
        None => default,
    }
}

/// GETs a URL with the size cap applied while streaming.
pub(super) async fn get(
    client: &Client,
    url: &Url,
    settings: &KeyFetchSettings,
) -> Result<Fetched, FetchError> {
    let transport = |e: reqwest::Error| FetchError::Transport {
        url: url.to_string(),
        message: e.to_string(),
    };
    let mut resp = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(transport)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let too_large = || FetchError::TooLarge {
        url: url.to_string(),
        limit: settings.max_bytes,
    };
    if resp
        .content_length()
        .is_some_and(|n| n > settings.max_bytes as u64)
    {
        return Err(too_large());
    }
    let ttl = max_age(resp.headers(), settings.default_ttl);
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > settings.max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { body, ttl })
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The discovery URL of an issuer: `{issuer without trailing /}/.well-known/openid-configuration`.
pub(super) fn discovery_url(issuer: &str, allow_http: bool) -> Result<Url, FetchError> {
    let raw = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    parse_fetch_url("issuer", &raw, allow_http).map_err(|e| FetchError::Discovery {
        url: raw,
        message: e.message,
    })
}

/// Runs discovery: the document's `issuer` must equal ours exactly; returns its `jwks_uri`.
pub(super) async fn discover(
    client: &Client,
    issuer: &str,
    settings: &KeyFetchSettings,
) -> Result<Url, FetchError> {
    let url = discovery_url(issuer, settings.allow_insecure_http)?;
    let fetched = get(client, &url, settings).await?;
    let bad = |message: String| FetchError::Discovery {
        url: url.to_string(),
        message,
    };
    let doc: Discovery = serde_json::from_slice(&fetched.body)
        .map_err(|e| bad(format!("not a discovery document ({e})")))?;
    if doc.issuer != issuer {
        return Err(bad(format!(
            "issuer {:?} is not the configured {issuer:?}",
            doc.issuer
        )));
    }
    parse_fetch_url("jwks_uri", &doc.jwks_uri, settings.allow_insecure_http)
        .map_err(|e| bad(e.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{CACHE_CONTROL, HeaderMap, HeaderValue};

    #[test]
    fn max_age_is_bounded() {
        let d = Duration::from_secs(600);
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h, d), d);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=1"));
        assert_eq!(max_age(&h, d), MIN_TTL);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=999999999"));
        assert_eq!(max_age(&h, d), MAX_TTL);
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("no-cache, max-age=120"),
        );
        assert_eq!(max_age(&h, d), Duration::from_secs(120));
    }

    #[test]
    fn discovery_url_drops_the_trailing_slash() {
        let u = discovery_url("https://t.eu.auth0.com/", false).expect("url");
        assert_eq!(
            u.as_str(),
            "https://t.eu.auth0.com/.well-known/openid-configuration"
        );
        assert!(discovery_url("http://t/", false).is_err());
    }
}
