//! Fuzzes the upstream reply parser: the input is split into lines on CRLF and
//! fed to one parser, which starts a new reply after each complete reply or
//! error. A complete reply must re-encode into bounded lines that parse back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::reply::{MAX_REPLY_LINE, Reply, ReplyParser};

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::new();
    for line in split_crlf(data) {
        if let Ok(Some(reply)) = parser.push(line) {
            check_encoding(&reply);
            let _ = reply.to_string();
            check_encoding(&reply.prefixed("upstream fuzz: "));
        }
    }
});

/// Splits `data` on every `\r\n`.
fn split_crlf(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                rest = Some(&current[i + 2..]);
                Some(&current[..i])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The wire form has bounded CRLF-terminated lines with no other CR or LF,
/// and reads back as a reply with the same code and number of lines.
fn check_encoding(reply: &Reply) {
    let mut out = Vec::new();
    reply.encode(&mut out);
    assert!(out.ends_with(b"\r\n"));
    let mut reparser = ReplyParser::new();
    let mut reparsed = None;
    let lines: Vec<&[u8]> = split_crlf(&out[..out.len() - 2]).collect();
    for line in &lines {
        assert!(line.len() + 2 <= MAX_REPLY_LINE);
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
        reparsed = reparser.push(line).expect("encoded reply parses back");
    }
    let reparsed = reparsed.expect("encoded reply is complete");
    assert_eq!(reparsed.code, reply.code);
    assert_eq!(reparsed.lines.len(), reply.lines.len().max(1));
}
