//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary), on listeners
//! with `proxy_protocol = true`: the load balancer in front of postern says who
//! the client really is, so limits, trusted `networks` and logs use the
//! client's address rather than the balancer's.
//!
//! The header is read byte-exact (nothing after it is consumed: an implicit-TLS
//! ClientHello may follow in the same packet), only from sources in
//! `proxy_from`, within a deadline. The parsing is pure and table-tested.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The PROXY v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// Longest v2 address block postern reads (addresses plus TLVs).
const V2_MAX_LEN: usize = 1024;
/// The header must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY header")]
    Missing,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    #[error("PROXY header not received in time")]
    Timeout,
    #[error("connection closed before the PROXY header ended")]
    Closed,
}

/// Parses a v1 line (with its CRLF). `Ok(None)` for `PROXY UNKNOWN` (keep the
/// connection's own address).
pub fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or(ProxyError::Malformed("v1 line must end with CRLF"))?;
    let mut words = text.split(' ');
    if words.next() != Some("PROXY") {
        return Err(ProxyError::Missing);
    }
    let family = words.next().ok_or(ProxyError::Malformed("no protocol"))?;
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let (Some(src), Some(_dst), Some(sport), Some(_dport), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err(ProxyError::Malformed("v1 needs four address fields"));
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(
            src.parse()
                .map_err(|_| ProxyError::Malformed("bad IPv4 source"))?,
        ),
        "TCP6" => IpAddr::V6(
            src.parse()
                .map_err(|_| ProxyError::Malformed("bad IPv6 source"))?,
        ),
        _ => {
            return Err(ProxyError::Malformed(
                "protocol must be TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let port: u16 = sport
        .parse()
        .map_err(|_| ProxyError::Malformed("bad source port"))?;
    Ok(Some(SocketAddr::new(ip, port)))
}

/// From the 16 fixed bytes of a v2 header: the length of the block that follows.
pub fn v2_block_len(head: &[u8; 16]) -> Result<usize, ProxyError> {
    if head[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    if head[12] >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version must be 2"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > V2_MAX_LEN {
        return Err(ProxyError::Malformed("v2 block too long"));
    }
    Ok(len)
}

/// The source address from a v2 header's fixed bytes and its block. `Ok(None)`
/// for LOCAL (health checks from the balancer itself) and for families other
/// than TCP over IPv4/IPv6.
pub fn parse_v2(head: &[u8; 16], block: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    match head[12] & 0x0f {
        0 => return Ok(None),
        1 => {}
        _ => return Err(ProxyError::Malformed("v2 command must be LOCAL or PROXY")),
    }
    match head[13] {
        // TCP over IPv4: src(4) dst(4) sport(2) dport(2)
        0x11 => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv4 block too short"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        // TCP over IPv6: src(16) dst(16) sport(2) dport(2)
        0x21 => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyError::Malformed("v2 IPv6 block too short"))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(src);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        _ => Ok(None),
    }
}

/// Reads one PROXY header (v1 or v2) from the start of `tcp`, consuming exactly
/// its bytes. Returns the client's address (or `None` to keep the connection's).
///
/// # Errors
/// `ProxyError` on a missing, malformed, late or cut-off header.
pub async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    match tokio::time::timeout(HEADER_TIMEOUT, read_header_inner(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::Timeout),
    }
}

async fn read_header_inner(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    // 12 bytes are in every header: the v2 signature, or the start of a v1 line
    // (the shortest, "PROXY UNKNOWN\r\n", has 15).
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head[..12])
        .await
        .map_err(|_| ProxyError::Closed)?;
    if head[..12] == V2_SIGNATURE {
        tcp.read_exact(&mut head[12..])
            .await
            .map_err(|_| ProxyError::Closed)?;
        let len = v2_block_len(&head)?;
        let mut block = vec![0u8; len];
        tcp.read_exact(&mut block)
            .await
            .map_err(|_| ProxyError::Closed)?;
        return parse_v2(&head, &block);
    }
    if &head[..6] != b"PROXY " {
        return Err(ProxyError::Missing);
    }
    // v1: the rest of the line, one byte at a time so nothing after it is taken.
    let mut line = head[..12].to_vec();
    while !line.ends_with(b"\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::Malformed("v1 line too long"));
        }
        let b = tcp.read_u8().await.map_err(|_| ProxyError::Closed)?;
        line.push(b);
    }
    parse_v1(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_table() {
        let rows: &[(&str, Result<Option<&str>, ProxyError>)] = &[
            (
                "PROXY TCP4 192.168.10.23 10.0.0.1 40000 25\r\n",
                Ok(Some("192.168.10.23:40000")),
            ),
            (
                "PROXY TCP6 2001:db8::7 2001:db8::1 5000 587\r\n",
                Ok(Some("[2001:db8::7]:5000")),
            ),
            ("PROXY UNKNOWN\r\n", Ok(None)),
            ("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", Ok(None)),
            (
                "PROXY TCP4 192.168.10.23 10.0.0.1 40000 25\n",
                Err(ProxyError::Malformed("v1 line must end with CRLF")),
            ),
            (
                "PROXY TCP4 192.168.10.23 10.0.0.1 40000\r\n",
                Err(ProxyError::Malformed("v1 needs four address fields")),
            ),
            (
                "PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n",
                Err(ProxyError::Malformed("bad IPv4 source")),
            ),
            (
                "PROXY TCP4 1.1.1.1 10.0.0.1 70000 2\r\n",
                Err(ProxyError::Malformed("bad source port")),
            ),
            (
                "PROXY UDP4 1.1.1.1 10.0.0.1 1 2\r\n",
                Err(ProxyError::Malformed(
                    "protocol must be TCP4, TCP6 or UNKNOWN",
                )),
            ),
            ("EHLO printer\r\n", Err(ProxyError::Missing)),
        ];
        for (line, want) in rows {
            let want = want
                .clone()
                .map(|o| o.map(|a| a.parse::<SocketAddr>().unwrap()));
            assert_eq!(parse_v1(line.as_bytes()), want, "{line:?}");
        }
    }

    fn v2(cmd: u8, fam: u8, block: &[u8]) -> ([u8; 16], Vec<u8>) {
        let mut head = [0u8; 16];
        head[..12].copy_from_slice(&V2_SIGNATURE);
        head[12] = 0x20 | cmd;
        head[13] = fam;
        head[14..].copy_from_slice(&(block.len() as u16).to_be_bytes());
        (head, block.to_vec())
    }

    #[test]
    fn v2_table() {
        let v4 = [192, 168, 10, 23, 10, 0, 0, 1, 0x9c, 0x40, 0, 25];
        let (h, b) = v2(1, 0x11, &v4);
        assert_eq!(v2_block_len(&h), Ok(12));
        assert_eq!(
            parse_v2(&h, &b),
            Ok(Some("192.168.10.23:40000".parse().unwrap()))
        );

        let mut v6 = [0u8; 36];
        v6[..16].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        v6[32..34].copy_from_slice(&5000u16.to_be_bytes());
        let (h, b) = v2(1, 0x21, &v6);
        assert_eq!(
            parse_v2(&h, &b),
            Ok(Some("[2001:db8::7]:5000".parse().unwrap()))
        );

        let (h, b) = v2(0, 0x00, &[]);
        assert_eq!(
            parse_v2(&h, &b),
            Ok(None),
            "LOCAL keeps the connection's address"
        );
        let (h, b) = v2(1, 0x11, &v4[..8]);
        assert!(parse_v2(&h, &b).is_err(), "short block");
        let (mut h, _) = v2(1, 0x11, &v4);
        h[12] = 0x11;
        assert!(v2_block_len(&h).is_err(), "version 1 in a v2 header");
        let (mut h, _) = v2(1, 0x11, &v4);
        h[14..].copy_from_slice(&4000u16.to_be_bytes());
        assert!(v2_block_len(&h).is_err(), "oversized block");
        let (mut h, _) = v2(1, 0x11, &v4);
        h[0] = b'X';
        assert_eq!(v2_block_len(&h), Err(ProxyError::Missing));
    }
}
