//! Bounded CRLF line framing for commands and SASL responses.
//!
//! `scan` looks at buffered input and says whether a whole line is there. It never
//! asks for more than `max` bytes: a line that does not end within `max` bytes is
//! `TooLong`, and the caller discards input up to the next LF (`skip_to_lf`), so
//! memory stays bounded whatever the client sends (RFC 5321 §4.5.3.1.4).

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// No LF yet and fewer than `max` bytes: read more.
    Incomplete,
    /// A line `buf[..len]` terminated by CRLF; `consumed` = len + 2.
    Line { len: usize, consumed: usize },
    /// A line terminated by a bare LF (no CR before it): refuse it.
    BareLf { consumed: usize },
    /// `max` bytes and no LF among them.
    TooLong,
}

/// Scans `buf` for one line of at most `max` bytes including its CRLF.
pub fn scan(buf: &[u8], max: usize) -> Scan {
    let window = &buf[..buf.len().min(max)];
    match memchr::memchr(b'\n', window) {
        Some(i) if i > 0 && window[i - 1] == b'\r' => Scan::Line {
            len: i - 1,
            consumed: i + 1,
        },
        Some(i) => Scan::BareLf { consumed: i + 1 },
        None if buf.len() >= max => Scan::TooLong,
        None => Scan::Incomplete,
    }
}

/// While discarding an over-long line: how many bytes of `buf` to drop, and
/// whether the line's LF was among them (discarding is then over).
pub fn skip_to_lf(buf: &[u8]) -> (usize, bool) {
    match memchr::memchr(b'\n', buf) {
        Some(i) => (i + 1, true),
        None => (buf.len(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_table() {
        let rows: &[(&[u8], usize, Scan)] = &[
            (b"", 10, Scan::Incomplete),
            (b"NOOP", 10, Scan::Incomplete),
            (b"NOOP\r", 10, Scan::Incomplete),
            (
                b"NOOP\r\n",
                10,
                Scan::Line {
                    len: 4,
                    consumed: 6,
                },
            ),
            (
                b"NOOP\r\nQUIT\r\n",
                10,
                Scan::Line {
                    len: 4,
                    consumed: 6,
                },
            ),
            (
                b"\r\n",
                10,
                Scan::Line {
                    len: 0,
                    consumed: 2,
                },
            ),
            (b"NOOP\n", 10, Scan::BareLf { consumed: 5 }),
            (b"\n", 10, Scan::BareLf { consumed: 1 }),
            (b"0123456789", 10, Scan::TooLong),
            (
                b"01234567\r\n",
                10,
                Scan::Line {
                    len: 8,
                    consumed: 10,
                },
            ),
            (b"012345678\r\n", 10, Scan::TooLong),
            (
                b"a\rb\r\n",
                10,
                Scan::Line {
                    len: 3,
                    consumed: 5,
                },
            ),
        ];
        for (input, max, want) in rows {
            assert_eq!(
                scan(input, *max),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn skip_table() {
        assert_eq!(skip_to_lf(b"xxxx"), (4, false));
        assert_eq!(skip_to_lf(b"xx\nNOOP\r\n"), (3, true));
        assert_eq!(skip_to_lf(b""), (0, false));
    }
}
