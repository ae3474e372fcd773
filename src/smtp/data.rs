//! DATA framing (RFC 5321 §4.1.1.4, §4.5.2): end-of-data, dot-unstuffing,
//! the bare CR / bare LF policy, the text-line limit and the size cap.
//!
//! End-of-data is recognised only as `CRLF . CRLF`. A bare LF or a bare CR
//! anywhere in the content poisons the message: the receiver keeps reading to
//! the real end-of-data, forwards nothing more, and the caller refuses the
//! message with `554 5.6.0`. So `\n.\n`, `\n.\r\n`, `\r\n.\n`, `\r.\r\n` and
//! `\r\n.\r` can never end a message early, and never travel on: postern cannot
//! be used for SMTP smuggling.
//!
//! A NUL byte anywhere in the content poisons the message the same way, with
//! its own error: RFC 5322 text and 8BITMIME (RFC 6152) both exclude NUL, and a
//! receiver that drops NULs would read `CRLF NUL . CRLF` as end-of-data.
//!
//! The size counted is that of the unstuffed content with its CRLFs (RFC 1870).

use super::line::{self, Scan};
use super::reply::Reply;

/// Longest text line, CRLF included (RFC 5321 §4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;

/// Why a message was refused at end-of-data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("bare CR or LF in message content")]
    BareLineEnding,
    #[error("NUL byte in message content")]
    Nul,
    #[error("text line longer than 1000 octets")]
    LineTooLong,
    #[error("message exceeds the size limit")]
    TooBig,
}

impl DataError {
    /// The one reply each refusal gets.
    pub fn reply(self) -> Reply {
        match self {
            DataError::BareLineEnding => Reply::new(
                554,
                "5.6.0",
                "Message refused: bare CR or LF in content; lines must end with CRLF (RFC 5321 2.3.8)",
            ),
            DataError::Nul => Reply::new(
                554,
                "5.6.0",
                "Message refused: NUL bytes are not allowed in content (RFC 5322 2.3, RFC 6152)",
            ),
            DataError::LineTooLong => Reply::new(
                500,
                "5.5.2",
                "Line too long: text lines are limited to 1000 octets (RFC 5321 4.5.3.1.6)",
            ),
            DataError::TooBig => Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ),
        }
    }
}

/// One step of the receiver over the buffered input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read more input.
    Need,
    /// `buf[start..start + len]` is one content line, unstuffed, with its CRLF.
    /// Drop `consumed` bytes after using it.
    Content {
        start: usize,
        len: usize,
        consumed: usize,
    },
    /// Drop `consumed` bytes: input of a poisoned message, or of an over-long line.
    Skip { consumed: usize },
    /// End-of-data: drop `consumed` bytes (the `.CRLF`). `Err` if the message is refused.
    End {
        consumed: usize,
        result: Result<u64, DataError>,
    },
}

/// The DATA receiver: feed it the buffered input after `354`, act on each `Step`.
#[derive(Debug, Clone)]
pub struct Receiver {
    max_size: u64,
    size: u64,
    /// The previous line ended with CRLF (true at the start: DATA's own CRLF).
    after_crlf: bool,
    /// Discarding the rest of an over-long line.
    discarding: bool,
    /// While discarding: the last byte dropped was CR.
    last_cr: bool,
    error: Option<DataError>,
}

impl Receiver {
    /// A receiver refusing content larger than `max_size` octets.
    pub fn new(max_size: u64) -> Receiver {
        Receiver {
            max_size,
            size: 0,
            after_crlf: true,
            discarding: false,
            last_cr: false,
            error: None,
        }
    }

    /// Octets of (unstuffed) content seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True once the message is certain to be refused at end-of-data.
    pub fn is_poisoned(&self) -> bool {
        self.error.is_some()
    }

    fn poison(&mut self, e: DataError) {
        // The first fault is the one reported.
        self.error.get_or_insert(e);
    }

    /// Looks at the start of `buf` and says what to do with it.
    pub fn step(&mut self, buf: &[u8]) -> Step {
        if self.discarding {
            let (consumed, done) = line::skip_to_lf(buf);
            if consumed == 0 {
                return Step::Need;
            }
            let cr_before = if consumed >= 2 {
                buf[consumed - 2] == b'\r'
            } else {
                self.last_cr
            };
            if done {
                self.discarding = false;
                self.after_crlf = cr_before;
            } else {
                self.last_cr = buf[consumed - 1] == b'\r';
            }
            return Step::Skip { consumed };
        }
        match line::scan(buf, MAX_TEXT_LINE) {
            Scan::Incomplete => Step::Need,
            Scan::TooLong => {
                self.poison(DataError::LineTooLong);
                self.discarding = true;
                self.last_cr = buf[MAX_TEXT_LINE - 1] == b'\r';
                // The rest of the over-long line is never the end-of-data marker.
                Step::Skip {
                    consumed: MAX_TEXT_LINE,
                }
            }
            Scan::BareLf { consumed } => {
                self.poison(DataError::BareLineEnding);
                self.after_crlf = false;
                Step::Skip { consumed }
            }
            Scan::Line { len, consumed } => {
                let after_crlf = std::mem::replace(&mut self.after_crlf, true);
                let text = &buf[..len];
                if after_crlf && text == b"." {
                    let result = match self.error {
                        Some(e) => Err(e),
                        None => Ok(self.size),
                    };
                    return Step::End { consumed, result };
                }
                // One pass for both: a CR inside a CRLF line is a bare CR. The
                // first of them is the fault reported.
                if let Some(i) = memchr::memchr2(b'\r', 0, text) {
                    self.poison(if text[i] == 0 {
                        DataError::Nul
                    } else {
                        DataError::BareLineEnding
                    });
                }
                let start = usize::from(text.first() == Some(&b'.'));
                let content_len = consumed - start;
                self.size += content_len as u64;
                if self.size > self.max_size {
                    self.poison(DataError::TooBig);
                }
                if self.error.is_some() {
                    Step::Skip { consumed }
                } else {
                    Step::Content {
                        start,
                        len: content_len,
                        consumed,
                    }
                }
            }
        }
    }
}

/// Appends `line` (one content line with its CRLF) to `out`, dot-stuffed for the wire.
pub fn stuff_line(line: &[u8], out: &mut Vec<u8>) {
    if line.first() == Some(&b'.') {
        out.push(b'.');
    }
    out.extend_from_slice(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the receiver over `input` in one buffer; returns (content, result, bytes left over).
    fn run(input: &[u8], max: u64) -> (Vec<u8>, Option<Result<u64, DataError>>, usize) {
        run_chunked(input, max, input.len().max(1))
    }

    /// The same, with the input arriving `chunk` bytes at a time.
    fn run_chunked(
        input: &[u8],
        max: u64,
        chunk: usize,
    ) -> (Vec<u8>, Option<Result<u64, DataError>>, usize) {
        let mut rx = Receiver::new(max);
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match rx.step(&buf) {
                Step::Need => {
                    if fed >= input.len() {
                        return (out, None, 0);
                    }
                    let end = (fed + chunk).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Step::Content {
                    start,
                    len,
                    consumed,
                } => {
                    out.extend_from_slice(&buf[start..start + len]);
                    buf.drain(..consumed);
                }
                Step::Skip { consumed } => {
                    buf.drain(..consumed);
                }
                Step::End { consumed, result } => {
                    buf.drain(..consumed);
                    return (out, Some(result), buf.len() + input.len() - fed);
                }
            }
        }
    }

    type Row = (&'static [u8], &'static [u8], Option<Result<u64, DataError>>);

    #[test]
    fn framing_table() {
        use DataError::*;
        let rows: &[Row] = &[
            (b".\r\n", b"", Some(Ok(0))),
            (b"hello\r\n.\r\n", b"hello\r\n", Some(Ok(7))),
            (b"..dot\r\n.\r\n", b".dot\r\n", Some(Ok(6))),
            (b"...\r\n.\r\n", b"..\r\n", Some(Ok(4))),
            (
                b".x\r\nmid . line\r\n.\r\n",
                b"x\r\nmid . line\r\n",
                Some(Ok(15)),
            ),
            (b"\xc3\xbc 8bit\r\n.\r\n", b"\xc3\xbc 8bit\r\n", Some(Ok(9))),
            (b"no end\r\n", b"no end\r\n", None),
            // The five smuggling endings: none of them ends the message, all poison it.
            (
                b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
                b"",
                Some(Err(BareLineEnding)),
            ),
            (
                b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n",
                b"",
                Some(Err(BareLineEnding)),
            ),
            (
                b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n",
                b"a\r\n",
                Some(Err(BareLineEnding)),
            ),
            (
                b"a\r.\r\nMAIL FROM:<x@y>\r\n.\r\n",
                b"",
                Some(Err(BareLineEnding)),
            ),
            (
                b"a\r\n.\rMAIL FROM:<x@y>\r\n.\r\n",
                b"a\r\n",
                Some(Err(BareLineEnding)),
            ),
            (b"bare\rcr\r\n.\r\n", b"", Some(Err(BareLineEnding))),
            // NUL: `CRLF NUL . CRLF` is no end (a NUL-dropping receiver would read one)
            // and poisons the message like a bare line end, with its own error.
            (
                b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n.\r\n",
                b"a\r\n",
                Some(Err(Nul)),
            ),
            (b"x\0y\r\n.\r\n", b"", Some(Err(Nul))),
            (b"\0\r\n.\r\n", b"", Some(Err(Nul))),
            (b"..\0\r\nok\r\n.\r\n", b"", Some(Err(Nul))),
            (b"a\0b\rc\r\n.\r\n", b"", Some(Err(Nul))),
            (b"a\rb\0c\r\n.\r\n", b"", Some(Err(BareLineEnding))),
        ];
        for (input, want_out, want_end) in rows {
            for chunk in [input.len(), 1, 3] {
                let (out, end, _) = run_chunked(input, 1 << 20, chunk);
                let label = String::from_utf8_lossy(input);
                assert_eq!(
                    &out[..],
                    *want_out,
                    "content of {label:?} in chunks of {chunk}"
                );
                assert_eq!(end, *want_end, "end of {label:?} in chunks of {chunk}");
            }
        }
    }

    #[test]
    fn leftover_after_end_is_not_consumed() {
        let (_, end, left) = run(b"x\r\n.\r\nQUIT\r\n", 100);
        assert_eq!(end, Some(Ok(3)));
        assert_eq!(left, 6);
    }

    #[test]
    fn size_cap_counts_unstuffed_octets() {
        assert_eq!(run(b"..ab\r\n.\r\n", 5).1, Some(Ok(5)));
        assert_eq!(run(b"abcd\r\n.\r\n", 5).1, Some(Err(DataError::TooBig)));
    }

    #[test]
    fn long_lines_are_refused_and_discarded_in_bounded_steps() {
        let mut input = vec![b'x'; 999];
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&input, 1 << 20).1, Some(Err(DataError::LineTooLong)));
        let mut ok = vec![b'x'; 998];
        ok.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(run(&ok, 1 << 20).1, Some(Ok(1000)));
        // A megabyte with no line end, then a real end: refused, and the end is still found.
        let mut huge = vec![b'y'; 1 << 20];
        huge.extend_from_slice(b"\r\n.\r\n");
        for chunk in [4096, 1 << 20] {
            assert_eq!(
                run_chunked(&huge, 1 << 30, chunk).1,
                Some(Err(DataError::LineTooLong))
            );
        }
    }

    /// Many pseudo-random inputs over the bytes that matter (`a . CR LF`), in
    /// varying chunks: content lines are always CRLF-terminated with no CR or LF
    /// inside, and the end is only ever a `.` line after a CRLF.
    #[test]
    fn invariants_hold_on_random_input() {
        let mut seed: u64 = 0x5eed;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        let (mut ended_ok, mut ended_refused) = (0, 0);
        for _ in 0..20_000 {
            let len = next() % 40;
            let input: Vec<u8> = (0..len).map(|_| b"a.\r\n"[next() % 4]).collect();
            let chunk = 1 + next() % 7;
            let mut rx = Receiver::new(1 << 20);
            let mut buf: Vec<u8> = Vec::new();
            let mut fed = 0;
            let mut prev_ended_crlf = true;
            loop {
                match rx.step(&buf) {
                    Step::Need => {
                        if fed >= input.len() {
                            break;
                        }
                        let end = (fed + chunk).min(input.len());
                        buf.extend_from_slice(&input[fed..end]);
                        fed = end;
                    }
                    Step::Content {
                        start,
                        len,
                        consumed,
                    } => {
                        let line = &buf[start..start + len];
                        assert!(line.ends_with(b"\r\n"), "{input:?}");
                        let inner = &line[..line.len() - 2];
                        assert!(
                            !inner.contains(&b'\r') && !inner.contains(&b'\n'),
                            "{input:?}"
                        );
                        buf.drain(..consumed);
                        prev_ended_crlf = true;
                    }
                    Step::Skip { consumed } => {
                        assert!(consumed > 0);
                        prev_ended_crlf = buf[..consumed].ends_with(b"\r\n");
                        buf.drain(..consumed);
                    }
                    Step::End { consumed, result } => {
                        assert_eq!(&buf[..consumed], b".\r\n", "{input:?}");
                        assert!(prev_ended_crlf, "ended after a bare line end: {input:?}");
                        let has_bare = input[..fed - buf.len() + consumed]
                            .windows(1)
                            .enumerate()
                            .any(|(i, w)| {
                                (w[0] == b'\n' && (i == 0 || input[i - 1] != b'\r'))
                                    || (w[0] == b'\r' && input.get(i + 1) != Some(&b'\n'))
                            });
                        assert_eq!(result.is_err(), has_bare, "{input:?}");
                        if has_bare {
                            ended_refused += 1;
                        } else {
                            ended_ok += 1;
                        }
                        break;
                    }
                }
            }
        }
        assert!(
            ended_ok > 100 && ended_refused > 100,
            "{ended_ok} / {ended_refused}"
        );
    }

    #[test]
    fn restuffing_round_trips() {
        let mut out = Vec::new();
        for line in [&b".x\r\n"[..], b"y\r\n", b".\r\n"] {
            stuff_line(line, &mut out);
        }
        assert_eq!(out, b"..x\r\ny\r\n..\r\n");
    }
}
