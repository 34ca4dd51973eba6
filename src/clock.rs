//! The current time as an input: validation and the store take a [`Clock`] instead of reading
//! the system time themselves, so expiry and leeway are testable without sleeping.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now", shared by the validator and the store.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;

    /// Whole seconds since the Unix epoch.
    fn now_secs(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock frozen at one instant, for tests.
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_millis(&self) -> i64 {
        self.0
    }
}

/// The clock type the application passes around.
pub type SharedClock = Arc<dyn Clock>;

/// Formats milliseconds since the epoch as RFC 3339 UTC with milliseconds.
pub fn format_millis(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
            format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        }
        Err(_) => ms.to_string(),
    }
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_rfc3339_millis(s: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 timestamp ({e})"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| "timestamp out of range".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let ms = 1_764_201_600_123;
        let s = format_millis(ms);
        assert_eq!(s, "2025-11-27T00:00:00.123Z");
        assert_eq!(parse_rfc3339_millis(&s), Ok(ms));
        assert_eq!(
            parse_rfc3339_millis("2025-11-27T01:00:00.123+01:00"),
            Ok(ms)
        );
        assert!(parse_rfc3339_millis("yesterday").is_err());
    }
}
