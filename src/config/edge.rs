//! What an anonymous client may cost: the listeners' connection limits and timeouts, the
//! admission of rejection records, which proxies may name the client, and where metrics live.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use super::ConfigError;

/// Everything that bounds what the public side of the service spends on a client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EdgeSettings {
    /// Timeouts and connection caps, applied to each listener (public and API) on its own.
    pub connections: ConnectionLimits,
    /// How many records of rejections found before the signature check are stored one by one.
    pub admission: AdmissionLimits,
    /// Peers allowed to name the client's address in `X-Forwarded-For` / `Forwarded`.
    pub trusted_proxies: Vec<IpNet>,
    /// Where `/metrics` is served; `None`: on the query API's listener (when it runs).
    pub metrics_listen: Option<SocketAddr>,
}

/// Timeouts and caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest time from a connection's (or keep-alive request's) first byte to its full header.
    pub header_read_timeout: Duration,
    /// Longest time from a request's header to the start of its answer (408 when its body had
    /// not arrived, else 503), and longest an answer may make no progress (long exports go on).
    pub request_timeout: Duration,
    /// Longest time a kept-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Most connections open at once on one listener; more are closed at accept.
    pub max_connections: usize,
    /// Most connections open at once from one source address (IPv4 /32, IPv6 /64); trusted
    /// proxies are exempt.
    pub max_connections_per_source: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_connections_per_source: 128,
        }
    }
}

/// Rates at which records of unverified rejections are stored one by one; the rest is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Records per second per source address (IPv4 /32, IPv6 /64).
    pub per_source_per_sec: u32,
    /// Records one source may spend at once after a quiet spell.
    pub per_source_burst: u32,
    /// Records per second from all sources together.
    pub total_per_sec: u32,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            per_source_per_sec: 10,
            per_source_burst: 50,
            total_per_sec: 200,
        }
    }
}

/// An address range in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies in this range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4; every other address as it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(
            addr.parse::<IpAddr>()
                .map_err(|e| format!("{s:?}: {e} (expected an address or ADDRESS/PREFIX)"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix must be a number from 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

/// Parses a comma-separated CIDR list (`--trusted-proxies`).
pub fn parse_trusted_proxies(setting: &str, list: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    list.iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().map_err(|e| ConfigError::new(setting, e)))
        .collect()
}

/// Checks a number of seconds against a range, naming the setting.
pub fn seconds_in(
    setting: &str,
    secs: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    if range.contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(ConfigError::new(
            setting,
            format!(
                "must be between {} and {} seconds",
                range.start(),
                range.end()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges_contain_what_they_should() {
        let net: IpNet = "10.1.0.0/16".parse().expect("cidr");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("mapped")));
        assert_eq!(net.to_string(), "10.1.0.0/16");
        let one: IpNet = "192.0.2.7".parse().expect("single");
        assert!(one.contains("192.0.2.7".parse().expect("ip")));
        assert!(!one.contains("192.0.2.8".parse().expect("ip")));
        let v6: IpNet = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
        let all: IpNet = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
    }

    #[test]
    fn bad_cidrs_are_refused_naming_the_setting() {
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x"] {
            let e = parse_trusted_proxies("--trusted-proxies", &[bad.into()]).expect_err(bad);
            assert_eq!(e.setting, "--trusted-proxies");
        }
        let ok = parse_trusted_proxies("--trusted-proxies", &["10.0.0.0/8, 127.0.0.1".into()])
            .expect("two");
        assert_eq!(ok.len(), 2);
    }
}
