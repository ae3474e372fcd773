//! Fuzzes the SMTP command parser: it must never panic, never accept a line
//! with a CR, LF, NUL or other control byte (a bare line end in a command is
//! how injection starts), and every error's reply must stay one short line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postern::smtp::command::{Command, ParseError, parse};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok(command) => {
            assert!(
                !data.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f),
                "accepted a control byte: {command:?}"
            );
            // What is kept for the upstream has no line end either.
            let kept = match &command {
                Command::Mail(m) => m.path.clone() + m.params.envid.as_deref().unwrap_or(""),
                Command::Rcpt(r) => r.path.clone() + r.params.orcpt.as_deref().unwrap_or(""),
                Command::Ehlo(d) | Command::Helo(d) => d.clone(),
                _ => String::new(),
            };
            assert!(!kept.contains(['\r', '\n', '\0']));
        }
        Err(error) => {
            if data.contains(&0) {
                assert_eq!(error, ParseError::Nul);
            }
            let mut out = Vec::new();
            error.reply().encode(&mut out);
            assert!(out.len() <= postern::smtp::reply::MAX_REPLY_LINE);
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(out.ends_with(b"\r\n"));
        }
    }
});
