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
mod tests;
