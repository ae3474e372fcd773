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
        ("BDAT 100 LAST", Err(NotImplemented)),
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

#[test]
fn mail_paths() {
    let long_local = "a".repeat(65);
    let ok_local = "a".repeat(64);
    let long_domain = format!("{}.com", "d".repeat(252));
    let ok_domain = format!("{}.com", "d".repeat(180));
    // 64 + 1 + 189 = 254 octets, 256 with the brackets.
    let max_path = format!("{ok_local}@{}.com", "d".repeat(185));
    let long_path = format!("{ok_local}@{}.com", "d".repeat(186));
    check(&[
        ("MAIL FROM:<>", mail0("")),
        ("MAIL FROM: <>", mail0("")),
        ("MAIL FROM: <a@b.c>", mail0("a@b.c")),
        ("MAIL FROM:<A.B@Example.COM>", mail0("A.B@Example.COM")),
        ("MAIL  FROM:<a@b>", mail0("a@b")),
        ("MAIL FROM:<a@b>   ", mail0("a@b")),
        ("MAIL FROM:<\"a>b\"@c.d>", mail0("\"a>b\"@c.d")),
        ("MAIL FROM:<\"a b@c\"@d.e>", mail0("\"a b@c\"@d.e")),
        ("MAIL FROM:<\"a\\\"b\"@c.d>", mail0("\"a\\\"b\"@c.d")),
        ("MAIL FROM:<\"\"@c.d>", mail0("\"\"@c.d")),
        (
            "MAIL FROM:<!#$%&'*+-/=?^_`{|}~@x.y>",
            mail0("!#$%&'*+-/=?^_`{|}~@x.y"),
        ),
        ("MAIL FROM:<a@[192.0.2.1]>", mail0("a@[192.0.2.1]")),
        (
            "MAIL FROM:<a@[IPv6:2001:db8::1]>",
            mail0("a@[IPv6:2001:db8::1]"),
        ),
        ("MAIL FROM:<a@[x-tag:stuff]>", mail0("a@[x-tag:stuff]")),
        ("MAIL FROM:<@a,@b:user@d>", mail0("user@d")),
        ("MAIL FROM:<@[IPv6:::1]:user@d>", mail0("user@d")),
        (
            "MAIL FROM:<a@xn--bcher-kva.de>",
            mail0("a@xn--bcher-kva.de"),
        ),
        ("MAIL FROM:<a@b-c.d>", mail0("a@b-c.d")),
        (
            "MAIL FROM:<ü@例え.jp> SMTPUTF8",
            mail(
                "ü@例え.jp",
                MailParams {
                    smtputf8: true,
                    ..Default::default()
                },
            ),
        ),
        (
            &format!("MAIL FROM:<{ok_local}@x>"),
            mail0(&format!("{ok_local}@x")),
        ),
        (
            &format!("MAIL FROM:<a@{ok_domain}>"),
            mail0(&format!("a@{ok_domain}")),
        ),
        (&format!("MAIL FROM:<{max_path}>"), mail0(&max_path)),
        // Syntax errors: the command's shape is wrong.
        ("MAIL", Err(Syntax("expected FROM:<address>"))),
        ("MAIL TO:<a@b>", Err(Syntax("expected FROM:<address>"))),
        ("MAIL FROM <a@b>", Err(Syntax("expected FROM:<address>"))),
        ("MAIL FROM:", Err(Syntax("missing address"))),
        (
            "MAIL FROM:a@b",
            Err(Syntax("address must be in angle brackets")),
        ),
        (
            "MAIL FROM:  <a@b>",
            Err(Syntax("address must be in angle brackets")),
        ),
        ("MAIL FROM:<a@b", Err(Syntax("unterminated address"))),
        ("MAIL FROM:<\"a>b@c", Err(Syntax("unterminated address"))),
        ("MAIL FROM:<a@b>SIZE=1", Err(Syntax("junk after address"))),
        // Bad addresses.
        ("MAIL FROM:<postmaster>", Err(BadAddress("missing domain"))),
        ("MAIL FROM:<a@>", Err(BadAddress("missing domain"))),
        ("MAIL FROM:<\"a\">", Err(BadAddress("missing domain"))),
        ("MAIL FROM:<\"a\"b@c>", Err(BadAddress("bad local part"))),
        ("MAIL FROM:<a..b@c>", Err(BadAddress("bad local part"))),
        ("MAIL FROM:<.a@c>", Err(BadAddress("bad local part"))),
        ("MAIL FROM:<a.@c>", Err(BadAddress("bad local part"))),
        ("MAIL FROM:<a b@c>", Err(BadAddress("bad local part"))),
        ("MAIL FROM:<a(b)@c>", Err(BadAddress("bad local part"))),
        ("MAIL FROM:<@c>", Err(BadAddress("bad source route"))),
        ("MAIL FROM:<a@b@c>", Err(BadAddress("bad domain"))),
        ("MAIL FROM:<a@b..c>", Err(BadAddress("bad domain"))),
        ("MAIL FROM:<a@b.c.>", Err(BadAddress("bad domain"))),
        ("MAIL FROM:<a@-b.c>", Err(BadAddress("bad domain"))),
        ("MAIL FROM:<a@b_c.d>", Err(BadAddress("bad domain"))),
        (
            "MAIL FROM:<a@[1.2.3]>",
            Err(BadAddress("bad address literal")),
        ),
        (
            "MAIL FROM:<a@[IPv6:zz]>",
            Err(BadAddress("bad address literal")),
        ),
        (
            "MAIL FROM:<a@[1.2.3.4>",
            Err(BadAddress("bad address literal")),
        ),
        ("MAIL FROM:<@a:b>", Err(BadAddress("missing domain"))),
        ("MAIL FROM:<@a;b:c@d>", Err(BadAddress("bad source route"))),
        ("MAIL FROM:<@a,b:c@d>", Err(BadAddress("bad source route"))),
        (
            &format!("MAIL FROM:<{long_local}@x>"),
            Err(BadAddress("local part too long")),
        ),
        (
            &format!("MAIL FROM:<a@{long_domain}>"),
            Err(BadAddress("domain too long")),
        ),
        (
            &format!("MAIL FROM:<{long_path}>"),
            Err(BadAddress("address too long")),
        ),
    ]);
}

#[test]
fn mail_params() {
    check(&[
        (
            "mail from:<A.B@Example.COM> SIZE=1000 BODY=8BITMIME SMTPUTF8",
            mail(
                "A.B@Example.COM",
                MailParams {
                    size: Some(1000),
                    body: Some(Body::EightBitMime),
                    smtputf8: true,
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b>  size=0\tbody=7bit  smtputf8 ",
            mail(
                "a@b",
                MailParams {
                    size: Some(0),
                    body: Some(Body::SevenBit),
                    smtputf8: true,
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> SIZE=18446744073709551615",
            mail(
                "a@b",
                MailParams {
                    size: Some(u64::MAX),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> SIZE=00000000000000000001",
            mail(
                "a@b",
                MailParams {
                    size: Some(1),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> RET=HDRS ENVID=x+0D+0ARCPT",
            mail(
                "a@b",
                MailParams {
                    ret: Some(Ret::Hdrs),
                    envid: Some("x+0D+0ARCPT".into()),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> ENVID=x+0D+0ARCPT",
            mail(
                "a@b",
                MailParams {
                    envid: Some("x+0D+0ARCPT".into()),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> ret=full",
            mail(
                "a@b",
                MailParams {
                    ret: Some(Ret::Full),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> AUTH=<>",
            mail(
                "a@b",
                MailParams {
                    auth: Some("<>".into()),
                    ..Default::default()
                },
            ),
        ),
        (
            "MAIL FROM:<a@b> AUTH=e+3Dmc2@example.com",
            mail(
                "a@b",
                MailParams {
                    auth: Some("e+3Dmc2@example.com".into()),
                    ..Default::default()
                },
            ),
        ),
        (
            &format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(100)),
            mail(
                "a@b",
                MailParams {
                    envid: Some("e".repeat(100)),
                    ..Default::default()
                },
            ),
        ),
        // Bad values.
        (
            "MAIL FROM:<a@b> ENVID=a+zz",
            Err(Syntax("ENVID must be xtext")),
        ),
        (
            "MAIL FROM:<a@b> ENVID=a+0d",
            Err(Syntax("ENVID must be xtext")),
        ),
        (
            "MAIL FROM:<a@b> ENVID=a+0",
            Err(Syntax("ENVID must be xtext")),
        ),
        (
            "MAIL FROM:<a@b> ENVID=a=b",
            Err(Syntax("ENVID must be xtext")),
        ),
        (
            "MAIL FROM:<a@b> ENVID=é",
            Err(Syntax("ENVID must be xtext")),
        ),
        ("MAIL FROM:<a@b> ENVID=", Err(Syntax("ENVID needs a value"))),
        (
            &format!("MAIL FROM:<a@b> ENVID={}", "e".repeat(101)),
            Err(Syntax("ENVID too long")),
        ),
        ("MAIL FROM:<a@b> SIZE", Err(Syntax("SIZE needs a value"))),
        ("MAIL FROM:<a@b> SIZE=", Err(Syntax("SIZE needs a value"))),
        ("MAIL FROM:<a@b> SIZE=-1", Err(Syntax("bad SIZE value"))),
        ("MAIL FROM:<a@b> SIZE=1k", Err(Syntax("bad SIZE value"))),
        (
            "MAIL FROM:<a@b> SIZE=18446744073709551616",
            Err(Syntax("bad SIZE value")),
        ),
        (
            "MAIL FROM:<a@b> SIZE=000000000000000000001",
            Err(Syntax("bad SIZE value")),
        ),
        (
            "MAIL FROM:<a@b> BODY=BINARYMIME",
            Err(Syntax("BODY must be 7BIT or 8BITMIME")),
        ),
        ("MAIL FROM:<a@b> BODY", Err(Syntax("BODY needs a value"))),
        (
            "MAIL FROM:<a@b> SMTPUTF8=yes",
            Err(Syntax("SMTPUTF8 takes no value")),
        ),
        (
            "MAIL FROM:<a@b> RET=ALL",
            Err(Syntax("RET must be FULL or HDRS")),
        ),
        ("MAIL FROM:<a@b> RET", Err(Syntax("RET needs a value"))),
        ("MAIL FROM:<a@b> AUTH=a b", unknown_param("B")),
        (
            "MAIL FROM:<a@b> AUTH=a=b",
            Err(Syntax("AUTH= must be xtext or <>")),
        ),
        ("MAIL FROM:<a@b> AUTH", Err(Syntax("AUTH needs a value"))),
        // Duplicates.
        (
            "MAIL FROM:<a@b> SIZE=1 SIZE=2",
            Err(Syntax("duplicate parameter")),
        ),
        (
            "MAIL FROM:<a@b> BODY=7BIT body=7bit",
            Err(Syntax("duplicate parameter")),
        ),
        (
            "MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8",
            Err(Syntax("duplicate parameter")),
        ),
        (
            "MAIL FROM:<a@b> RET=FULL RET=FULL",
            Err(Syntax("duplicate parameter")),
        ),
        (
            "MAIL FROM:<a@b> ENVID=a ENVID=a",
            Err(Syntax("duplicate parameter")),
        ),
        (
            "MAIL FROM:<a@b> AUTH=<> AUTH=<>",
            Err(Syntax("duplicate parameter")),
        ),
        // Unknown or malformed keywords.
        ("MAIL FROM:<a@b> FOO=1", unknown_param("FOO")),
        ("MAIL FROM:<a@b> x-foo", unknown_param("X-FOO")),
        ("MAIL FROM:<a@b> NOTIFY=NEVER", unknown_param("NOTIFY")),
        (
            &format!("MAIL FROM:<a@b> {}=1", "K".repeat(40)),
            unknown_param(&"K".repeat(32)),
        ),
        ("MAIL FROM:<a@b> =1", Err(Syntax("bad parameter keyword"))),
        ("MAIL FROM:<a@b> -X=1", Err(Syntax("bad parameter keyword"))),
        ("MAIL FROM:<a@b> ü=1", Err(Syntax("bad parameter keyword"))),
        // The address is checked before the parameters.
        (
            "MAIL FROM:<a..b@c> FOO=1",
            Err(BadAddress("bad local part")),
        ),
    ]);
}

#[test]
fn rcpt_paths_and_params() {
    check(&[
        ("RCPT TO:<postmaster>", rcpt0("postmaster")),
        ("RCPT TO:<PostMaster>", rcpt0("PostMaster")),
        ("RCPT TO: <x@y>", rcpt0("x@y")),
        ("RCPT TO:<@relay:x@y>", rcpt0("x@y")),
        ("RCPT TO:<ü@例え.jp>", rcpt0("ü@例え.jp")),
        (
            "RCPT TO:<Postmaster@Example.com>",
            rcpt0("Postmaster@Example.com"),
        ),
        (
            "RCPT TO:<x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y",
            rcpt(
                "x@y",
                RcptParams {
                    notify: Some("SUCCESS,FAILURE".into()),
                    orcpt: Some("rfc822;x@y".into()),
                },
            ),
        ),
        (
            "rcpt to:<x@y> notify=never",
            rcpt(
                "x@y",
                RcptParams {
                    notify: Some("NEVER".into()),
                    orcpt: None,
                },
            ),
        ),
        (
            "RCPT TO:<x@y> NOTIFY=delay,Success,FAILURE",
            rcpt(
                "x@y",
                RcptParams {
                    notify: Some("DELAY,SUCCESS,FAILURE".into()),
                    orcpt: None,
                },
            ),
        ),
        (
            "RCPT TO:<x@y> ORCPT=rfc822;a+2Bb@y",
            rcpt(
                "x@y",
                RcptParams {
                    notify: None,
                    orcpt: Some("rfc822;a+2Bb@y".into()),
                },
            ),
        ),
        (
            "RCPT TO:<x@y> ORCPT=utf-8;ü@例え.jp",
            rcpt(
                "x@y",
                RcptParams {
                    notify: None,
                    orcpt: Some("utf-8;ü@例え.jp".into()),
                },
            ),
        ),
        ("RCPT TO:<>", Err(BadAddress("null recipient not allowed"))),
        ("RCPT TO: <>", Err(BadAddress("null recipient not allowed"))),
        ("RCPT TO:<postmaster@>", Err(BadAddress("missing domain"))),
        ("RCPT TO:<abuse>", Err(BadAddress("missing domain"))),
        ("RCPT FROM:<x@y>", Err(Syntax("expected TO:<address>"))),
        (
            "RCPT TO:x@y",
            Err(Syntax("address must be in angle brackets")),
        ),
        ("RCPT", Err(Syntax("expected TO:<address>"))),
        (
            "RCPT TO:<x@y> NOTIFY=NEVER,SUCCESS",
            Err(Syntax(
                "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
            )),
        ),
        (
            "RCPT TO:<x@y> NOTIFY=SUCCESS,SUCCESS",
            Err(Syntax(
                "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
            )),
        ),
        (
            "RCPT TO:<x@y> NOTIFY=SUCCESS,",
            Err(Syntax(
                "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
            )),
        ),
        (
            "RCPT TO:<x@y> NOTIFY=ALWAYS",
            Err(Syntax(
                "NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY",
            )),
        ),
        ("RCPT TO:<x@y> NOTIFY", Err(Syntax("NOTIFY needs a value"))),
        (
            "RCPT TO:<x@y> ORCPT=x@y",
            Err(Syntax("ORCPT must be addr-type;xtext")),
        ),
        (
            "RCPT TO:<x@y> ORCPT=;x@y",
            Err(Syntax("ORCPT must be addr-type;xtext")),
        ),
        (
            "RCPT TO:<x@y> ORCPT=rfc822;",
            Err(Syntax("ORCPT must be addr-type;xtext")),
        ),
        (
            "RCPT TO:<x@y> ORCPT=rfc822;a+zz",
            Err(Syntax("ORCPT must be addr-type;xtext")),
        ),
        (
            "RCPT TO:<x@y> ORCPT=rfc 822;a",
            Err(Syntax("ORCPT must be addr-type;xtext")),
        ),
        (
            "RCPT TO:<x@y> ORCPT=rfc822;a 822;a",
            Err(Syntax("bad parameter keyword")),
        ),
        (
            &format!("RCPT TO:<x@y> ORCPT=rfc822;{}", "a".repeat(500)),
            Err(Syntax("ORCPT too long")),
        ),
        (
            "RCPT TO:<x@y> NOTIFY=NEVER NOTIFY=NEVER",
            Err(Syntax("duplicate parameter")),
        ),
        (
            "RCPT TO:<x@y> ORCPT=rfc822;a ORCPT=rfc822;a",
            Err(Syntax("duplicate parameter")),
        ),
        ("RCPT TO:<x@y> SIZE=1", unknown_param("SIZE")),
        ("RCPT TO:<x@y> foo", unknown_param("FOO")),
    ]);
}

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
