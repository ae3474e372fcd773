//! Client addresses as postern keys them: IPv4-mapped IPv6 addresses count as
//! IPv4, and an IPv6 client is keyed by its /64 (one subscriber usually owns a
//! whole /64). A leaf module.

use std::net::{IpAddr, Ipv6Addr};

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are matched as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key for per-address limits.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_v6_is_v4() {
        let ip: IpAddr = "::ffff:192.168.1.2".parse().unwrap();
        assert_eq!(canonical_ip(ip), "192.168.1.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn v6_addresses_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let v4: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_key(v4), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
