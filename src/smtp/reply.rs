//! SMTP replies: what postern says (`Reply::encode`) and what an upstream says
//! (`ReplyParser`, multi-line, bounded). Pure: no I/O.
//!
//! Every reply postern sends carries an RFC 3463 enhanced status code except the
//! greeting and the EHLO/HELO reply (RFC 2034 §3).

use std::fmt;

/// Longest reply text line postern emits or accepts from an upstream (RFC 5321 §4.5.3.1.5: 512 with CRLF).
pub const MAX_REPLY_LINE: usize = 512;
/// Most lines one upstream reply may have before it is treated as hostile.
pub const MAX_REPLY_LINES: usize = 64;

/// One SMTP reply: a three-digit code, an optional enhanced status code
/// (`"2.1.0"`), and one or more text lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub lines: Vec<String>,
}

/// Why an upstream reply line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line is not '<3 digits>[ -]text'")]
    Malformed,
    #[error("reply line too long")]
    TooLong,
    #[error("reply has too many lines")]
    TooManyLines,
    #[error("reply lines disagree on the code")]
    CodeMismatch,
}

/// Reads a reply line by line. `push` returns the whole reply on its last line.
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl Reply {
    /// A reply with an enhanced status code, e.g. `Reply::new(250, "2.1.0", "Sender ok")`.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced.to_owned()),
            lines: vec![text.into()],
        }
    }

    /// A reply with no enhanced code (greeting, EHLO/HELO replies).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply with no enhanced code (the EHLO capability list).
    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines,
        }
    }

    /// 2xx / 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The first digit: 2, 3, 4 or 5.
    pub fn class(&self) -> u8 {
        u8::try_from(self.code / 100).unwrap_or(u8::MAX)
    }

    /// Appends the wire form (`250-2.0.0 a\r\n250 2.0.0 b\r\n`) to `out`.
    /// CR, LF and other control bytes in the text are replaced by spaces and
    /// each line is cut to fit `MAX_REPLY_LINE`, so a reply can never inject a line.
    ///
    /// A reply with no lines is sent as one line with empty text; an empty text
    /// gives `250 2.0.0` / `250` with no trailing space.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let no_text = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &no_text
        } else {
            &self.lines
        };
        let enhanced = self.enhanced.as_deref().filter(|e| !e.is_empty());
        let last = lines.len() - 1;
        for (i, text) in lines.iter().enumerate() {
            let code = format!("{:03}", self.code);
            let mut body = String::new();
            if let Some(enhanced) = enhanced {
                body.push_str(enhanced);
                if !text.is_empty() {
                    body.push(' ');
                }
            }
            body.push_str(text);

            let start = out.len();
            out.extend_from_slice(code.as_bytes());
            match (i == last, body.is_empty()) {
                (true, true) => {}
                (true, false) => out.push(b' '),
                (false, _) => out.push(b'-'),
            }
            let budget = MAX_REPLY_LINE.saturating_sub(out.len() - start + 2);
            push_sanitized(out, &body, budget);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The same reply with `prefix` put before the text of every line (used to
    /// mark an upstream's words: `"upstream aliyun: "`).
    pub fn prefixed(&self, prefix: &str) -> Reply {
        let lines = if self.lines.is_empty() {
            vec![prefix.to_owned()]
        } else {
            self.lines
                .iter()
                .map(|line| format!("{prefix}{line}"))
                .collect()
        };
        Reply {
            code: self.code,
            enhanced: self.enhanced.clone(),
            lines,
        }
    }
}

/// True for the bytes a reply text must never carry: ASCII controls and DEL.
fn is_control(c: char) -> bool {
    c.is_ascii_control()
}

/// Appends `text` to `out` with control characters replaced by spaces, cut at a
/// character boundary so that at most `budget` bytes are written.
fn push_sanitized(out: &mut Vec<u8>, text: &str, budget: usize) {
    let mut written = 0;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let c = if is_control(c) { ' ' } else { c };
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        if written + bytes.len() > budget {
            break;
        }
        out.extend_from_slice(bytes);
        written += bytes.len();
    }
}

impl fmt::Display for Reply {
    /// One line for logs: `250 2.0.0 text` (lines joined with " / ").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.code)?;
        if let Some(enhanced) = self.enhanced.as_deref().filter(|e| !e.is_empty()) {
            write!(f, " {enhanced}")?;
        }
        let text = self.lines.join(" / ");
        if !text.is_empty() {
            f.write_str(" ")?;
            for c in text.chars() {
                let c = if is_control(c) { ' ' } else { c };
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Feeds one line without its CRLF. `Ok(Some(reply))` once the last line
    /// (`"250 ..."`, a space or end after the code) arrives; `Ok(None)` for a
    /// continuation line (`"250-..."`). When every line's text starts with an
    /// enhanced code whose class equals the reply's first digit (`"2.1.0 "`),
    /// it is moved into `Reply::enhanced` and removed from the lines.
    ///
    /// After a complete reply or an error the parser starts afresh, so the next
    /// line is read as the first line of a new reply.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let result = self.push_line(line);
        if !matches!(result, Ok(None)) {
            self.code = None;
            self.lines.clear();
        }
        result
    }

    fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if line.len() > MAX_REPLY_LINE {
            return Err(ReplyError::TooLong);
        }
        let (code, last, text) = split_line(line)?;
        if self.code.is_some_and(|first| first != code) {
            return Err(ReplyError::CodeMismatch);
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.code = Some(code);
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !last {
            return Ok(None);
        }
        Ok(Some(finish(code, std::mem::take(&mut self.lines))))
    }
}

/// Splits a reply line into its code, whether it is the last line, and its text.
fn split_line(line: &[u8]) -> Result<(u16, bool, &[u8]), ReplyError> {
    let [a, b, c, rest @ ..] = line else {
        return Err(ReplyError::Malformed);
    };
    if !(b'2'..=b'5').contains(a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return Err(ReplyError::Malformed);
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest {
        [] => Ok((code, true, rest)),
        [b' ', text @ ..] => Ok((code, true, text)),
        [b'-', text @ ..] => Ok((code, false, text)),
        _ => Err(ReplyError::Malformed),
    }
}

/// Builds the reply, moving the enhanced code out of the lines if every line has one.
fn finish(code: u16, mut lines: Vec<String>) -> Reply {
    // `code` comes from `split_line`, so its first digit is 2..=5.
    let class = b'0' + u8::try_from(code / 100).unwrap_or(0);
    let lens: Option<Vec<usize>> = lines.iter().map(|line| enhanced_len(line, class)).collect();
    let enhanced = match (lens, lines.first()) {
        (Some(lens), Some(first)) => {
            let enhanced = first[..lens[0]].to_owned();
            for (line, len) in lines.iter_mut().zip(lens) {
                let rest = &line[len..];
                *line = rest.strip_prefix(' ').unwrap_or(rest).to_owned();
            }
            Some(enhanced)
        }
        _ => None,
    };
    Reply {
        code,
        enhanced,
        lines,
    }
}

/// The length of the enhanced status code (`class.S.D`, S and D of 1-3 digits)
/// at the start of `text`, if it is followed by a space or the end.
fn enhanced_len(text: &str, class: u8) -> Option<usize> {
    let b = text.as_bytes();
    if b.first() != Some(&class) || b.get(1) != Some(&b'.') {
        return None;
    }
    let subject = digit_run(&b[2..])?;
    let mut i = 2 + subject;
    if b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    i += digit_run(&b[i..])?;
    match b.get(i) {
        None | Some(b' ') => Some(i),
        _ => None,
    }
}

/// The number of leading ASCII digits in `b`, if it is 1 to 3.
fn digit_run(b: &[u8]) -> Option<usize> {
    let n = b.iter().take_while(|d| d.is_ascii_digit()).count();
    (1..=3).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
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
}
