//! Fuzzes the SMTP command parser: it must never panic, and every error's
//! reply must stay one short line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::command::parse;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = parse(data) {
        let mut out = Vec::new();
        error.reply().encode(&mut out);
        assert!(out.len() <= postern::smtp::reply::MAX_REPLY_LINE);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(out.ends_with(b"\r\n"));
    }
});
