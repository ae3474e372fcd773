//! The SMTP client toward a provider: connect, TLS (implicit or STARTTLS, never
//! a plaintext fallback), EHLO, AUTH with the provider's credentials, then
//! commands whose replies are read in order, so that a caller may pipeline
//! (RFC 2920) by queueing several commands before reading their replies.
//!
//! A `Client` owns one authenticated connection and nothing of any client
//! session, so the pool can hold it between sessions. It points only at the
//! upstream's immutable `Dial`, never at the pool or the upstream. It also
//! owns the body writer: content lines go in unstuffed and leave dot-stuffed,
//! in chunks of `WRITE_CHUNK`, or, toward an upstream that offers CHUNKING, as
//! they are in `BDAT` chunks (RFC 3030) of at most `BDAT_CHUNK` bytes.
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

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use super::dial::Dial;
use super::oauth2::TokenSource;
use super::pool::Purpose;
use super::{Capabilities, UpstreamError};
use crate::config::{TlsMode, UpstreamAuth};
use crate::net::BoxIo;
use crate::secret::SecretString;
use crate::smtp::data;
use crate::smtp::line::{self, Scan};
use crate::smtp::reply::{Reply, ReplyParser};
use crate::smtp::sasl;

/// Connecting, TLS, greeting, EHLO and AUTH together must finish within this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait for a reply to MAIL, RCPT, DATA, RSET (RFC 5321 §4.5.3.2 gives 5 min).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Wait for the reply to the final dot (RFC 5321 §4.5.3.2.6: 10 min).
pub const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest upstream reply line read: the RFC says 512; leave room for chatty providers.
const MAX_UPSTREAM_LINE: usize = 4096;
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
    /// Opens a connection: TCP, TLS per `tls`, greeting, EHLO, AUTH.
    ///
    /// # Errors
    /// `UpstreamError` with the stage that failed; nothing of the password is in it.
    pub async fn connect(dial: Arc<Dial>, purpose: Purpose) -> Result<Client, UpstreamError> {
        let metrics = dial.metrics.clone();
        let name = dial.name.clone();
        let traffic = purpose == Purpose::Traffic;
        let started = Instant::now();
        let result = match timeout(CONNECT_TIMEOUT, Client::connect_inner(dial, traffic)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout("connect")),
        };
        let word = result.as_ref().err().map_or("ok", UpstreamError::stage);
        if traffic {
            match &result {
                Ok(_) => {
                    metrics
                        .upstream_connections_opened
                        .with_label_values(&[&name])
                        .inc();
                    metrics
                        .upstream_connection_setup_duration
                        .with_label_values(&[&name])
                        .observe(started.elapsed().as_secs_f64());
                }
                Err(_) => metrics
                    .upstream_connections_failed
                    .with_label_values(&[&name, word])
                    .inc(),
            }
        } else {
            metrics
                .upstream_health_checks
                .with_label_values(&[&name, word])
                .inc();
        }
        result
    }

    async fn connect_inner(dial: Arc<Dial>, traffic: bool) -> Result<Client, UpstreamError> {
        let io = dial.open().await?;
        let mode = dial.tls_mode;
        let (stream, tls) = if mode == TlsMode::Implicit {
            (dial.tls_handshake(io).await?, true)
        } else {
            (io, false)
        };
        let mut c = Client {
            _active: ActiveGuard::new(&dial),
            dial,
            stream,
            tls,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            caps: Capabilities::default(),
            last_used: Instant::now(),
            replies: 0,
            reply_metrics: Vec::new(),
            last_batch: Vec::new(),
            permit: None,
            traffic,
            user_permit: None,
            chunks: None,
            data_owed: None,
            data_refused: None,
            hold: None,
        };
        let greeting = c.read_reply_within(COMMAND_TIMEOUT).await?;
        if greeting.code != 220 {
            return Err(UpstreamError::Rejected("greeting", greeting));
        }
        c.ehlo().await?;
        if mode == TlsMode::Starttls {
            if !c.caps.starttls {
                // No opportunistic fallback: a man in the middle can strip STARTTLS.
                return Err(UpstreamError::Protocol("upstream does not offer STARTTLS"));
            }
            let reply = c.command("STARTTLS", "STARTTLS").await?;
            if reply.code != 220 {
                return Err(UpstreamError::Rejected("starttls", reply));
            }
            if !c.rbuf.is_empty() {
                // Response injection: bytes after the 220 came in clear text.
                return Err(UpstreamError::Protocol(
                    "upstream sent data after its STARTTLS 220 (response injection)",
                ));
            }
            if c.tls {
                return Err(UpstreamError::Protocol("STARTTLS inside TLS"));
            }
            let plain = std::mem::replace(&mut c.stream, Box::new(tokio::io::empty()));
            c.stream = c.dial.tls_handshake(plain).await?;
            c.tls = true;
            // RFC 3207 §4.2: forget what was learned before TLS.
            c.caps = Capabilities::default();
            c.ehlo().await?;
        }
        c.authenticate().await?;
        c.replies = 0;
        Ok(c)
    }

    async fn ehlo(&mut self) -> Result<(), UpstreamError> {
        let line = format!("EHLO {}", self.dial.helo_name);
        let reply = self.command(&line, "EHLO").await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        let line = format!("HELO {}", self.dial.helo_name);
        let reply = self.command(&line, "HELO").await?;
        if reply.code != 250 {
            return Err(UpstreamError::Rejected("ehlo", reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    async fn authenticate(&mut self) -> Result<(), UpstreamError> {
        if let Some((user, tokens)) = self.dial.oauth.clone() {
            return self.authenticate_oauth(&user, &tokens).await;
        }
        let Some((user, password)) = self.dial.credentials.clone() else {
            return Ok(());
        };
        let auth = self.dial.auth;
        let plain =
            auth == UpstreamAuth::Plain || (auth == UpstreamAuth::Auto && self.caps.auth_plain);
        let login =
            auth == UpstreamAuth::Login || (auth == UpstreamAuth::Auto && self.caps.auth_login);
        let reply = if plain {
            let line = SecretString::new(format!(
                "AUTH PLAIN {}",
                sasl::encode_plain(&user, password.expose()).expose()
            ));
            self.secret_command(line.expose()).await?
        } else if login {
            let r = self.command("AUTH LOGIN", "AUTH").await?;
            if r.code != 334 {
                return Err(UpstreamError::Rejected("auth", r));
            }
            let r = self.command(&sasl::encode(&user), "AUTH").await?;
            if r.code != 334 {
                return Err(UpstreamError::Rejected("auth", r));
            }
            self.secret_command(sasl::encode_secret(password.expose()).expose())
                .await?
        } else {
            return Err(UpstreamError::Protocol(
                "upstream offers neither AUTH PLAIN nor AUTH LOGIN",
            ));
        };
        if reply.code != 235 {
            return Err(UpstreamError::Rejected("auth", reply));
        }
        Ok(())
    }

    /// XOAUTH2 or OAUTHBEARER with a token from the account's source; a cached
    /// token the provider refuses is replaced once and tried again.
    async fn authenticate_oauth(
        &mut self,
        user: &str,
        tokens: &TokenSource,
    ) -> Result<(), UpstreamError> {
        let bearer = self.dial.auth == UpstreamAuth::Oauthbearer;
        let offered = if bearer {
            self.caps.auth_oauthbearer
        } else {
            self.caps.auth_xoauth2
        };
        if !offered {
            return Err(UpstreamError::Protocol(if bearer {
                "upstream does not offer AUTH OAUTHBEARER"
            } else {
                "upstream does not offer AUTH XOAUTH2"
            }));
        }
        let token_error = |e: super::oauth2::TokenError| UpstreamError::Token(e.to_string());
        let (mut token, mut cached) = tokens.token().await.map_err(token_error)?;
        loop {
            let name = if bearer { "OAUTHBEARER" } else { "XOAUTH2" };
            let line = SecretString::new(format!(
                "AUTH {name} {}",
                super::oauth2::initial_response(self.dial.auth, user, token.expose()).expose()
            ));
            let mut reply = self.secret_command(line.expose()).await?;
            if reply.code == 334 {
                // The provider's error, as a base64 JSON challenge; the client
                // answers with an empty response (RFC 7628 §3.2.3: %x01) and
                // hears the final 535.
                reply = self
                    .command(if bearer { "AQ==" } else { "" }, "AUTH")
                    .await?;
            }
            if reply.code == 235 {
                return Ok(());
            }
            if !cached || reply.class() != 5 {
                return Err(UpstreamError::Rejected("auth", reply));
            }
            tracing::info!(
                upstream = %self.dial.name,
                "provider refused the cached OAuth2 token; fetching a new one"
            );
            token = tokens
                .renew_after_refusal(token.expose())
                .await
                .map_err(token_error)?;
            cached = false;
        }
    }

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
