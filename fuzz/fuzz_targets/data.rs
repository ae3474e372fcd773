//! The DATA framer over arbitrary input in arbitrary chunks: it never panics,
//! never hands out content with a bare CR or LF or a NUL, never a line over
//! 1000 octets, only ends at a `.` line that follows a CRLF, and when it accepts
//! a message, its content dot-stuffed again frames back to the same content,
//! and is byte for byte the input (up to the final `.CRLF`) whenever the sender
//! stuffed every line that starts with a dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::data::{MAX_TEXT_LINE, Receiver, Step, stuff_line};

fuzz_target!(|input: &[u8]| {
    // The first byte picks the chunk size, so the split points vary too.
    let Some((&chunk, data)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut rx = Receiver::new(1 << 20);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    // Input bytes the receiver has consumed, and its content re-stuffed.
    let mut taken = 0;
    let mut restuffed = Vec::new();
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
            Step::Content {
                start,
                len,
                consumed,
            } => {
                let line = &buf[start..start + len];
                assert!(line.ends_with(b"\r\n"));
                assert!(len <= MAX_TEXT_LINE);
                let body = &line[..line.len() - 2];
                assert!(!body.contains(&b'\r') && !body.contains(&b'\n') && !body.contains(&0));
                stuff_line(line, &mut restuffed);
                buf.drain(..consumed);
                taken += consumed;
            }
            Step::Skip { consumed } => {
                assert!(consumed > 0);
                assert!(
                    rx.is_poisoned(),
                    "skipped input of a message that is not refused"
                );
                buf.drain(..consumed);
                taken += consumed;
            }
            Step::End { consumed, result } => {
                assert_eq!(&buf[..consumed], b".\r\n");
                if let Ok(size) = result {
                    let sent = &data[..taken];
                    let unstuffed = restuffed.len() - count_stuffed(&restuffed);
                    assert_eq!(size, unstuffed as u64);
                    // A lone leading dot that the sender did not stuff is removed
                    // (RFC 5321 4.5.2); otherwise the wire form comes back exactly.
                    if !has_unstuffed_dot(sent) {
                        assert_eq!(restuffed, sent, "re-stuffed content differs");
                    }
                    let mut again = restuffed.clone();
                    again.extend_from_slice(b".\r\n");
                    let (content, end) = frame(&again);
                    assert_eq!(end, Some(Ok(size)), "re-stuffed content frames differently");
                    let mut restuffed_again = Vec::new();
                    for line in content.split_inclusive(|&b| b == b'\n') {
                        stuff_line(line, &mut restuffed_again);
                    }
                    assert_eq!(restuffed_again, restuffed);
                }
                return;
            }
        }
    }
});

/// True if a line of `wire` starts with a dot not followed by another dot.
fn has_unstuffed_dot(wire: &[u8]) -> bool {
    wire.split_inclusive(|&b| b == b'\n')
        .any(|line| line.first() == Some(&b'.') && line.get(1) != Some(&b'.'))
}

/// Frames `wire` in one buffer: the content lines and the end's verdict.
fn frame(wire: &[u8]) -> (Vec<u8>, Option<Result<u64, postern::smtp::data::DataError>>) {
    let mut rx = Receiver::new(1 << 20);
    let mut pos = 0;
    let mut content = Vec::new();
    loop {
        match rx.step(&wire[pos..]) {
            Step::Need => return (content, None),
            Step::Content {
                start,
                len,
                consumed,
            } => {
                content.extend_from_slice(&wire[pos + start..pos + start + len]);
                pos += consumed;
            }
            Step::Skip { consumed } => pos += consumed,
            Step::End { result, .. } => return (content, Some(result)),
        }
    }
}

/// How many lines of `wire` start with a dot (each carries one stuffing dot).
fn count_stuffed(wire: &[u8]) -> usize {
    let n = usize::from(wire.first() == Some(&b'.'));
    // Every line here ends with CRLF, so each "\r\n." is a line starting with a dot.
    n + wire.windows(3).filter(|w| w == b"\r\n.").count()
}
