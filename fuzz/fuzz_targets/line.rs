//! The bounded line scanner for commands and SASL responses: whatever the
//! buffer holds, `scan` says exactly what the bytes are (a CRLF line, a bare-LF
//! line, too long, or incomplete), never looks past `max`, and `skip_to_lf`
//! stops just after the first LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::line::{Scan, scan, skip_to_lf};

fuzz_target!(|input: &[u8]| {
    // The first two bytes pick the limit (1..=65536), the rest is the buffer.
    let Some((limit, buf)) = input.split_first_chunk::<2>() else {
        return;
    };
    let max = usize::from(u16::from_le_bytes(*limit)) + 1;
    let first_lf = buf.iter().position(|&b| b == b'\n');
    match scan(buf, max) {
        Scan::Incomplete => {
            assert!(buf.len() < max);
            assert_eq!(first_lf, None);
        }
        Scan::TooLong => {
            assert!(buf.len() >= max);
            assert!(first_lf.is_none_or(|i| i >= max));
        }
        Scan::Line { len, consumed } => {
            assert_eq!(consumed, len + 2);
            assert!(consumed <= max);
            assert_eq!(&buf[len..consumed], b"\r\n");
            assert_eq!(first_lf, Some(len + 1));
        }
        Scan::BareLf { consumed } => {
            assert!(consumed <= max);
            assert_eq!(first_lf, Some(consumed - 1));
            assert!(consumed == 1 || buf[consumed - 2] != b'\r');
        }
    }
    let (dropped, done) = skip_to_lf(buf);
    match first_lf {
        Some(i) => assert_eq!((dropped, done), (i + 1, true)),
        None => assert_eq!((dropped, done), (buf.len(), false)),
    }
});
