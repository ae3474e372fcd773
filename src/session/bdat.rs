//! BDAT from the client (RFC 3030 CHUNKING): `BDAT n [LAST]` and its `n`
//! octets, counted, never scanned for a dot.
//!
//! The first chunk of a message opens the body exactly as DATA does (the same
//! route, sink and provider dialogue: `Session::data`, without the 354), so the
//! body goes on as BDAT toward a provider that offers CHUNKING and as
//! dot-stuffed DATA toward one that does not, or into the spool or outbox. The
//! chunks are cut into lines by `smtp::bdat::Chunks`, which holds them to the
//! DATA rules (bare CR/LF, NUL, line length, size), and the lines take the same
//! way as DATA's (`deliver_line`: the header `From:` rewriter, the sink).
//!
//! Replies: a chunk before `LAST` gets our `250` once its octets are taken; the
//! `LAST` chunk gets the end-of-data reply, the provider's own or the durable
//! spool's (`end_of_data`). A chunk that breaks a rule is refused when its
//! octets have been read, and the message with it: nothing of it is delivered
//! (the provider's transaction is abandoned). A chunk that cannot be taken
//! (no transaction, no recipient, a refused or failed message) gets its 5xx or
//! 4xx and its octets are read and dropped (RFC 3030 §4.2), so they are never
//! read as commands; a BDAT line whose size cannot be read closes the session
//! for the same reason. Between chunks, RSET, EHLO and HELO abandon the
//! message; DATA, MAIL, RCPT, AUTH and STARTTLS get 503.

use super::data::Body;
use super::{Next, Phase, Session, Slot};
use crate::refusal::Refusal;
use crate::smtp::bdat::{Chunks, Step};
use crate::smtp::reply::Reply;

/// A message arriving in BDAT chunks: its body and its framer.
pub(super) struct Chunked {
    pub(super) body: Box<Body>,
    rx: Chunks,
}

/// The octets of one BDAT chunk, being read.
pub(super) struct Chunk {
    size: u64,
    remaining: u64,
    last: bool,
    /// The message they belong to; `None`: the chunk was refused at its
    /// command, and its octets are dropped.
    pub(super) msg: Option<Chunked>,
}

impl Session {
    /// `BDAT size [LAST]`: the chunk's octets follow.
    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Next {
        let msg = match self.chunked.take() {
            Some(m) => Some(m),
            None => match self.open_chunked().await {
                Ok(m) => Some(m),
                Err(Next::Close) => return Next::Close,
                Err(_) => None,
            },
        };
        let msg = msg.map(|mut m| {
            m.rx.begin_chunk(size);
            m
        });
        let chunk = Chunk {
            size,
            remaining: size,
            last,
            msg,
        };
        if size == 0 {
            return self.chunk_done(chunk).await;
        }
        self.phase = Phase::Chunk(Box::new(chunk));
        Next::Continue
    }

    /// The first chunk of a message: the body is opened as for DATA. `Err`
    /// when it cannot be: the refusal is queued (the chunk's reply).
    async fn open_chunked(&mut self) -> Result<Chunked, Next> {
        let Some(txn) = self.txn.as_ref() else {
            return Err(self.refuse(Refusal::NeedMailForBdat));
        };
        if txn.rcpt_commands == 0 {
            return Err(self.refuse(Refusal::NeedRcptForBdat));
        }
        let next = self.data().await;
        let Phase::Data(body) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return Err(next);
        };
        // The body is open: the 354 `data` queued is not for a BDAT client.
        if matches!(self.replies.back(), Some(Slot::Ready(r)) if r.code == 354) {
            self.replies.pop_back();
        }
        let rx = Chunks::new(body.txn.max_size);
        Ok(Chunked { body, rx })
    }

    /// Takes the buffered octets of the chunk being read. `None` when all of
    /// them were taken and the chunk needs more; after its last octet, the
    /// chunk's reply is queued.
    pub(super) async fn chunk_input(&mut self) -> Option<Next> {
        let Phase::Chunk(mut chunk) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return Some(Next::Continue);
        };
        let mut buf = std::mem::take(&mut self.conn.rbuf);
        let avail = usize::try_from(chunk.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        if let Some(m) = chunk.msg.as_mut() {
            let mut pos = 0;
            while pos < avail {
                match m.rx.step(&buf[pos..avail]) {
                    Step::Need => break,
                    Step::Line { len } => {
                        if m.body.fault.is_none()
                            && let Err(f) =
                                self.deliver_line(&mut m.body, &buf[pos..pos + len]).await
                        {
                            m.body.fault = Some(f);
                        }
                        pos += len;
                    }
                    Step::Joined { consumed } => {
                        let line = m.rx.take_joined();
                        if m.body.fault.is_none()
                            && let Err(f) = self.deliver_line(&mut m.body, &line).await
                        {
                            m.body.fault = Some(f);
                        }
                        m.rx.restore(line);
                        pos += consumed;
                    }
                    Step::Taken { consumed } => pos += consumed,
                }
            }
        }
        buf.drain(..avail);
        self.conn.rbuf = buf;
        chunk.remaining -= avail as u64;
        if chunk.remaining > 0 {
            self.phase = Phase::Chunk(chunk);
            return None;
        }
        Some(self.chunk_done(*chunk).await)
    }

    /// A chunk's octets are all read: its reply.
    async fn chunk_done(&mut self, chunk: Chunk) -> Next {
        let Chunk {
            size, last, msg, ..
        } = chunk;
        // Refused at its command: the reply is queued already.
        let Some(mut m) = msg else {
            return Next::Continue;
        };
        let seen = m.rx.size();
        let end = if last {
            let mut tail = Vec::new();
            let end = m.rx.finish(&mut tail);
            if end.is_ok()
                && !tail.is_empty()
                && m.body.fault.is_none()
                && let Err(f) = self.deliver_line(&mut m.body, &tail).await
            {
                m.body.fault = Some(f);
            }
            end
        } else {
            m.rx.error().map_or(Ok(seen), Err)
        };
        if !last && end.is_ok() && m.body.fault.is_none() {
            self.push(Reply::new(250, "2.0.0", format!("{size} octets received")));
            self.chunked = Some(m);
            return Next::Continue;
        }
        // The end of the message, or a refused chunk that ends it.
        let reply = self.end_of_data(*m.body, end, seen).await;
        self.push(reply);
        Next::Continue
    }

    /// Abandons a message in BDAT chunks (RSET, EHLO, the end of the
    /// session): nothing of it is delivered.
    pub(super) fn abort_chunked(&mut self, reply: Option<&Reply>) {
        let msg = match std::mem::replace(&mut self.phase, Phase::Command) {
            Phase::Chunk(chunk) => chunk.msg,
            other => {
                self.phase = other;
                None
            }
        };
        for m in msg.into_iter().chain(self.chunked.take()) {
            self.record_abandoned(&m.body.txn, reply);
            self.relay.abort(m.body.sink);
        }
    }

    /// Whether a message in BDAT chunks is open (between chunks or in one).
    pub(super) fn in_chunks(&self) -> bool {
        self.chunked.is_some() || matches!(&self.phase, Phase::Chunk(c) if c.msg.is_some())
    }
}
