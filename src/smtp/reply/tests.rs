use super::*;

fn encoded(reply: &Reply) -> String {
    let mut out = Vec::new();
    reply.encode(&mut out);
    String::from_utf8(out).unwrap()
}

fn lines(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

fn enh(code: u16, enhanced: &str, texts: &[&str]) -> Reply {
    Reply {
        code,
        enhanced: Some(enhanced.to_string()),
        lines: lines(texts),
    }
}

#[test]
fn constructors() {
    let rows: &[(Reply, Reply)] = &[
        (
            Reply::new(250, "2.1.0", "Sender ok"),
            Reply {
                code: 250,
                enhanced: Some("2.1.0".into()),
                lines: lines(&["Sender ok"]),
            },
        ),
        (
            Reply::plain(220, "postern ESMTP"),
            Reply {
                code: 220,
                enhanced: None,
                lines: lines(&["postern ESMTP"]),
            },
        ),
        (
            Reply::multi(250, lines(&["host", "SIZE 1000", "8BITMIME"])),
            Reply {
                code: 250,
                enhanced: None,
                lines: lines(&["host", "SIZE 1000", "8BITMIME"]),
            },
        ),
    ];
    for (got, want) in rows {
        assert_eq!(got, want);
    }
}

#[test]
fn class_and_positive() {
    let rows: &[(u16, u8, bool)] = &[
        (220, 2, true),
        (250, 2, true),
        (354, 3, true),
        (334, 3, true),
        (421, 4, false),
        (451, 4, false),
        (500, 5, false),
        (554, 5, false),
    ];
    for &(code, class, positive) in rows {
        let reply = Reply::plain(code, "x");
        assert_eq!(reply.class(), class, "{code}");
        assert_eq!(reply.is_positive(), positive, "{code}");
    }
}

#[test]
fn encode_table() {
    let rows: &[(Reply, &str)] = &[
        (
            Reply::new(250, "2.1.0", "Sender ok"),
            "250 2.1.0 Sender ok\r\n",
        ),
        (Reply::plain(220, "postern ESMTP"), "220 postern ESMTP\r\n"),
        (
            Reply::multi(250, lines(&["host", "SIZE 1000", "8BITMIME"])),
            "250-host\r\n250-SIZE 1000\r\n250 8BITMIME\r\n",
        ),
        (
            enh(250, "2.0.0", &["a", "b"]),
            "250-2.0.0 a\r\n250 2.0.0 b\r\n",
        ),
        (Reply::new(250, "2.0.0", ""), "250 2.0.0\r\n"),
        (Reply::plain(250, ""), "250\r\n"),
        (Reply::multi(250, vec![]), "250\r\n"),
        (enh(250, "2.0.0", &[]), "250 2.0.0\r\n"),
        (Reply::multi(250, lines(&["", ""])), "250-\r\n250\r\n"),
        (enh(250, "2.0.0", &["", ""]), "250-2.0.0\r\n250 2.0.0\r\n"),
        (
            Reply::new(550, "5.1.1", "no\r\n250 2.0.0 injected"),
            "550 5.1.1 no  250 2.0.0 injected\r\n",
        ),
        (Reply::plain(550, "a\0b\tc\x7fd\x1be"), "550 a b c d e\r\n"),
        (
            Reply::new(250, "2.0.0", "héllo 例え"),
            "250 2.0.0 héllo 例え\r\n",
        ),
        // An empty enhanced code is treated as none.
        (enh(250, "", &["x"]), "250 x\r\n"),
    ];
    for (reply, want) in rows {
        assert_eq!(encoded(reply), *want, "{reply:?}");
    }
}

#[test]
fn encode_cuts_long_lines() {
    // (reply, expected length of each wire line incl. CRLF)
    let long = "x".repeat(600);
    // '例' is three bytes: the cut never splits it, leaving bytes unused.
    let wide = "例".repeat(300);
    let rows: Vec<(Reply, Vec<usize>)> = vec![
        (Reply::new(250, "2.0.0", long.clone()), vec![512]),
        (Reply::plain(250, long.clone()), vec![512]),
        (
            Reply::multi(250, vec![long.clone(), "short".into()]),
            vec![512, 11],
        ),
        (Reply::plain(250, "x".repeat(506)), vec![512]),
        (Reply::plain(250, "x".repeat(505)), vec![511]),
        (Reply::plain(250, wide.clone()), vec![510]),
        (Reply::new(250, "2.0.0", wide), vec![510]),
    ];
    for (reply, want) in rows {
        let wire = encoded(&reply);
        assert!(wire.ends_with("\r\n"));
        let got: Vec<usize> = wire
            .split_inclusive("\r\n")
            .map(|line| line.len())
            .collect();
        assert_eq!(got, want, "{reply:?}");
    }
}

#[test]
fn prefixed_table() {
    let rows: &[(Reply, &str, Reply)] = &[
        (
            Reply::new(550, "5.7.1", "denied"),
            "upstream x: ",
            Reply::new(550, "5.7.1", "upstream x: denied"),
        ),
        (
            Reply::multi(250, lines(&["a", "b"])),
            "up: ",
            Reply::multi(250, lines(&["up: a", "up: b"])),
        ),
        (
            Reply::multi(250, vec![]),
            "up: ",
            Reply::multi(250, lines(&["up: "])),
        ),
    ];
    for (reply, prefix, want) in rows {
        assert_eq!(reply.prefixed(prefix), *want);
    }
}

#[test]
fn display_table() {
    let rows: &[(Reply, &str)] = &[
        (Reply::new(250, "2.0.0", "ok"), "250 2.0.0 ok"),
        (Reply::plain(220, "hi"), "220 hi"),
        (enh(250, "2.0.0", &["a", "b", "c"]), "250 2.0.0 a / b / c"),
        (Reply::multi(250, lines(&["a", "b"])), "250 a / b"),
        (Reply::new(250, "2.0.0", ""), "250 2.0.0"),
        (Reply::plain(250, "a\r\nb"), "250 a  b"),
    ];
    for (reply, want) in rows {
        assert_eq!(reply.to_string(), *want);
    }
}

type Step = Result<Option<Reply>, ReplyError>;

#[test]
fn parser_table() {
    let long = format!("250 {}", "x".repeat(508));
    let too_long = format!("250 {}", "x".repeat(509));
    let rows: Vec<(Vec<&[u8]>, Vec<Step>)> = vec![
        (vec![b"250 ok"], vec![Ok(Some(Reply::plain(250, "ok")))]),
        (vec![b"250"], vec![Ok(Some(Reply::plain(250, "")))]),
        (vec![b"250 "], vec![Ok(Some(Reply::plain(250, "")))]),
        (
            vec![b"250-a", b"250 b"],
            vec![Ok(None), Ok(Some(Reply::multi(250, lines(&["a", "b"]))))],
        ),
        (
            vec![b"250-a", b"250-", b"250"],
            vec![
                Ok(None),
                Ok(None),
                Ok(Some(Reply::multi(250, lines(&["a", "", ""])))),
            ],
        ),
        (
            vec![b"250 2.1.0 Sender ok"],
            vec![Ok(Some(Reply::new(250, "2.1.0", "Sender ok")))],
        ),
        (
            vec![b"250 2.0.0"],
            vec![Ok(Some(Reply::new(250, "2.0.0", "")))],
        ),
        (
            vec![b"550-5.7.1 go", b"550 5.7.1 away"],
            vec![Ok(None), Ok(Some(enh(550, "5.7.1", &["go", "away"])))],
        ),
        (
            vec![b"451-4.3.0 a", b"451 4.999.999 b"],
            vec![Ok(None), Ok(Some(enh(451, "4.3.0", &["a", "b"])))],
        ),
        // Not every line has an enhanced code: kept as text.
        (
            vec![b"250-2.0.0 a", b"250 b"],
            vec![
                Ok(None),
                Ok(Some(Reply::multi(250, lines(&["2.0.0 a", "b"])))),
            ],
        ),
        (
            vec![b"250-2.0.0 a", b"250"],
            vec![
                Ok(None),
                Ok(Some(Reply::multi(250, lines(&["2.0.0 a", ""])))),
            ],
        ),
        // Wrong class, malformed codes: kept as text.
        (
            vec![b"250 5.0.0 x"],
            vec![Ok(Some(Reply::plain(250, "5.0.0 x")))],
        ),
        (
            vec![b"250 2.0.0x"],
            vec![Ok(Some(Reply::plain(250, "2.0.0x")))],
        ),
        (
            vec![b"250 2.1000.0 x"],
            vec![Ok(Some(Reply::plain(250, "2.1000.0 x")))],
        ),
        (
            vec![b"250 2..0 x"],
            vec![Ok(Some(Reply::plain(250, "2..0 x")))],
        ),
        (
            vec![b"250 2.0 x"],
            vec![Ok(Some(Reply::plain(250, "2.0 x")))],
        ),
        // Invalid UTF-8 is read lossily.
        (
            vec![b"250 a\xffb"],
            vec![Ok(Some(Reply::plain(250, "a\u{fffd}b")))],
        ),
        (
            vec![long.as_bytes()],
            vec![Ok(Some(Reply::plain(250, &long[4..])))],
        ),
        // Errors, each followed by a good reply to show the parser was reset.
        (
            vec![b"25", b"250 ok"],
            vec![
                Err(ReplyError::Malformed),
                Ok(Some(Reply::plain(250, "ok"))),
            ],
        ),
        (vec![b""], vec![Err(ReplyError::Malformed)]),
        (vec![b"abc"], vec![Err(ReplyError::Malformed)]),
        (vec![b"250x"], vec![Err(ReplyError::Malformed)]),
        (vec![b"2a0 x"], vec![Err(ReplyError::Malformed)]),
        (vec![b"150 x"], vec![Err(ReplyError::Malformed)]),
        (vec![b"650 x"], vec![Err(ReplyError::Malformed)]),
        (
            vec![b"250-a", b"25x", b"251 b"],
            vec![
                Ok(None),
                Err(ReplyError::Malformed),
                Ok(Some(Reply::plain(251, "b"))),
            ],
        ),
        (
            vec![b"250-a", b"251 b", b"251 c"],
            vec![
                Ok(None),
                Err(ReplyError::CodeMismatch),
                Ok(Some(Reply::plain(251, "c"))),
            ],
        ),
        (
            vec![too_long.as_bytes(), b"250 ok"],
            vec![Err(ReplyError::TooLong), Ok(Some(Reply::plain(250, "ok")))],
        ),
    ];
    for (input, want) in rows {
        let mut parser = ReplyParser::new();
        let got: Vec<Step> = input.iter().map(|line| parser.push(line)).collect();
        assert_eq!(got, want, "{input:?}");
    }
}

#[test]
fn parser_line_limit() {
    // (number of continuation lines before the last, expected final result)
    let rows: &[(usize, Result<usize, ReplyError>)] = &[
        (0, Ok(1)),
        (MAX_REPLY_LINES - 1, Ok(MAX_REPLY_LINES)),
        (MAX_REPLY_LINES, Err(ReplyError::TooManyLines)),
    ];
    for (continuations, want) in rows {
        let mut parser = ReplyParser::new();
        for _ in 0..*continuations {
            assert_eq!(parser.push(b"250-x"), Ok(None));
        }
        let got = parser
            .push(b"250 y")
            .map(|r| r.map_or(0, |r| r.lines.len()));
        assert_eq!(got, *want, "{continuations}");
        // Reset after the result either way.
        assert_eq!(parser.push(b"220 z"), Ok(Some(Reply::plain(220, "z"))));
    }
}

#[test]
fn encode_then_parse_round_trips() {
    let rows: &[Reply] = &[
        Reply::new(250, "2.1.0", "Sender ok"),
        enh(550, "5.7.1", &["a", "b", ""]),
        Reply::multi(250, lines(&["host", "SIZE 1", "8BITMIME"])),
        Reply::plain(220, "hi"),
    ];
    for reply in rows {
        let wire = encoded(reply);
        let mut parser = ReplyParser::new();
        let mut got = None;
        for line in wire.split_terminator("\r\n") {
            got = parser.push(line.as_bytes()).unwrap();
        }
        assert_eq!(got.as_ref(), Some(reply));
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Reply text as an upstream or postern writes it: printable, starting with
    /// a letter (so it cannot be read as an enhanced code), no trailing space.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => Just(String::new()),
            6 => "[a-zA-Z]([ -~]{0,60}[!-~])?",
            1 => "[a-zA-Z][a-z\u{e4}\u{fc}\u{4e2d} ]{0,20}[a-z]",
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let plain =
            (200u16..=599, prop::collection::vec(text(), 1..6)).prop_map(|(code, lines)| Reply {
                code,
                enhanced: None,
                lines,
            });
        let enhanced = (
            prop::sample::select(&[2u16, 4, 5][..]),
            0u16..=99,
            0u16..=7,
            0u16..=999,
            prop::collection::vec(text(), 1..6),
        )
            .prop_map(|(class, rest, subject, detail, lines)| Reply {
                code: class * 100 + rest,
                enhanced: Some(format!("{class}.{subject}.{detail}")),
                lines,
            });
        prop_oneof![plain, enhanced]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The reply parser accepts whatever the encoder writes, and reads back
        /// the same reply.
        #[test]
        fn parser_accepts_what_the_encoder_writes(reply in reply()) {
            let wire = encoded(&reply);
            let mut parser = ReplyParser::new();
            let mut got = None;
            let lines: Vec<&str> = wire.split_terminator("\r\n").collect();
            prop_assert_eq!(lines.len(), reply.lines.len());
            for (i, line) in lines.iter().enumerate() {
                prop_assert!(line.len() + 2 <= MAX_REPLY_LINE);
                got = parser.push(line.as_bytes()).expect("encoded line parses");
                prop_assert_eq!(got.is_some(), i + 1 == lines.len());
            }
            prop_assert_eq!(got, Some(reply));
        }
    }
}
