//! Network targets from users (sources, destinations, watermark images, callback URLs) are
//! untrusted: by default they may not point into the operator's own network. This module decides
//! which addresses count as private; the operator can allow them (`allow_private_targets`), as the
//! tests do for 127.0.0.1 peers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The URL has no host.
    #[error("url has no host")]
    NoHost,
    /// The host is, or resolves to, a private, loopback, link-local or otherwise internal address.
    #[error("host {0} is a private or internal address")]
    Private(String),
}

/// True for addresses a user-supplied URL may not reach unless the operator allows it:
/// loopback, private (RFC 1918, unique-local), link-local, carrier-grade NAT, unspecified,
/// multicast, broadcast, documentation and benchmarking ranges, and IPv4 mapped into IPv6.
pub fn is_internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link local
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::from([0u8; 16])
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, _, _] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

/// Whether a host as written in a URL (an IP literal, bracketed or not, or a name) is internal.
/// Names are judged by their form only (`localhost`, `*.localhost`, `*.internal`, `*.local`);
/// what a name resolves to is checked by [`check_resolved`] where the connection is made.
pub fn host_is_internal(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Some(ip) = numeric_host(bare) {
        return is_internal_ip(ip);
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.ends_with(".internal")
        || name.ends_with(".local")
}

/// The address a host written as a number stands for: an IP literal, or one of the IPv4 forms
/// that resolvers and browsers accept (`0`, `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`). The
/// `url` crate normalizes these for `http(s)` but keeps the host of `rtmp://` and `rtsp://` URLs
/// as written, and `getaddrinfo` then connects to 0.0.0.0 for `rtmp://0/…`, so the forms are
/// read here with the WHATWG IPv4 parser (by parsing the host as that of an `http` URL).
pub fn numeric_host(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x' || b == b'X')
    {
        return None;
    }
    match url::Url::parse(&format!("http://{host}/")).ok()?.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        _ => None,
    }
}

/// Checks the host of a URL as written (IP literals and well-known internal names); names are
/// checked again after resolution by [`check_resolved`] where the connection is made.
pub fn check_url_host(url: &url::Url, allow_private: bool) -> Result<(), TargetError> {
    let host = url.host_str().ok_or(TargetError::NoHost)?;
    if !allow_private && host_is_internal(host) {
        return Err(TargetError::Private(host.to_string()));
    }
    Ok(())
}

/// Checks the addresses a name resolved to, right before connecting (defeats DNS names that
/// point inside).
pub fn check_resolved(
    host: &str,
    addrs: &[IpAddr],
    allow_private: bool,
) -> Result<(), TargetError> {
    if allow_private {
        return Ok(());
    }
    match addrs.iter().find(|ip| is_internal_ip(**ip)) {
        Some(ip) => Err(TargetError::Private(format!("{host} ({ip})"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_internal_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_internal_ip(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn url_hosts() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(check_url_host(&url("rtmp://127.0.0.1:1935/live/x"), false).is_err());
        assert!(check_url_host(&url("rtmp://127.0.0.1:1935/live/x"), true).is_ok());
        assert!(check_url_host(&url("http://LOCALHOST./cb"), false).is_err());
        assert!(check_url_host(&url("http://[::1]/cb"), false).is_err());
        assert!(check_url_host(&url("http://example.com/cb"), false).is_ok());
        assert!(check_resolved("evil.example", &["10.0.0.5".parse().unwrap()], false).is_err());
    }

    #[test]
    fn numeric_hosts_are_read_as_addresses() {
        for host in [
            "0",
            "2130706433",
            "0x7f.1",
            "0177.0.0.1",
            "127.1",
            "0x7f000001",
            "0.0.0.0",
        ] {
            assert!(host_is_internal(host), "{host}");
        }
        assert_eq!(numeric_host("127.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(numeric_host("134744072"), Some("8.8.8.8".parse().unwrap()));
        // Names made only of hex digits are names when they do not form an address.
        assert_eq!(numeric_host("cafe"), None);
        assert_eq!(numeric_host("deadbeef.example"), None);
        assert!(!host_is_internal("cafe"));
    }
}
