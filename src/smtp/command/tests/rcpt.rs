//! RCPT TO: paths and parameters, line in, command or error out.

use super::*;

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
