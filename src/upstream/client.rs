//! The SMTP client toward a provider: connect, TLS, EHLO and AUTH (`connect`),
//! then commands whose replies are read in order, so that a caller may pipeline
//! (RFC 2920) by queueing several commands before reading their replies.
//!
//! A `Client` owns one authenticated connection and nothing of any client
//! session, so the pool can hold it between sessions. It points only at the
//! upstream's immutable `Dial`, never at the pool or the upstream. It also
//! owns the body writer (`body`: DATA with dot-stuffing, BDAT chunks, DATA ahead).

mod body;
mod connect;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use super::dial::Dial;
use super::{Capabilities, UpstreamError};
use crate::net::BoxIo;
use crate::smtp::line::{self, Scan};
use crate::smtp::reply::{Reply, ReplyParser};

pub use body::{BDAT_CHUNK, BDAT_IN_FLIGHT, Chunks, ChunksEnd, WRITE_CHUNK};

/// Connecting, TLS, greeting, EHLO and AUTH together must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait for a reply to MAIL, RCPT, DATA, RSET (RFC 5321 §4.5.3.2 gives 5 min).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Wait for the reply to the final dot (RFC 5321 §4.5.3.2.6: 10 min).
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest upstream reply line read: the RFC says 512; leave room for chatty providers.
const MAX_UPSTREAM_LINE: usize = 4096;

/// One authenticated connection to an upstream.
pub struct Client {
    dial: Arc<Dial>,
    stream: BoxIo,
    tls: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    caps: Capabilities,
    /// When a command last went out: the provider cuts idle connections.
    last_used: Instant,
    /// Replies read since set-up: 0 means no transaction has used it yet.
    replies: u64,
    /// The commands of the last `flush_commands`, kept so they can be replayed on a
    /// fresh connection if this one turns out dead before answering any of them.
    last_batch: Vec<u8>,
    /// The pool slot this connection occupies while checked out.
    permit: Option<super::pool::Slot>,
    /// Traffic connections count their replies; a health probe's do not.
    traffic: bool,
    /// The session's user's share of the pool (`max_upstream_connections_per_user`).
    user_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The body being sent in BDAT chunks, between `begin_chunks` and `end_chunks`.
    chunks: Option<Chunks>,
    /// DATA sent ahead of the body, its reply not read yet: when it went out.
    data_owed: Option<Instant>,
    /// The provider refused DATA sent ahead: the body is dropped, and this is
    /// the verdict at end-of-data.
    data_refused: Option<Reply>,
    /// With `[cluster]`: this connection's share of the upstream's
    /// `max_connections` across replicas, held for the connection's life.
    hold: Option<crate::cluster::Hold>,
    /// `read_reply`'s metric children, resolved once per command word on
    /// this connection (a label lookup hashes and locks: two per reply).
    reply_metrics: Vec<ReplyMetrics>,
    _active: ActiveGuard,
}

/// The children of `upstream_command_duration_seconds` and
/// `upstream_replies_total` for one command word of one connection.
struct ReplyMetrics {
    label: &'static str,
    duration: prometheus::Histogram,
    /// By reply class 2xx to 5xx, made when first seen.
    replies: [Option<prometheus::IntCounter>; 4],
}

const REPLY_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Counts the connection in `upstream_connections_active` while it lives.
struct ActiveGuard(prometheus::IntGauge);

impl ActiveGuard {
    fn new(dial: &Dial) -> ActiveGuard {
        let g = dial
            .metrics
            .upstream_connections_active
            .with_label_values(&[&dial.name]);
        g.inc();
        ActiveGuard(g)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Client {
    /// What the upstream advertised (after TLS).
    pub fn caps(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the connection has been quiet for longer than the upstream's
    /// `idle_timeout`, so the provider may already have cut it.
    pub fn is_stale(&self) -> bool {
        self.last_used.elapsed() >= self.dial.idle_timeout
    }

    /// Whether the provider has already spoken or hung up on this idle
    /// connection: a reply nobody asked for (a `421` at its idle cut) or EOF
    /// means it is closing. Looks without waiting.
    pub async fn is_closing(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        // One poll of the read, no timer: a zero `timeout` put a timer into
        // tokio's wheel earlier than any other, and inserting it woke the
        // runtime's driver (an `eventfd` write and a wasted `epoll_wait` at
        // every checkout of a kept connection).
        let read = self.stream.read_buf(&mut self.rbuf);
        let mut read = std::pin::pin!(read);
        std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx).is_ready())).await
    }

    /// The upstream's name.
    pub fn name(&self) -> &Arc<str> {
        &self.dial.name
    }

    /// Queues a command line (CRLF added); nothing is sent until `flush`.
    pub fn queue(&mut self, line: &str) {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
    }

    /// Sends everything queued.
    ///
    /// # Errors
    /// I/O errors toward the upstream.
    pub async fn flush(&mut self) -> Result<(), UpstreamError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = timeout(COMMAND_TIMEOUT, async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        })
        .await;
        self.wbuf.clear();
        self.last_used = Instant::now();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(UpstreamError::Io(e)),
            Err(_) => Err(UpstreamError::Timeout("write")),
        }
    }

    /// Sends queued commands (not message data), remembering them for `replay`.
    ///
    /// # Errors
    /// I/O errors toward the upstream.
    pub async fn flush_commands(&mut self) -> Result<(), UpstreamError> {
        self.last_batch.clear();
        self.last_batch.extend_from_slice(&self.wbuf);
        self.flush().await
    }

    /// Gives the connection the pool slot it occupies.
    pub(super) fn set_hold(&mut self, hold: Option<crate::cluster::Hold>) {
        self.hold = hold;
    }

    pub(super) fn take_hold(&mut self) -> Option<crate::cluster::Hold> {
        self.hold.take()
    }

    /// Whether the connection must close after its transaction: its shared
    /// slot could not be renewed (or was a fallback one and Redis is back).
    pub fn must_close(&self) -> bool {
        self.hold
            .as_ref()
            .is_some_and(crate::cluster::Hold::should_end)
    }

    pub(super) fn set_permit(&mut self, permit: super::pool::Slot) {
        self.permit = Some(permit);
    }

    /// Takes the pool slot back out (when the connection returns to the pool).
    pub(super) fn take_permit(&mut self) -> Option<super::pool::Slot> {
        self.user_permit = None;
        self.permit.take()
    }

    /// Gives the connection the user's share it occupies.
    pub(super) fn set_user_permit(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        self.user_permit = Some(permit);
    }

    pub(super) fn take_user_permit(&mut self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.user_permit.take()
    }

    /// Whether this connection served a transaction before (a reused one may have
    /// been cut by the provider while idle).
    pub fn was_used(&self) -> bool {
        self.replies > 0
    }

    /// Takes the commands of the last `flush_commands`, for another connection.
    pub(super) fn take_last_batch(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.last_batch)
    }

    /// Queues raw command bytes (a batch taken from a dead connection).
    pub(super) fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Sends one command and reads its reply, timing it under `label`.
    ///
    /// # Errors
    /// I/O, timeout or a malformed reply.
    pub async fn command(
        &mut self,
        line: &str,
        label: &'static str,
    ) -> Result<Reply, UpstreamError> {
        self.queue(line);
        self.flush().await?;
        self.read_reply(label, Instant::now(), COMMAND_TIMEOUT)
            .await
    }

    /// As `command` for a line that carries a secret (an AUTH response): the
    /// write buffer is wiped once it is sent.
    ///
    /// # Errors
    /// As `command`.
    pub async fn secret_command(&mut self, line: &str) -> Result<Reply, UpstreamError> {
        self.queue(line);
        let sent = self.flush_wiped().await;
        sent?;
        self.read_reply("AUTH", Instant::now(), COMMAND_TIMEOUT)
            .await
    }

    /// `flush`, wiping the buffer's bytes before it is cleared.
    async fn flush_wiped(&mut self) -> Result<(), UpstreamError> {
        let r = timeout(COMMAND_TIMEOUT, async {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await
        })
        .await;
        crate::secret::wipe(&mut self.wbuf);
        self.wbuf.clear();
        self.last_used = Instant::now();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(UpstreamError::Io(e)),
            Err(_) => Err(UpstreamError::Timeout("write")),
        }
    }

    /// Reads the next reply and counts it under `label`; `sent` is when its command went out.
    ///
    /// # Errors
    /// I/O, timeout or a malformed reply.
    pub async fn read_reply(
        &mut self,
        label: &'static str,
        sent: Instant,
        limit: Duration,
    ) -> Result<Reply, UpstreamError> {
        let reply = self.read_reply_within(limit).await?;
        self.replies += 1;
        if !self.traffic {
            return Ok(reply);
        }
        let m = &self.dial.metrics;
        let name = &*self.dial.name;
        let i = match self.reply_metrics.iter().position(|r| r.label == label) {
            Some(i) => i,
            None => {
                self.reply_metrics.push(ReplyMetrics {
                    label,
                    duration: m
                        .upstream_command_duration
                        .with_label_values(&[name, label]),
                    replies: [None, None, None, None],
                });
                self.reply_metrics.len() - 1
            }
        };
        let class = match reply.class() {
            2 => 0,
            3 => 1,
            4 => 2,
            _ => 3,
        };
        let r = &mut self.reply_metrics[i];
        r.duration.observe(sent.elapsed().as_secs_f64());
        r.replies[class]
            .get_or_insert_with(|| {
                m.upstream_replies
                    .with_label_values(&[name, label, REPLY_CLASSES[class]])
            })
            .inc();
        Ok(reply)
    }

    async fn read_reply_within(&mut self, limit: Duration) -> Result<Reply, UpstreamError> {
        match timeout(limit, self.read_reply_inner()).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout("reply")),
        }
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, UpstreamError> {
        let mut parser = ReplyParser::new();
        loop {
            match line::scan(&self.rbuf, MAX_UPSTREAM_LINE) {
                Scan::Line { len, consumed } => {
                    let parsed = parser.push(&self.rbuf[..len]);
                    self.rbuf.drain(..consumed);
                    match parsed {
                        Ok(Some(reply)) => return Ok(reply),
                        Ok(None) => continue,
                        Err(e) => return Err(UpstreamError::BadReply(e.to_string())),
                    }
                }
                Scan::BareLf { .. } => {
                    return Err(UpstreamError::BadReply("bare LF in reply".to_owned()));
                }
                Scan::TooLong => {
                    return Err(UpstreamError::BadReply("reply line too long".to_owned()));
                }
                Scan::Incomplete => {
                    let n = self
                        .stream
                        .read_buf(&mut self.rbuf)
                        .await
                        .map_err(UpstreamError::Io)?;
                    if n == 0 {
                        return Err(UpstreamError::Closed);
                    }
                }
            }
        }
    }

    /// Says QUIT and closes, ignoring errors (the connection is done either way).
    pub async fn quit(mut self) {
        self.queue("QUIT");
        if self.flush().await.is_ok() {
            let _ = timeout(Duration::from_secs(5), self.read_reply_inner()).await;
        }
        let _ = self.stream.shutdown().await;
    }
}
