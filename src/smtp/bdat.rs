//! BDAT content framing (RFC 3030 CHUNKING), sans I/O.
//!
//! A BDAT chunk is `n` octets counted, not scanned for a dot: nothing in it can
//! end the message early, and it is never dot-unstuffed. The chunks of one
//! message, joined, are the message content. `Chunks` cuts that content into
//! CRLF lines, across chunk boundaries, and applies the same rules as the DATA
//! framer (`smtp::data`), so a message that arrives in BDAT may be relayed in
//! DATA (dot-stuffed) or written to the spool or outbox as lines:
//!
//! - a bare LF, a bare CR or a NUL anywhere in the content poisons it, with the
//!   same `DataError`s and replies as in DATA;
//! - a line longer than 1000 octets (CRLF included) poisons it;
//! - the size is the sum of the chunk sizes; a chunk that would take it past
//!   the limit poisons it *before* any of its octets are read (`begin_chunk`),
//!   and nothing is ever allocated from a chunk size: the only buffer is the
//!   carried start of a line, at most `MAX_TEXT_LINE` octets.
//!
//! A poisoned message forwards nothing more: the caller refuses the chunk
//! being read and skips the rest of its octets.
//!
//! Content whose last line has no CRLF gets one at `finish` (RFC 5322 text is
//! lines; a relay in DATA must end the last line before the final dot). A CR
//! that ends the content is a bare CR and is refused.

use super::data::{DataError, MAX_TEXT_LINE};
use super::line::{self, Scan};

/// One step of the framer over the buffered octets of the current chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing left in the buffer.
    Need,
    /// `buf[..len]` is one content line with its CRLF; drop `len` octets after using it.
    Line { len: usize },
    /// `consumed` octets completed the carried line: take it with `take_joined`.
    Joined { consumed: usize },
    /// `consumed` octets were taken: kept as the start of a line that ends in a
    /// later chunk, or dropped because the content is poisoned.
    Taken { consumed: usize },
}

/// The BDAT framer of one message.
#[derive(Debug, Clone)]
pub struct Chunks {
    max_size: u64,
    /// The sum of the chunk sizes announced so far.
    size: u64,
    /// The start of a line whose end is not here yet (at most `MAX_TEXT_LINE`).
    carry: Vec<u8>,
    /// `carry` is a whole line, waiting for `take_joined`.
    joined: bool,
    error: Option<DataError>,
}

impl Chunks {
    /// A framer refusing content larger than `max_size` octets.
    pub fn new(max_size: u64) -> Chunks {
        Chunks {
            max_size,
            size: 0,
            carry: Vec::new(),
            joined: false,
            error: None,
        }
    }

    /// Octets of content announced so far (the sum of the chunk sizes).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first fault found, if any: the message is then refused.
    pub fn error(&self) -> Option<DataError> {
        self.error
    }

    fn poison(&mut self, e: DataError) {
        self.error.get_or_insert(e);
    }

    /// A new chunk of `n` octets begins. Over the size limit, the content is
    /// poisoned at once: none of the chunk's octets need be looked at.
    pub fn begin_chunk(&mut self, n: u64) {
        self.size = self.size.saturating_add(n);
        if self.size > self.max_size {
            self.poison(DataError::TooBig);
        }
    }

    /// Looks at the start of `buf`, octets of the current chunk only, and says
    /// what to do with them. Every step but `Need` consumes at least one octet.
    pub fn step(&mut self, buf: &[u8]) -> Step {
        debug_assert!(!self.joined, "take_joined first");
        if buf.is_empty() {
            return Step::Need;
        }
        if self.error.is_some() {
            return Step::Taken {
                consumed: buf.len(),
            };
        }
        if !self.carry.is_empty() {
            return self.continue_line(buf);
        }
        match line::scan(buf, MAX_TEXT_LINE) {
            Scan::Incomplete => {
                // The line goes on in the next chunk (or ends the message).
                self.carry.extend_from_slice(buf);
                Step::Taken {
                    consumed: buf.len(),
                }
            }
            Scan::TooLong => self.refuse(DataError::LineTooLong, buf.len()),
            Scan::BareLf { .. } => self.refuse(DataError::BareLineEnding, buf.len()),
            Scan::Line { len, consumed } => match check_text(&buf[..len]) {
                Some(e) => self.refuse(e, buf.len()),
                None => Step::Line { len: consumed },
            },
        }
    }

    /// The carried line, once `step` said `Joined`; hand the buffer back with
    /// `restore` to keep its allocation.
    pub fn take_joined(&mut self) -> Vec<u8> {
        self.joined = false;
        std::mem::take(&mut self.carry)
    }

    /// Gives back the buffer `take_joined` returned.
    pub fn restore(&mut self, mut buf: Vec<u8>) {
        if self.carry.is_empty() {
            buf.clear();
            self.carry = buf;
        }
    }

    /// The end of the content (after the `LAST` chunk's octets): the size, or
    /// the refusal. `tail` receives the last line when it had no CRLF, with
    /// the CRLF added.
    ///
    /// # Errors
    /// The first fault found; a CR that ends the content is a bare CR.
    pub fn finish(&mut self, tail: &mut Vec<u8>) -> Result<u64, DataError> {
        if self.error.is_none() && !self.carry.is_empty() {
            if self.carry.last() == Some(&b'\r') {
                self.poison(DataError::BareLineEnding);
            } else if let Some(e) = check_text(&self.carry) {
                self.poison(e);
            } else if self.carry.len() + 2 > MAX_TEXT_LINE {
                self.poison(DataError::LineTooLong);
            } else {
                tail.extend_from_slice(&self.carry);
                tail.extend_from_slice(b"\r\n");
            }
            self.carry.clear();
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.size),
        }
    }

    /// The carried line goes on in `buf`.
    fn continue_line(&mut self, buf: &[u8]) -> Step {
        let (take, done) = line::skip_to_lf(buf);
        if self.carry.len() + take > MAX_TEXT_LINE {
            return self.refuse(DataError::LineTooLong, buf.len());
        }
        self.carry.extend_from_slice(&buf[..take]);
        if !done {
            return Step::Taken { consumed: take };
        }
        let len = self.carry.len();
        if len < 2 || self.carry[len - 2] != b'\r' {
            return self.refuse(DataError::BareLineEnding, buf.len());
        }
        if let Some(e) = check_text(&self.carry[..len - 2]) {
            return self.refuse(e, buf.len());
        }
        self.joined = true;
        Step::Joined { consumed: take }
    }

    /// Poisons the content and drops the rest of the buffered chunk.
    fn refuse(&mut self, e: DataError, rest: usize) -> Step {
        self.poison(e);
        self.carry.clear();
        Step::Taken { consumed: rest }
    }
}

/// The fault in the text of a line (its CRLF removed, or a line's start):
/// a CR there is a bare CR; a NUL is refused with its own error.
fn check_text(text: &[u8]) -> Option<DataError> {
    memchr::memchr2(b'\r', 0, text).map(|i| {
        if text[i] == 0 {
            DataError::Nul
        } else {
            DataError::BareLineEnding
        }
    })
}

#[cfg(test)]
mod tests;
