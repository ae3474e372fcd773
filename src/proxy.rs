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

use tokio::io::AsyncReadExt as _;
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
    // Read exactly what `scan_header` asks for, so nothing after the header is taken.
    let mut buf = Vec::with_capacity(64);
    loop {
        match scan_header(&buf)? {
            HeaderScan::Complete { addr, .. } => return Ok(addr),
            HeaderScan::Need(n) => {
                let start = buf.len();
                buf.resize(start + n, 0);
                tcp.read_exact(&mut buf[start..])
                    .await
                    .map_err(|_| ProxyError::Closed)?;
            }
        }
    }
}

/// What the first bytes of a connection hold, as far as a PROXY header goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderScan {
    /// At least this many more bytes are needed; reading exactly that many never
    /// takes a byte past the header.
    Need(usize),
    /// A whole header in `buf[..consumed]`; `addr` as `parse_v1` / `parse_v2` say.
    Complete {
        consumed: usize,
        addr: Option<SocketAddr>,
    },
}

/// The sans-IO form of `read_header`: looks at the bytes received so far and
/// says how many more it needs, or what the header says.
///
/// # Errors
/// `ProxyError::Missing` or `Malformed` as soon as the bytes cannot start a
/// valid header.
pub fn scan_header(buf: &[u8]) -> Result<HeaderScan, ProxyError> {
    // 12 bytes are in every header: the v2 signature, or the start of a v1 line
    // (the shortest, "PROXY UNKNOWN\r\n", has 15).
    if buf.len() < 12 {
        return Ok(HeaderScan::Need(12 - buf.len()));
    }
    if buf[..12] == V2_SIGNATURE {
        let Some(head) = buf.get(..16) else {
            return Ok(HeaderScan::Need(16 - buf.len()));
        };
        let head: &[u8; 16] = head.try_into().map_err(|_| ProxyError::Missing)?;
        let total = 16 + v2_block_len(head)?;
        if buf.len() < total {
            return Ok(HeaderScan::Need(total - buf.len()));
        }
        return Ok(HeaderScan::Complete {
            consumed: total,
            addr: parse_v2(head, &buf[16..total])?,
        });
    }
    if &buf[..6] != b"PROXY " {
        return Err(ProxyError::Missing);
    }
    // v1: up to the first LF, within V1_MAX bytes; one byte at a time until then.
    let window = &buf[..buf.len().min(V1_MAX)];
    match memchr::memchr(b'\n', window) {
        Some(i) => Ok(HeaderScan::Complete {
            consumed: i + 1,
            addr: parse_v1(&buf[..=i])?,
        }),
        None if buf.len() >= V1_MAX => Err(ProxyError::Malformed("v1 line too long")),
        None => Ok(HeaderScan::Need(1)),
    }
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

    /// What `read_header` gives: the client's address, or why not.
    type Verdict = Result<Option<SocketAddr>, ProxyError>;

    /// Feeds `input` to `scan_header` exactly as `read_header` does (the bytes it
    /// asks for, no more); returns the result and how many bytes were taken.
    fn scan_as_read(input: &[u8]) -> (Verdict, usize) {
        let mut taken = 0;
        loop {
            match scan_header(&input[..taken]) {
                Err(e) => return (Err(e), taken),
                Ok(HeaderScan::Complete { consumed, addr }) => {
                    assert_eq!(
                        consumed, taken,
                        "a complete header is exactly what was read"
                    );
                    return (Ok(addr), taken);
                }
                Ok(HeaderScan::Need(n)) => {
                    assert!(n > 0);
                    if taken + n > input.len() {
                        return (Err(ProxyError::Closed), taken);
                    }
                    taken += n;
                }
            }
        }
    }

    #[test]
    fn scan_header_table() {
        let v4 = [192, 168, 10, 23, 10, 0, 0, 1, 0x9c, 0x40, 0, 25];
        let (h, b) = v2(1, 0x11, &v4);
        let mut v2_input = h.to_vec();
        v2_input.extend_from_slice(&b);
        v2_input.extend_from_slice(b"\x16\x03\x01 ClientHello");
        let long_v1 = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let rows: Vec<(&[u8], Verdict, usize)> = vec![
            (
                b"PROXY TCP4 192.168.10.23 10.0.0.1 40000 25\r\nEHLO x\r\n",
                Ok(addr("192.168.10.23:40000")),
                44,
            ),
            (b"PROXY UNKNOWN\r\n\x16\x03", Ok(None), 15),
            (&v2_input, Ok(addr("192.168.10.23:40000")), 28),
            (b"EHLO printer\r\n", Err(ProxyError::Missing), 12),
            (b"PROXY TCP4 1", Err(ProxyError::Closed), 12),
            (
                long_v1.as_bytes(),
                Err(ProxyError::Malformed("v1 line too long")),
                V1_MAX,
            ),
            (
                b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\n",
                Err(ProxyError::Malformed("v1 line must end with CRLF")),
                31,
            ),
            (&v2_input[..20], Err(ProxyError::Closed), 16),
        ];
        for (input, want, taken) in rows {
            let label = String::from_utf8_lossy(input).into_owned();
            assert_eq!(scan_as_read(input), (want.clone(), taken), "{label:?}");
            // All bytes at once: the same verdict.
            let whole = match scan_header(input) {
                Ok(HeaderScan::Complete { addr, .. }) => Ok(addr),
                Ok(HeaderScan::Need(_)) => Err(ProxyError::Closed),
                Err(e) => Err(e),
            };
            assert_eq!(whole, want, "{label:?} at once");
        }
    }
}
