//! Table tests for the command parser: verbs, errors and their replies, and
//! properties; MAIL and RCPT tables in `tests/mail.rs` and `tests/rcpt.rs`.

use super::*;
use ParseError::*;

fn mail(path: &str, params: MailParams) -> Result<Command, ParseError> {
    Ok(Command::Mail(MailFrom {
        path: path.into(),
        params,
    }))
}

fn mail0(path: &str) -> Result<Command, ParseError> {
    mail(path, MailParams::default())
}

fn rcpt(path: &str, params: RcptParams) -> Result<Command, ParseError> {
    Ok(Command::Rcpt(RcptTo {
        path: path.into(),
        params,
    }))
}

fn rcpt0(path: &str) -> Result<Command, ParseError> {
    rcpt(path, RcptParams::default())
}

fn auth(mechanism: &str, initial: Option<&str>) -> Result<Command, ParseError> {
    Ok(Command::Auth {
        mechanism: mechanism.into(),
        initial: initial.map(Into::into),
    })
}

fn unknown_param(p: &str) -> Result<Command, ParseError> {
    Err(UnknownParameter(p.into()))
}

fn check(rows: &[(&str, Result<Command, ParseError>)]) {
    for (line, want) in rows {
        assert_eq!(parse(line.as_bytes()), *want, "{line:?}");
    }
}

#[test]
fn verbs() {
    check(&[
        (
            "EHLO client.example",
            Ok(Command::Ehlo("client.example".into())),
        ),
        (
            "ehlo client.example",
            Ok(Command::Ehlo("client.example".into())),
        ),
        ("EhLo [192.0.2.1]", Ok(Command::Ehlo("[192.0.2.1]".into()))),
        ("EHLO  printer_01 ", Ok(Command::Ehlo("printer_01".into()))),
        ("HELO client", Ok(Command::Helo("client".into()))),
        ("helo client", Ok(Command::Helo("client".into()))),
        ("STARTTLS", Ok(Command::StartTls)),
        ("starttls", Ok(Command::StartTls)),
        ("AUTH PLAIN", auth("PLAIN", None)),
        ("auth plain AGEAYg==", auth("PLAIN", Some("AGEAYg=="))),
        ("AUTH LOGIN =", auth("LOGIN", Some("="))),
        ("auth cram-md5", auth("CRAM-MD5", None)),
        ("AUTH X_OAUTH2", auth("X_OAUTH2", None)),
        ("MAIL FROM:<a@b.c>", mail0("a@b.c")),
        ("mail from:<a@b.c>", mail0("a@b.c")),
        ("RCPT TO:<a@b.c>", rcpt0("a@b.c")),
        ("rcpt to:<a@b.c>", rcpt0("a@b.c")),
        ("DATA", Ok(Command::Data)),
        ("data", Ok(Command::Data)),
        ("RSET", Ok(Command::Rset)),
        ("rset", Ok(Command::Rset)),
        ("NOOP", Ok(Command::Noop)),
        ("noop whatever you like", Ok(Command::Noop)),
        ("HELP", Ok(Command::Help)),
        ("help mail", Ok(Command::Help)),
        ("VRFY", Ok(Command::Vrfy)),
        ("vrfy someone", Ok(Command::Vrfy)),
        ("QUIT", Ok(Command::Quit)),
        ("quit", Ok(Command::Quit)),
        ("QUIT ", Ok(Command::Quit)),
        ("  QUIT\t", Ok(Command::Quit)),
        ("EXPN x", Err(NotImplemented)),
        ("expn", Err(NotImplemented)),
        ("TURN", Err(NotImplemented)),
        (
            "BDAT 100 LAST",
            Ok(Command::Bdat {
                size: 100,
                last: true,
            }),
        ),
        (
            "bdat 0 last",
            Ok(Command::Bdat {
                size: 0,
                last: true,
            }),
        ),
        (
            "BDAT 007",
            Ok(Command::Bdat {
                size: 7,
                last: false,
            }),
        ),
        (
            "BDAT 18446744073709551615",
            Ok(Command::Bdat {
                size: u64::MAX,
                last: false,
            }),
        ),
        ("BDAT", Err(BadChunk("BDAT needs a chunk size"))),
        ("BDAT -1", Err(BadChunk("chunk size must be digits"))),
        ("BDAT +1", Err(BadChunk("chunk size must be digits"))),
        ("BDAT 1k", Err(BadChunk("chunk size must be digits"))),
        (
            "BDAT 18446744073709551616",
            Err(BadChunk("chunk size too large")),
        ),
        (
            "BDAT 10 FIRST",
            Err(BadChunk("expected LAST after the chunk size")),
        ),
        ("BDAT 10 LAST x", Err(BadChunk("too many arguments"))),
        ("ETRN example.com", Err(NotImplemented)),
        ("ATRN", Err(NotImplemented)),
        ("SEND FROM:<a@b>", Err(NotImplemented)),
        ("SOML FROM:<a@b>", Err(NotImplemented)),
        ("saml FROM:<a@b>", Err(NotImplemented)),
        ("VERB", Err(NotImplemented)),
        ("ONEX", Err(NotImplemented)),
        ("FOO", Err(Unrecognized)),
        ("", Err(Unrecognized)),
        ("   ", Err(Unrecognized)),
        ("MAILFROM:<a@b>", Err(Unrecognized)),
        ("QUITX", Err(Unrecognized)),
        ("DATAü", Err(Unrecognized)),
    ]);
}

#[test]
fn verb_errors() {
    check(&[
        ("EHLO", Err(Syntax("EHLO needs a domain"))),
        ("EHLO   ", Err(Syntax("EHLO needs a domain"))),
        ("HELO", Err(Syntax("HELO needs a domain"))),
        ("EHLO a b", Err(Syntax("too many arguments"))),
        ("EHLO bücher.de", Err(Syntax("domain must be ASCII"))),
        (
            &format!("EHLO {}", "a".repeat(256)),
            Err(Syntax("domain too long")),
        ),
        (
            "STARTTLS now",
            Err(Syntax("this command takes no arguments")),
        ),
        ("DATA x", Err(Syntax("this command takes no arguments"))),
        ("RSET x", Err(Syntax("this command takes no arguments"))),
        ("QUIT x", Err(Syntax("this command takes no arguments"))),
        ("AUTH", Err(Syntax("AUTH needs a mechanism"))),
        ("AUTH PLAIN a b", Err(Syntax("too many arguments"))),
        ("AUTH PL@IN", Err(Syntax("bad mechanism name"))),
        (
            "AUTH ABCDEFGHIJKLMNOPQRSTU",
            Err(Syntax("bad mechanism name")),
        ),
        (
            "AUTH PLAIN a*b",
            Err(Syntax("initial response must be base64")),
        ),
        ("AUTH PLÄIN", Err(Syntax("bad mechanism name"))),
    ]);
}

#[test]
fn control_and_encoding() {
    let rows: &[(&[u8], Result<Command, ParseError>)] = &[
        (b"NOOP\0", Err(Nul)),
        (b"MAIL FROM:<a\0@b>", Err(Nul)),
        (b"\0.", Err(Nul)),
        (b"QUIT\r\0", Err(Nul)),
        (b"QUIT\r", Err(ControlCharacter)),
        (b"RCPT TO:<a@b>\n", Err(ControlCharacter)),
        (b"HELP \x1b[2J", Err(ControlCharacter)),
        (b"DATA\x7f", Err(ControlCharacter)),
        (b"\xff\xfe", Err(Unrecognized)),
        (b"QU\xc3\x8fT", Err(Unrecognized)),
        (b"MAIL FROM:<\xff@b>", Err(Syntax("invalid UTF-8"))),
        (b"RCPT TO:<a@b> NOTIFY=\xc3", Err(Syntax("invalid UTF-8"))),
        (b"EHLO \xff", Err(Syntax("invalid UTF-8"))),
        (b"NOOP \xff", Ok(Command::Noop)),
        (b"MAIL\tFROM:<a@b>", mail0("a@b")),
    ];
    for (line, want) in rows {
        assert_eq!(parse(line), *want, "{line:?}");
    }
}

mod mail;
mod rcpt;

#[test]
fn error_replies() {
    let rows: &[(ParseError, &str)] = &[
        (Unrecognized, "500 5.5.1 Command unrecognized\r\n"),
        (NotImplemented, "502 5.5.1 Command not implemented\r\n"),
        (
            Syntax("duplicate parameter"),
            "501 5.5.4 Syntax error: duplicate parameter\r\n",
        ),
        (
            BadAddress("local part too long"),
            "553 5.1.7 Bad address syntax: local part too long\r\n",
        ),
        (
            UnknownParameter("FOO".into()),
            "555 5.5.4 Unsupported parameter FOO\r\n",
        ),
        (
            UnknownParameter("X".repeat(100)),
            "555 5.5.4 Unsupported parameter XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n",
        ),
        (
            ControlCharacter,
            "500 5.5.2 Control characters are not allowed in commands\r\n",
        ),
        (Nul, "500 5.5.2 NUL bytes are not allowed in commands\r\n"),
    ];
    for (error, want) in rows {
        let mut out = Vec::new();
        error.reply().encode(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), *want, "{error:?}");
    }
}

#[test]
fn replies_never_echo_much_input() {
    // Every error from a hostile line must produce a short, single reply line.
    let long = "Z".repeat(2000);
    let lines = [
        format!("AUTH PLAIN {long} extra"),
        format!("MAIL FROM:<a@b> {long}=1"),
        format!("MAIL FROM:<{long}@b>"),
        format!("RCPT TO:<a@b> NOTIFY={long}"),
        long.clone(),
    ];
    for line in &lines {
        let error = parse(line.as_bytes()).unwrap_err();
        let mut out = Vec::new();
        error.reply().encode(&mut out);
        assert!(out.len() <= 64 + 32, "{error:?}");
        assert!(
            !String::from_utf8(out)
                .unwrap()
                .contains("ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ")
        );
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Lines that would parse but for what is spliced into them.
    fn command_line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("MAIL FROM:<a@example.com> SIZE=10".to_owned()),
            Just("RCPT TO:<b@example.net> NOTIFY=NEVER".to_owned()),
            Just("EHLO client.test".to_owned()),
            Just("AUTH PLAIN AHUAcA==".to_owned()),
            Just("NOOP".to_owned()),
            Just("DATA".to_owned()),
            "[A-Z]{4} [ -~]{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A line with a CR or LF anywhere (the line framer has already cut at
        /// CRLF, so any left is bare) is never accepted, and neither is a NUL.
        #[test]
        fn never_accepts_a_bare_cr_lf_or_nul(
            line in command_line(),
            at in any::<prop::sample::Index>(),
            splice in prop::sample::select(&["\r", "\n", "\r\n", "\0", "\n.\n"][..]),
        ) {
            let mut bytes = line.clone().into_bytes();
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, splice.bytes());
            let want = if splice.contains('\0') { Nul } else { ControlCharacter };
            prop_assert_eq!(parse(&bytes), Err(want));
        }

        /// Arbitrary bytes: no panic, and anything accepted holds no control byte.
        #[test]
        fn accepted_lines_hold_no_control_bytes(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            if parse(&bytes).is_ok() {
                prop_assert!(!bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f));
            }
        }
    }
}
