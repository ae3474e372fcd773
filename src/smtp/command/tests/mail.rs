//! MAIL FROM: paths and parameters, line in, command or error out.

use super::*;

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
