//! The client's address: the peer, or, behind a trusted proxy, the right-most address in
//! `Forwarded` (RFC 7239) or `X-Forwarded-For` that is not itself a trusted proxy. Pure
//! functions over the peer, the headers and the trusted ranges.
//!
//! Only as much of a header is read as the walk from the right needs: whatever a client wrote
//! to the left of the first untrusted hop is never parsed, so it cannot push the answer back to
//! the proxy's own address. A hop that cannot be read where the walk needs it (`unknown`, an
//! obfuscated name, garbage) means the client cannot be named: the peer is used.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;

use crate::config::{IpNet, canonical};

/// The address a request is attributed to (recorded as `source_ip`, keyed by admission).
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = if headers.contains_key("forwarded") {
        forwarded_hops(headers)
    } else if headers.contains_key("x-forwarded-for") {
        x_forwarded_for_hops(headers)
    } else {
        return peer;
    };
    let mut leftmost = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(ip, trusted) => leftmost = ip,
            Some(ip) => return ip,
            None => return peer,
        }
    }
    // Every hop is a trusted proxy: the left-most one is as far back as anyone can say.
    leftmost
}

/// The `/64` of an IPv6 address, the `/32` of an IPv4 one: what one client is assumed to hold.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(masked))
        }
        v4 => v4,
    }
}

/// How a source key is written in records: the address, or `PREFIX/64` for IPv6.
pub fn source_label(key: IpAddr) -> String {
    match key {
        IpAddr::V6(_) => format!("{key}/64"),
        IpAddr::V4(_) => key.to_string(),
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// Every `X-Forwarded-For` line joined, split at commas, left to right.
fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `for=` value of every `Forwarded` element, left to right (an element without one, or
/// with two, yields an empty value, which names no address).
fn forwarded_hops(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|v| split_outside_quotes(&String::from_utf8_lossy(v.as_bytes()), ','))
        .map(|element| {
            let mut found = split_outside_quotes(&element, ';')
                .into_iter()
                .filter_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| unquote(value.trim()))
                });
            match (found.next(), found.next()) {
                (Some(v), None) => v,
                _ => String::new(),
            }
        })
        .collect()
}

/// Splits at `sep` where it is not inside a quoted string (RFC 7230 `quoted-string`).
fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

/// A token or a quoted string's content (backslash escapes removed).
fn unquote(value: &str) -> String {
    match value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if c == '\\' && !escaped {
                    escaped = true;
                } else {
                    out.push(c);
                    escaped = false;
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// One hop as an address: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:8080`; anything else (`unknown`, `_hidden`, garbage) is `None`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok
            .then(|| inside.parse::<Ipv6Addr>().ok())
            .flatten()
            .map(|v6| canonical(IpAddr::V6(v6)));
    }
    let (addr, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("cidr")).collect()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        h
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        assert_eq!(
            client_addr(ip("198.51.100.7"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.7")
        );
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Two header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "garbage, 203.0.113.9"),
            ("x-forwarded-for", "10.0.0.5"),
        ]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // Ports and brackets are tolerated.
        let h = headers(&[("x-forwarded-for", "[2001:db8::7]:443")]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::7"));
        let h = headers(&[("x-forwarded-for", "203.0.113.9:5000")]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn all_trusted_hops_name_the_left_most_and_no_header_names_the_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.5")]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("10.9.9.9"));
        assert_eq!(
            client_addr(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_malformed_hop_where_the_walk_needs_it_falls_back_to_the_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        for bad in [
            "not-an-ip",
            "",
            "203.0.113.9:99999",
            "[2001:db8::1",
            "1.2.3.4.5",
        ] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(
                client_addr(ip("10.0.0.1"), &h, &trusted),
                ip("10.0.0.1"),
                "{bad}"
            );
        }
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
        let h = headers(&[("forwarded", "for=_hidden, for=10.0.0.5")]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_reads_for_with_quoted_ipv6_ports_and_other_parameters() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, \
             For=\"[2001:db8:cafe::17]:4711\";host=\"a,b;c\", for=10.0.0.5",
        )]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), &h, &trusted),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("forwarded", "proto=https;for=\"198.51.100.17:8080\"")]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), &h, &trusted),
            ip("198.51.100.17")
        );
        // Forwarded wins over X-Forwarded-For when both are present.
        let h = headers(&[
            ("forwarded", "for=198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
        ]);
        assert_eq!(
            client_addr(ip("10.0.0.1"), &h, &trusted),
            ip("198.51.100.1")
        );
        // An element without for= names nobody.
        let h = headers(&[("forwarded", "proto=https")]);
        assert_eq!(client_addr(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn mapped_addresses_are_ipv4_and_ipv6_sources_are_their_64() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.9")]);
        assert_eq!(
            client_addr(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(
            source_label(source_key(ip("2001:db8:1:2::9"))),
            "2001:db8:1:2::/64"
        );
        assert_eq!(source_label(ip("192.0.2.1")), "192.0.2.1");
    }
}
