//! Per-source protection, decided before the body is read: which client
//! addresses may post (`allow_ips`, with `gateway.trusted_proxies` naming
//! the proxies whose `X-Forwarded-For` is believed), and how many events per
//! second a source may send (`rate_limit`, a token bucket:
//! [`sluice_shared::rate_limit::RateLimiter`]).

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The client's address: the peer, or, when the peer is a trusted proxy, the
/// first address from the right of `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => client = ip.to_canonical(),
            // A garbled hop: the last address we could trust is all we know.
            Err(_) => break,
        }
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// Whether `ip` may post to a source with this allow list (empty: anyone).
pub fn allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    allow.is_empty() || allow.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let trusted = nets(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let headers = forwarded("203.0.113.9, 10.9.9.9");
        assert_eq!(
            client_ip(peer, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &headers, &trusted), stranger);
        assert_eq!(client_ip(peer, &headers, &[]), peer);
        // A client cannot hide behind a forged hop to the left of the real one.
        let forged = forwarded("1.1.1.1, 203.0.113.9");
        assert_eq!(
            client_ip(peer, &forged, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, &forwarded("garbage"), &trusted), peer);
    }

    #[test]
    fn an_allow_list_admits_its_blocks_and_an_empty_one_admits_all() {
        let allow = nets(&["192.0.2.0/24", "2001:db8::/32"]);
        assert!(allowed("192.0.2.77".parse().unwrap(), &allow));
        assert!(allowed("2001:db8::1".parse().unwrap(), &allow));
        assert!(!allowed("192.0.3.1".parse().unwrap(), &allow));
        assert!(allowed("192.0.3.1".parse().unwrap(), &[]));
    }
}
