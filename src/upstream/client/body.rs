//! The body writer of a `Client`: content lines go in unstuffed and leave
//! dot-stuffed, in chunks of `WRITE_CHUNK`, or, toward an upstream that offers
//! CHUNKING, as they are in `BDAT` chunks (RFC 3030) of at most `BDAT_CHUNK` bytes.
//!
//! BDAT: each chunk is `BDAT n` and then exactly n body bytes, the last one
//! `BDAT n LAST`; nothing is dot-stuffed, since the count, not a dot, ends a
//! chunk. With PIPELINING the chunks go out without waiting for their replies,
//! at most `BDAT_IN_FLIGHT` unanswered; without it every chunk waits for its
//! reply. Commands queued before the body (a deferred MAIL and RCPT, see
//! `relay`) go out in the same write as the first chunk and are answered first.
//! After the first refusal no more chunk goes out, and the transaction is
//! cleared with RSET once every owed reply was read.
//!
//! DATA ahead (`send_data_ahead`): DATA goes out as soon as the client's DATA
//! comes, and its 354 is read only before the first body byte leaves, so the
//! provider's round trip runs while the client sends the body. A refusal of
//! DATA drops the body and becomes the end-of-data verdict (`end_body`).

use tokio::time::Instant;

use super::{COMMAND_TIMEOUT, Client, DATA_END_TIMEOUT};
use crate::smtp::data;
use crate::smtp::reply::Reply;
use crate::upstream::UpstreamError;

/// Body bytes buffered before a write to the upstream.
pub const WRITE_CHUNK: usize = 64 * 1024;
/// The largest BDAT chunk: a body up to this size goes out as one `BDAT n LAST`.
pub const BDAT_CHUNK: usize = 256 * 1024;
/// BDAT chunks sent to a pipelining upstream before the oldest reply is awaited.
pub const BDAT_IN_FLIGHT: usize = 8;

/// A body on its way out in BDAT chunks.
pub struct Chunks {
    /// Body bytes not sent yet.
    pending: Vec<u8>,
    /// Labels of the commands whose replies come before the BDAT ones (deferred
    /// MAIL, RCPT, RSET), in order.
    lead: Vec<&'static str>,
    /// Their replies, as read.
    lead_replies: Vec<Reply>,
    /// BDAT replies still to read, with when each chunk went out.
    in_flight: std::collections::VecDeque<Instant>,
    /// Writes made for this body so far: a single one can be replayed.
    writes: u32,
    /// Replies read for this body so far.
    read: u32,
    /// A lead command or a chunk was refused: the rest of the body is dropped.
    stopped: bool,
    /// The first refused chunk's reply.
    refused: Option<Reply>,
    /// `BDAT n LAST` went out.
    last_sent: bool,
    /// Its reply.
    last_reply: Option<Reply>,
}

/// What the upstream said to a body sent in BDAT chunks.
pub struct ChunksEnd {
    /// The replies to the commands sent before the body, in order.
    pub lead: Vec<Reply>,
    /// The verdict on the body: the first refused chunk's reply, or that to
    /// `BDAT n LAST`; `None` when a lead command was refused and no LAST went out.
    pub verdict: Option<Reply>,
    /// The connection may serve another transaction.
    pub reusable: bool,
}

impl Client {
    /// Writes unstuffed content lines (usually one; a rewritten header block is
    /// several) dot-stuffed, sending when a chunk is full.
    ///
    /// # Errors
    /// I/O errors toward the upstream.
    pub async fn write_body(&mut self, lines: &[u8]) -> Result<(), UpstreamError> {
        if let Some(ch) = self.chunks.as_mut() {
            if ch.stopped {
                return Ok(());
            }
            ch.pending.extend_from_slice(lines);
            while self
                .chunks
                .as_ref()
                .is_some_and(|c| !c.stopped && c.pending.len() >= BDAT_CHUNK)
            {
                self.send_chunk(false).await?;
            }
            return Ok(());
        }
        if self.data_refused.is_some() {
            return Ok(());
        }
        let mut rest = lines;
        while !rest.is_empty() {
            let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            data::stuff_line(&rest[..end], &mut self.wbuf);
            rest = &rest[end..];
        }
        if self.wbuf.len() >= WRITE_CHUNK {
            self.await_go_ahead().await?;
            if self.data_refused.is_some() {
                self.wbuf.clear();
                return Ok(());
            }
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends DATA now, ahead of the body; its reply is read before the first
    /// body byte goes (`write_body`, `end_body`).
    ///
    /// # Errors
    /// I/O errors toward the upstream.
    pub async fn send_data_ahead(&mut self) -> Result<(), UpstreamError> {
        self.queue("DATA");
        let sent = Instant::now();
        self.flush().await?;
        self.data_owed = Some(sent);
        Ok(())
    }

    /// Reads the reply to DATA sent ahead, if one is owed: a 354 lets the body
    /// go; a 4xx or 5xx is kept as the verdict and the body is dropped.
    async fn await_go_ahead(&mut self) -> Result<(), UpstreamError> {
        let Some(sent) = self.data_owed.take() else {
            return Ok(());
        };
        let r = self.read_reply("DATA", sent, COMMAND_TIMEOUT).await?;
        match r.class() {
            3 if r.code == 354 => Ok(()),
            4 | 5 => {
                self.data_refused = Some(r);
                Ok(())
            }
            _ => Err(UpstreamError::Protocol("unexpected reply to DATA")),
        }
    }

    /// Whether the provider refused DATA sent ahead: its transaction is still
    /// open there, so the connection is not reused.
    pub fn data_was_refused(&self) -> bool {
        self.data_refused.is_some()
    }

    /// Ends the body with the final dot and reads the upstream's verdict; with
    /// DATA sent ahead and refused, that refusal is the verdict and no dot goes.
    ///
    /// # Errors
    /// I/O errors or a timeout: the upstream did not confirm the message.
    pub async fn end_body(&mut self) -> Result<Reply, UpstreamError> {
        self.await_go_ahead().await?;
        if let Some(r) = self.data_refused.clone() {
            self.wbuf.clear();
            return Ok(r);
        }
        self.queue(".");
        let sent = Instant::now();
        self.flush().await?;
        self.read_reply("DATA_END", sent, DATA_END_TIMEOUT).await
    }

    /// Starts a body in BDAT chunks. `lead` labels the commands queued before it
    /// (their replies are owed first); they go out with the first chunk.
    pub fn begin_chunks(&mut self, lead: Vec<&'static str>) {
        self.chunks = Some(Chunks {
            pending: Vec::new(),
            lead_replies: Vec::with_capacity(lead.len()),
            lead,
            in_flight: std::collections::VecDeque::new(),
            writes: 0,
            read: 0,
            stopped: false,
            refused: None,
            last_sent: false,
            last_reply: None,
        });
    }

    /// Whether a body is going out in BDAT chunks.
    pub fn in_chunks(&self) -> bool {
        self.chunks.is_some()
    }

    /// Sends the pending body bytes as one chunk (at most `BDAT_CHUNK` of them
    /// unless `last`, which sends them all as `BDAT n LAST`), then reads replies
    /// as the upstream's pipelining allows.
    async fn send_chunk(&mut self, last: bool) -> Result<(), UpstreamError> {
        let Some(ch) = self.chunks.as_mut() else {
            return Ok(());
        };
        let n = if last {
            ch.pending.len()
        } else {
            ch.pending.len().min(BDAT_CHUNK)
        };
        let head = if last {
            format!("BDAT {n} LAST\r\n")
        } else {
            format!("BDAT {n}\r\n")
        };
        self.wbuf.extend_from_slice(head.as_bytes());
        self.wbuf.extend_from_slice(&ch.pending[..n]);
        ch.pending.drain(..n);
        ch.last_sent = last;
        let first = ch.writes == 0;
        ch.writes += 1;
        if first {
            // The whole flight, should a reused connection turn out dead before answering.
            self.last_batch.clear();
            self.last_batch.extend_from_slice(&self.wbuf);
        }
        self.flush().await?;
        if let Some(ch) = self.chunks.as_mut() {
            ch.in_flight.push_back(Instant::now());
        }
        if last {
            return Ok(());
        }
        let limit = if self.caps.pipelining {
            BDAT_IN_FLIGHT
        } else {
            0
        };
        while self
            .chunks
            .as_ref()
            .is_some_and(|c| c.in_flight.len() > limit)
        {
            self.read_owed().await?;
        }
        Ok(())
    }

    /// Reads the oldest reply owed for the chunked body: a lead command's, then the chunks'.
    async fn read_owed(&mut self) -> Result<(), UpstreamError> {
        let Some(ch) = self.chunks.as_ref() else {
            return Ok(());
        };
        if ch.lead_replies.len() < ch.lead.len() {
            let label = ch.lead[ch.lead_replies.len()];
            let sent = ch.in_flight.front().copied().unwrap_or_else(Instant::now);
            let reply = self.read_reply(label, sent, COMMAND_TIMEOUT).await?;
            let Some(ch) = self.chunks.as_mut() else {
                return Ok(());
            };
            ch.read += 1;
            // A refused MAIL or RCPT (the only lead commands that matter) ends the
            // transaction; a refused RSET of an earlier one does not.
            if !reply.is_positive() && label != "RSET" {
                ch.stopped = true;
            }
            ch.lead_replies.push(reply);
            return Ok(());
        }
        let Some(sent) = ch.in_flight.front().copied() else {
            return Ok(());
        };
        let is_last = ch.last_sent && ch.in_flight.len() == 1;
        let (label, limit) = if is_last {
            ("DATA_END", DATA_END_TIMEOUT)
        } else {
            ("BDAT", COMMAND_TIMEOUT)
        };
        let reply = self.read_reply(label, sent, limit).await?;
        let Some(ch) = self.chunks.as_mut() else {
            return Ok(());
        };
        ch.read += 1;
        ch.in_flight.pop_front();
        if is_last {
            ch.last_reply = Some(reply);
        } else if !reply.is_positive() && ch.refused.is_none() {
            ch.stopped = true;
            ch.refused = Some(reply);
        }
        Ok(())
    }

    /// Ends a chunked body: `BDAT n LAST` with the rest (unless the transaction
    /// was already refused), then every owed reply.
    ///
    /// # Errors
    /// I/O errors or a timeout: the upstream did not confirm the message.
    pub async fn end_chunks(&mut self) -> Result<ChunksEnd, UpstreamError> {
        if self.chunks.as_ref().is_some_and(|c| !c.stopped) {
            self.send_chunk(true).await?;
        }
        self.collect_chunks().await
    }

    /// Reads every reply still owed for the chunked body and ends it.
    ///
    /// # Errors
    /// I/O errors or a timeout.
    pub async fn collect_chunks(&mut self) -> Result<ChunksEnd, UpstreamError> {
        while self
            .chunks
            .as_ref()
            .is_some_and(|c| c.lead_replies.len() < c.lead.len() || !c.in_flight.is_empty())
        {
            self.read_owed().await?;
        }
        let Some(ch) = self.chunks.take() else {
            return Err(UpstreamError::Protocol("no chunked body in progress"));
        };
        let clean = !ch.stopped
            && ch.refused.is_none()
            && ch.last_reply.as_ref().is_some_and(Reply::is_positive)
            && ch.lead_replies.iter().all(Reply::is_positive);
        let mut reusable = true;
        if !clean {
            // Whatever the upstream kept of the transaction goes.
            let r = self.command("RSET", "RSET").await?;
            reusable = r.code == 250;
        }
        Ok(ChunksEnd {
            lead: ch.lead_replies,
            verdict: ch.refused.or(ch.last_reply),
            reusable,
        })
    }

    /// Whether the chunked body went out in one write and no reply to it was
    /// read: if the connection turns out dead, the whole flight can go again.
    pub fn chunks_replayable(&self) -> bool {
        self.chunks
            .as_ref()
            .is_some_and(|c| c.writes == 1 && c.read == 0 && c.last_sent)
    }

    /// Takes the chunked body's state (to move it to a fresh connection).
    pub fn take_chunks(&mut self) -> Option<Chunks> {
        self.chunks.take()
    }

    /// Gives a fresh connection the chunked body's state of a dead one, whose
    /// flight it has resent.
    pub fn put_chunks(&mut self, mut chunks: Chunks) {
        let now = Instant::now();
        for t in chunks.in_flight.iter_mut() {
            *t = now;
        }
        self.chunks = Some(chunks);
    }
}
