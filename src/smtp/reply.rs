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
        // Written byte by byte, without formatting or a String per line: this
        // runs for every reply of every session.
        let code = self.code;
        let digits = [
            b'0' + (code / 100 % 10) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
        ];
        for (i, text) in lines.iter().enumerate() {
            let start = out.len();
            if code > 999 {
                out.extend_from_slice(code.to_string().as_bytes());
            } else {
                out.extend_from_slice(&digits);
            }
            let body_empty = enhanced.is_none() && text.is_empty();
            match (i == last, body_empty) {
                (true, true) => {}
                (true, false) => out.push(b' '),
                (false, _) => out.push(b'-'),
            }
            // The enhanced code, a space and the text are one budget, cut at
            // the first character that does not fit.
            let mut budget = MAX_REPLY_LINE.saturating_sub(out.len() - start + 2);
            let mut whole = true;
            if let Some(enhanced) = enhanced {
                let (n, all) = push_sanitized(out, enhanced, budget);
                budget -= n;
                whole = all;
                if whole && !text.is_empty() {
                    whole = budget > 0;
                    if whole {
                        out.push(b' ');
                        budget -= 1;
                    }
                }
            }
            if whole {
                push_sanitized(out, text, budget);
            }
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
/// character boundary so that at most `budget` bytes are written. Returns the
/// bytes written and whether that was all of `text`.
fn push_sanitized(out: &mut Vec<u8>, text: &str, budget: usize) -> (usize, bool) {
    if text.len() <= budget && text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.extend_from_slice(text.as_bytes());
        return (text.len(), true);
    }
    let mut written = 0;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let c = if is_control(c) { ' ' } else { c };
        let bytes = c.encode_utf8(&mut buf).as_bytes();
        if written + bytes.len() > budget {
            return (written, false);
        }
        out.extend_from_slice(bytes);
        written += bytes.len();
    }
    (written, true)
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
mod tests;
