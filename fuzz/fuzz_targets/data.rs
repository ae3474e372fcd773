//! The DATA framer over arbitrary input in arbitrary chunks: it never panics,
//! never hands out content with a bare CR or LF, never a line over 1000 octets,
//! and only ends at a `.` line that follows a CRLF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::data::{MAX_TEXT_LINE, Receiver, Step};

fuzz_target!(|input: &[u8]| {
    // The first byte picks the chunk size, so the split points vary too.
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut rx = Receiver::new(1 << 20);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    loop {
        match rx.step(&buf) {
            Step::Need => {
                if fed >= data.len() {
                    return;
                }
                let end = (fed + chunk).min(data.len());
                buf.extend_from_slice(&data[fed..end]);
                fed = end;
            }
            Step::Content { start, len, consumed } => {
                let line = &buf[start..start + len];
                assert!(line.ends_with(b"\r\n"));
                assert!(len <= MAX_TEXT_LINE);
                let body = &line[..line.len() - 2];
                assert!(!body.contains(&b'\r') && !body.contains(&b'\n'));
                buf.drain(..consumed);
            }
            Step::Skip { consumed } => {
                assert!(consumed > 0);
                buf.drain(..consumed);
            }
            Step::End { consumed, .. } => {
                assert_eq!(&buf[..consumed], b".\r\n");
                return;
            }
        }
    }
});
