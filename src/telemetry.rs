//! Log set-up: human-readable text or one JSON object per line, filtered by `RUST_LOG`; and the
//! request id that ties one request's log lines together.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber (`RUST_LOG` overrides `default_filter`); later calls are
/// ignored (tests start several apps in one process).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Names one request in the logs, from the handler's span through validation to the audit
/// writer's commit line, so one logout can be followed; 16 hex digits, random per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

impl RequestId {
    /// A fresh id (a process-wide counter if the system's random source fails).
    pub fn new() -> Self {
        static FALLBACK: AtomicU64 = AtomicU64::new(1);
        let mut bytes = [0u8; 8];
        match aws_lc_rs::rand::fill(&mut bytes) {
            Ok(()) => Self(u64::from_be_bytes(bytes)),
            Err(_) => Self(FALLBACK.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_sixteen_hex_digits_and_differ() {
        let (a, b) = (RequestId::new(), RequestId::new());
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 16, "{text}");
        assert!(text.bytes().all(|c| c.is_ascii_hexdigit()), "{text}");
    }
}
