//! Settings of the query API: its listener and the bearer tokens it accepts, configured as
//! labelled SHA-256 digests (`label:hex`) so the configuration never holds a usable secret.

use std::fmt;
use std::net::SocketAddr;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::ConfigError;
use crate::util::hex;

/// Default address of the query API.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8081";
/// Prefix of generated tokens, so secret scanners and people recognise them.
pub const TOKEN_PREFIX: &str = "llq_";

/// One accepted API token: who holds it (the label written into access records) and the
/// SHA-256 of the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Who holds the token, e.g. `auditor`.
    pub label: String,
    /// SHA-256 of the token's UTF-8 bytes.
    pub digest: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl ApiToken {
    /// The entry for a token held by `label`.
    pub fn for_token(label: &str, token: &str) -> Self {
        let mut d = [0u8; 32];
        d.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        Self {
            label: label.to_owned(),
            digest: d,
        }
    }

    /// A fresh random token (256 bits) for `label`, and its entry.
    pub fn generate(label: &str) -> Result<(String, Self), ConfigError> {
        check_label("--label", label)?;
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ConfigError::new("--label", "no randomness available"))?;
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let entry = Self::for_token(label, &token);
        Ok((token, entry))
    }

    /// The configuration form, `label:hex`.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.label, hex(&self.digest))
    }

    /// Parses `label:hex` (64 hex digits of SHA-256).
    pub fn parse(setting: &str, spec: &str) -> Result<Self, ConfigError> {
        let (label, hex_digest) = spec.trim().split_once(':').ok_or_else(|| {
            ConfigError::new(setting, "expected LABEL:SHA256HEX (see `api-token new`)")
        })?;
        check_label(setting, label)?;
        let bad = || {
            ConfigError::new(
                setting,
                format!("the digest of {label:?} must be 64 hex digits (SHA-256)"),
            )
        };
        if hex_digest.len() != 64 || !hex_digest.is_ascii() {
            return Err(bad());
        }
        let mut d = [0u8; 32];
        for (i, out) in d.iter_mut().enumerate() {
            *out = u8::from_str_radix(&hex_digest[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self {
            label: label.to_owned(),
            digest: d,
        })
    }
}

fn check_label(setting: &str, label: &str) -> Result<(), ConfigError> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            format!(
                "token label {label:?} must be 1-64 ASCII letters, digits, '_', '-', '.' or '@'"
            ),
        ))
    }
}

/// The query API's listener and tokens; with no token, the API does not start.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Address of `/api/v1/`.
    pub listen: SocketAddr,
    /// Accepted tokens.
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            tokens: Vec::new(),
        }
    }
}

/// Parses token entries (each may hold several, comma-separated), refusing a label twice.
pub fn parse_api_tokens(setting: &str, specs: &[String]) -> Result<Vec<ApiToken>, ConfigError> {
    let mut out: Vec<ApiToken> = Vec::new();
    for spec in specs.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if spec.is_empty() {
            continue;
        }
        let token = ApiToken::parse(setting, spec)?;
        if out.iter().any(|t| t.label == token.label) {
            return Err(ConfigError::new(
                setting,
                format!("token label {:?} is configured twice", token.label),
            ));
        }
        out.push(token);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_round_trip_through_their_spec() {
        let (token, entry) = ApiToken::generate("auditor").expect("token");
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 43);
        let parsed = parse_api_tokens("api_tokens", &[entry.spec()]).expect("parses");
        assert_eq!(parsed, vec![ApiToken::for_token("auditor", &token)]);
        assert!(!format!("{entry:?}").contains(&hex(&entry.digest)));
    }

    #[test]
    fn refuses_malformed_entries_and_duplicate_labels() {
        let ok = format!("a:{}", "0".repeat(64));
        for bad in [
            "nolabel",
            ":00",
            &format!("a b:{}", "0".repeat(64)),
            "a:abc",
            &format!("a:{}", "g".repeat(64)),
        ] {
            assert!(parse_api_tokens("t", &[bad.to_owned()]).is_err(), "{bad}");
        }
        assert!(parse_api_tokens("t", &[format!("{ok},{ok}")]).is_err());
        let two = parse_api_tokens("t", &[format!("{ok}, b:{}", "f".repeat(64))]).expect("two");
        assert_eq!(two.len(), 2);
    }
}
