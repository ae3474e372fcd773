//! A scripted, recording fake upstream SMTP server on loopback.
//!
//! `FakeUpstream::start(cfg)` binds `127.0.0.1:0` and serves every connection in its own
//! task until the `FakeUpstream` is dropped (dropping it stops the listener and aborts all
//! connection tasks). Everything a client sends is recorded and can be inspected with
//! `messages()`, `auths()`, `commands()`, `raw()`, ... Faults are injected through
//! `UpstreamConfig`.
//!
//! Protocol notes:
//! * Command lines end at LF (a preceding CR is stripped); DATA lines end only at CRLF, so a
//!   bare LF inside a message never ends a line, and only a line that is exactly ".\r\n"
//!   ends the message.
//! * Lines are capped at `MAX_LINE` bytes: a longer line gets "500 5.5.2 line too long"
//!   and the connection is closed.
//! * Replies are buffered and flushed whenever the server needs more input, so pipelined
//!   commands are answered in order, in as few writes as possible.
//! * After STARTTLS any plaintext the client had already pipelined is discarded (RFC 3207),
//!   and the session starts over (a new EHLO is required, AUTH is forgotten).

// Wall-clock measurements and deadlines of a test run, not postern's timeouts.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use super::certs::{TestCert, test_cert};

/// Longest accepted line (command or DATA line), terminator included.
pub const MAX_LINE: usize = 64 * 1024;

/// How the fake upstream offers TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpTls {
    /// Plaintext only; AUTH is offered in plaintext.
    None,
    /// STARTTLS is offered; AUTH is offered (and accepted) only after TLS.
    StartTls,
    /// TLS from the first byte (SMTPS, "wrapper" mode).
    Implicit,
}

#[derive(Clone, Debug)]
pub struct UpstreamConfig {
    /// Default `UpTls::None`.
    pub tls: UpTls,
    /// Name in the greeting and EHLO reply. Default "fake-upstream.test".
    pub hostname: String,
    /// EHLO keywords advertised after the greeting line, e.g. "PIPELINING", "8BITMIME",
    /// "SIZE 10485760". Default: PIPELINING, 8BITMIME, SMTPUTF8, DSN, ENHANCEDSTATUSCODES,
    /// SIZE 10485760, AUTH PLAIN LOGIN.
    /// STARTTLS is added automatically before TLS when tls == StartTls. AUTH is only
    /// offered after TLS when tls != None.
    pub extensions: Vec<String>,
    /// Default "provider-user". When non-empty, MAIL requires a successful AUTH.
    pub username: String,
    /// Default "provider-secret".
    pub password: String,
    /// Per-recipient scripted replies, keyed by address (case-insensitive), e.g.
    /// "bad@x.test" -> "550 5.1.1 no such user". A reply starting with '2' accepts the
    /// recipient.
    pub rcpt_replies: HashMap<String, String>,
    /// Reply to MAIL FROM instead of 250 (e.g. "451 4.3.0 busy"). A reply starting with
    /// '2' still opens the transaction.
    pub mail_reply: Option<String>,
    /// Reply to the final "." instead of 250 (e.g. "451 4.3.0 try again later" or
    /// "554 5.7.1 spam"). A reply starting with '2' still records the message.
    pub data_end_reply: Option<String>,
    /// Close the TCP connection (no reply) after receiving this many DATA bytes of a message.
    pub drop_after_data_bytes: Option<usize>,
    /// Raw bytes written right after the 220 greeting, in the same write
    /// (response-injection test).
    pub inject_after_greeting: Option<Vec<u8>>,
    /// Raw bytes written right after the "220 2.0.0 ready" reply to STARTTLS, in the same
    /// write, before the TLS handshake.
    pub inject_after_starttls_220: Option<Vec<u8>>,
    /// Delay before answering the final "." (to test timeouts / pool behaviour).
    pub data_end_delay: Option<Duration>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            tls: UpTls::None,
            hostname: "fake-upstream.test".to_string(),
            extensions: [
                "PIPELINING",
                "8BITMIME",
                "SMTPUTF8",
                "DSN",
                "ENHANCEDSTATUSCODES",
                "SIZE 10485760",
                "AUTH PLAIN LOGIN",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            username: "provider-user".to_string(),
            password: "provider-secret".to_string(),
            rcpt_replies: HashMap::new(),
            mail_reply: None,
            data_end_reply: None,
            drop_after_data_bytes: None,
            inject_after_greeting: None,
            inject_after_starttls_220: None,
            data_end_delay: None,
        }
    }
}

/// One message the fake upstream accepted (answered 2xx at the end of DATA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The whole MAIL command line as received, e.g. "MAIL FROM:<a@b> SIZE=12".
    pub mail_from: String,
    /// Whole RCPT lines that were accepted (2xx).
    pub rcpts: Vec<String>,
    /// Message content after undoing dot-stuffing: every line with its CRLF, without the
    /// final ".\r\n".
    pub data: Vec<u8>,
    /// Exactly the bytes received after the 354, up to and excluding the final ".\r\n"
    /// (still dot-stuffed).
    pub raw_data: Vec<u8>,
    /// Who authenticated on that connection.
    pub auth_user: Option<String>,
}

#[derive(Default)]
struct Recorded {
    messages: Vec<Message>,
    auths: Vec<(String, String)>,
    commands: Vec<String>,
    raw: Vec<u8>,
    connections: usize,
    closed_connections: usize,
    data_commands: usize,
    queued: u64,
}

#[derive(Default)]
struct Shared {
    rec: Mutex<Recorded>,
    /// Woken (notify_waiters) after every change to `rec`.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        // A panicking test thread must not hide the recording from other assertions.
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update<R>(&self, f: impl FnOnce(&mut Recorded) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_waiters();
        r
    }
}

struct Server {
    cfg: UpstreamConfig,
    /// `cfg.rcpt_replies` with lower-cased keys.
    rcpt_replies: HashMap<String, String>,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
}

/// The running fake upstream. Dropping it stops the listener and all its connections.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    /// The server certificate when `tls != UpTls::None`.
    pub cert: Option<TestCert>,
    shared: Arc<Shared>,
    accept_task: AbortHandle,
    conn_tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.accept_task.abort();
        for t in self
            .conn_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl FakeUpstream {
    /// Binds 127.0.0.1:0 and spawns the accept loop; each connection gets its own task.
    pub async fn start(cfg: UpstreamConfig) -> FakeUpstream {
        let cert = (cfg.tls != UpTls::None).then(test_cert);
        let acceptor = cert.as_ref().map(tls_acceptor);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeUpstream: binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("FakeUpstream: local_addr");
        let shared = Arc::new(Shared::default());
        let rcpt_replies = cfg
            .rcpt_replies
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let server = Arc::new(Server {
            cfg,
            rcpt_replies,
            acceptor,
            shared: shared.clone(),
        });
        let conn_tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let tasks = conn_tasks.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        // e.g. EMFILE; avoid spinning.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                server.shared.update(|r| r.connections += 1);
                let server = server.clone();
                let handle = tokio::spawn(async move {
                    let _ = serve(&server, tcp).await;
                    server.shared.update(|r| r.closed_connections += 1);
                });
                let mut tasks = tasks.lock().unwrap_or_else(|e| e.into_inner());
                tasks.retain(|t| !t.is_finished());
                tasks.push(handle.abort_handle());
            }
        })
        .abort_handle();
        FakeUpstream {
            addr,
            cert,
            shared,
            accept_task,
            conn_tasks,
        }
    }

    /// The listening port (same as `addr.port()`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Fully accepted messages (got 2xx at end of data), in order.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.lock().messages.clone()
    }

    /// Waits until at least `n` messages were accepted and returns them all.
    /// Panics with a description of what the server saw if `timeout` passes first.
    pub async fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<Message> {
        self.wait_until(&format!("{n} accepted message(s)"), timeout, |u| {
            u.shared.lock().messages.len() >= n
        })
        .await;
        self.messages()
    }

    /// Waits until `pred(self)` holds; it is re-checked after every recorded event
    /// (connection opened/closed, command, AUTH attempt, bytes received, message).
    /// Panics with `what` and a description of what the server saw if `timeout` passes first.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&FakeUpstream) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so no notification between check and wait is lost.
            notified.as_mut().enable();
            if pred(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if pred(self) {
                    return;
                }
                let r = self.shared.lock();
                panic!(
                    "FakeUpstream: timed out after {timeout:?} waiting for {what}; \
                     have {} accepted message(s), {} connection(s) ({} closed), \
                     {} DATA command(s) answered 354, {} AUTH attempt(s); commands so far: {:#?}",
                    r.messages.len(),
                    r.connections,
                    r.closed_connections,
                    r.data_commands,
                    r.auths.len(),
                    r.commands,
                );
            }
        }
    }

    /// (username, password) of every AUTH attempt, decoded from PLAIN or LOGIN.
    pub fn auths(&self) -> Vec<(String, String)> {
        self.shared.lock().auths.clone()
    }

    /// Every command line received (without CRLF; not DATA content, not SASL
    /// continuation lines), in order, across connections.
    pub fn commands(&self) -> Vec<String> {
        self.shared.lock().commands.clone()
    }

    /// Every byte received (after TLS decryption) across all connections, in order of
    /// arrival per connection.
    pub fn raw(&self) -> Vec<u8> {
        self.shared.lock().raw.clone()
    }

    /// Accepted TCP connections so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().connections
    }

    /// Connections that have ended (closed by either side, or dropped by a fault).
    pub fn closed_connections(&self) -> usize {
        self.shared.lock().closed_connections
    }

    /// How many DATA commands got 354.
    pub fn data_commands(&self) -> usize {
        self.shared.lock().data_commands
    }

    /// The certificate PEM to trust when TLS is on.
    /// Waits until postern's start-up probe of this upstream (EHLO, AUTH, QUIT) has
    /// ended, so that connection counts and learned capabilities are settled.
    pub async fn wait_probe(&self) {
        self.wait_until(
            "postern's start-up probe to finish",
            Duration::from_secs(10),
            |u| u.closed_connections() >= 1,
        )
        .await;
    }

    /// A postern `[[upstream]]` table named "fake" pointing here in plain text,
    /// with the default provider credentials.
    pub fn postern_toml(&self) -> String {
        format!(
            "[[upstream]]\nname = \"fake\"\nkind = \"smtp\"\naddr = \"127.0.0.1:{}\"\ntls = \"none\"\n\
             username = \"provider-user\"\npassword = \"provider-secret\"\n",
            self.addr.port()
        )
    }

    pub fn ca_pem(&self) -> Option<String> {
        self.cert.as_ref().map(|c| c.cert_pem.clone())
    }
}

fn tls_acceptor(cert: &TestCert) -> TlsAcceptor {
    let certs = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("FakeUpstream: parsing test certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .expect("FakeUpstream: parsing test key PEM");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("FakeUpstream: rustls protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("FakeUpstream: rustls server config");
    TlsAcceptor::from(Arc::new(config))
}

// ---------------------------------------------------------------------------------------
// Connection plumbing

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the STARTTLS handshake runs.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream taken for TLS handshake",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

enum LineRead {
    /// A command line without its LF / CRLF.
    Line(Vec<u8>),
    TooLong,
    Eof,
}

enum DataRead {
    /// (raw_data, data)
    Done(Vec<u8>, Vec<u8>),
    /// `drop_after_data_bytes` reached.
    Dropped,
    TooLong,
    Eof,
}

struct Conn {
    stream: Stream,
    /// Received bytes; `buf[start..]` is not consumed yet.
    buf: Vec<u8>,
    start: usize,
    /// Replies not written yet.
    out: Vec<u8>,
    shared: Arc<Shared>,
}

impl Conn {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn reply(&mut self, reply: &str) {
        for line in reply.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                self.out.extend_from_slice(line.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Flushes pending replies, then reads more input. Returns false on EOF.
    async fn fill(&mut self) -> io::Result<bool> {
        self.flush().await?;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(16 * 1024);
        let old = self.buf.len();
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Ok(false);
        }
        let new = &self.buf[old..];
        self.shared.update(|r| r.raw.extend_from_slice(new));
        Ok(true)
    }

    /// Sends pending replies and a FIN, then discards input until the client closes (at
    /// most 1 s / 4 MiB), so the client reads the last reply instead of a connection reset.
    async fn close_gracefully(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await?;
        let drain = async {
            let mut sink = [0u8; 4096];
            let mut total = 0;
            while total < 4 << 20 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        Ok(())
    }

    /// Drops any input received but not consumed yet (plaintext pipelined after STARTTLS).
    fn discard_input(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    async fn read_line(&mut self) -> io::Result<LineRead> {
        loop {
            if let Some(i) = self.pending().iter().position(|&b| b == b'\n') {
                if i + 1 > MAX_LINE {
                    return Ok(LineRead::TooLong);
                }
                let line = &self.pending()[..i];
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                self.start += i + 1;
                return Ok(LineRead::Line(line));
            }
            if self.pending().len() > MAX_LINE {
                return Ok(LineRead::TooLong);
            }
            if !self.fill().await? {
                return Ok(LineRead::Eof);
            }
        }
    }

    /// Reads DATA content up to a line that is exactly ".\r\n".
    async fn read_data(&mut self, drop_after: Option<usize>) -> io::Result<DataRead> {
        let mut raw = Vec::new();
        let mut data = Vec::new();
        loop {
            while let Some(i) = find_crlf(self.pending()) {
                let end = self.start + i + 2;
                let line = &self.buf[self.start..end];
                if line.len() > MAX_LINE {
                    return Ok(DataRead::TooLong);
                }
                self.start = end;
                if line == b".\r\n" {
                    return Ok(DataRead::Done(raw, data));
                }
                raw.extend_from_slice(line);
                data.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
                if drop_after.is_some_and(|n| raw.len() >= n) {
                    return Ok(DataRead::Dropped);
                }
            }
            // An incomplete line is pending; count it as DATA unless it may be the final ".".
            let partial = self.pending();
            let partial_len = match partial {
                b"." | b".\r" => 0,
                p => p.len(),
            };
            if drop_after.is_some_and(|n| raw.len() + partial_len >= n) {
                return Ok(DataRead::Dropped);
            }
            if partial.len() > MAX_LINE {
                return Ok(DataRead::TooLong);
            }
            if !self.fill().await? {
                return Ok(DataRead::Eof);
            }
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

// ---------------------------------------------------------------------------------------
// The SMTP session

#[derive(Default)]
struct Session {
    tls_active: bool,
    greeted: bool,
    auth_user: Option<String>,
    mail: Option<String>,
    rcpts: Vec<String>,
}

impl Session {
    fn reset_transaction(&mut self) {
        self.mail = None;
        self.rcpts.clear();
    }
}

fn positive(reply: &str) -> bool {
    reply.starts_with('2')
}

/// True if `line` starts with `prefix`, ASCII case-insensitively.
fn starts_with_ci(line: &str, prefix: &str) -> bool {
    line.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// The address in "<addr> params" (or "addr params"), lower-cased.
fn path_address(rest: &str) -> String {
    let rest = rest.trim_start();
    let addr = match rest.strip_prefix('<') {
        Some(r) => r.split('>').next().unwrap_or(r),
        None => rest.split(' ').next().unwrap_or(rest),
    };
    addr.to_ascii_lowercase()
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s == "=" {
        return Some(Vec::new());
    }
    B64.decode(s).ok()
}

fn is_auth_keyword(ext: &str) -> bool {
    starts_with_ci(ext, "AUTH") && matches!(ext.as_bytes().get(4), None | Some(b' ') | Some(b'='))
}

async fn serve(server: &Server, tcp: TcpStream) -> io::Result<()> {
    let cfg = &server.cfg;
    let mut session = Session::default();
    let stream = match (cfg.tls, &server.acceptor) {
        (UpTls::Implicit, Some(acceptor)) => {
            session.tls_active = true;
            Stream::Tls(Box::new(acceptor.accept(tcp).await?))
        }
        _ => Stream::Plain(tcp),
    };
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        start: 0,
        out: Vec::new(),
        shared: server.shared.clone(),
    };
    conn.reply(&format!("220 {} ESMTP", cfg.hostname));
    if let Some(inject) = &cfg.inject_after_greeting {
        conn.out.extend_from_slice(inject);
    }
    conn.flush().await?;

    loop {
        let line = match conn.read_line().await? {
            LineRead::Line(l) => String::from_utf8_lossy(&l).into_owned(),
            LineRead::Eof => return Ok(()),
            LineRead::TooLong => {
                conn.reply("500 5.5.2 line too long");
                return conn.close_gracefully().await;
            }
        };
        server.shared.update(|r| r.commands.push(line.clone()));
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
            None => (line.trim().to_ascii_uppercase(), ""),
        };
        match verb.as_str() {
            "EHLO" => {
                session.greeted = true;
                session.reset_transaction();
                let offer_auth = cfg.tls == UpTls::None || session.tls_active;
                let mut exts: Vec<&str> = cfg
                    .extensions
                    .iter()
                    .map(String::as_str)
                    .filter(|e| offer_auth || !is_auth_keyword(e))
                    .filter(|e| !(session.tls_active && e.eq_ignore_ascii_case("STARTTLS")))
                    .collect();
                if cfg.tls == UpTls::StartTls
                    && !session.tls_active
                    && !exts.iter().any(|e| e.eq_ignore_ascii_case("STARTTLS"))
                {
                    exts.push("STARTTLS");
                }
                let mut reply = String::new();
                let mut lines = std::iter::once(cfg.hostname.as_str())
                    .chain(exts)
                    .peekable();
                while let Some(l) = lines.next() {
                    let sep = if lines.peek().is_some() { '-' } else { ' ' };
                    reply.push_str(&format!("250{sep}{l}\r\n"));
                }
                conn.reply(&reply);
            }
            "HELO" => {
                session.greeted = true;
                session.reset_transaction();
                conn.reply(&format!("250 {}", cfg.hostname));
            }
            "STARTTLS" => {
                let acceptor = match &server.acceptor {
                    Some(a) if cfg.tls == UpTls::StartTls => a,
                    _ => {
                        conn.reply("454 4.7.0 TLS not available");
                        continue;
                    }
                };
                if !session.greeted {
                    conn.reply("503 5.5.1 send EHLO first");
                    continue;
                }
                if session.tls_active {
                    conn.reply("503 5.5.1 TLS already active");
                    continue;
                }
                conn.reply("220 2.0.0 ready");
                if let Some(inject) = &cfg.inject_after_starttls_220 {
                    conn.out.extend_from_slice(inject);
                }
                conn.flush().await?;
                conn.discard_input();
                let Stream::Plain(tcp) = std::mem::replace(&mut conn.stream, Stream::Gone) else {
                    unreachable!("STARTTLS on a TLS stream");
                };
                conn.stream = Stream::Tls(Box::new(acceptor.accept(tcp).await?));
                session = Session {
                    tls_active: true,
                    ..Session::default()
                };
            }
            "AUTH" => {
                if !session.greeted {
                    conn.reply("503 5.5.1 send EHLO first");
                } else if cfg.tls == UpTls::StartTls && !session.tls_active {
                    conn.reply("530 5.7.0 Must issue a STARTTLS command first");
                } else if session.auth_user.is_some() {
                    conn.reply("503 5.5.1 already authenticated");
                } else if session.mail.is_some() {
                    conn.reply("503 5.5.1 AUTH not permitted during a mail transaction");
                } else {
                    let Some(creds) = sasl(&mut conn, arg).await? else {
                        continue;
                    };
                    let ok = creds.0 == cfg.username && creds.1 == cfg.password;
                    let user = creds.0.clone();
                    server.shared.update(|r| r.auths.push(creds));
                    if ok {
                        session.auth_user = Some(user);
                        conn.reply("235 2.7.0 ok");
                    } else {
                        conn.reply("535 5.7.8 bad credentials");
                    }
                }
            }
            "MAIL" => {
                if !session.greeted {
                    conn.reply("503 5.5.1 send EHLO first");
                } else if session.mail.is_some() {
                    conn.reply("503 5.5.1 nested MAIL command");
                } else if !cfg.username.is_empty() && session.auth_user.is_none() {
                    conn.reply("530 5.7.0 authentication required");
                } else if !starts_with_ci(&line, "MAIL FROM:") {
                    conn.reply("501 5.5.4 syntax: MAIL FROM:<address>");
                } else {
                    let reply = cfg.mail_reply.as_deref().unwrap_or("250 2.1.0 ok");
                    if positive(reply) {
                        session.mail = Some(line.clone());
                    }
                    conn.reply(reply);
                }
            }
            "RCPT" => {
                if session.mail.is_none() {
                    conn.reply("503 5.5.1 need MAIL command");
                } else if !starts_with_ci(&line, "RCPT TO:") {
                    conn.reply("501 5.5.4 syntax: RCPT TO:<address>");
                } else {
                    let addr = path_address(&line["RCPT TO:".len()..]);
                    let reply = server
                        .rcpt_replies
                        .get(&addr)
                        .map(String::as_str)
                        .unwrap_or("250 2.1.5 ok");
                    if positive(reply) {
                        session.rcpts.push(line.clone());
                    }
                    conn.reply(reply);
                }
            }
            "DATA" => {
                if session.rcpts.is_empty() {
                    conn.reply("554 5.5.1 no valid recipients");
                    continue;
                }
                server.shared.update(|r| r.data_commands += 1);
                conn.reply("354 go ahead");
                let (raw_data, data) = match conn.read_data(cfg.drop_after_data_bytes).await? {
                    DataRead::Done(raw, data) => (raw, data),
                    DataRead::Eof => return Ok(()),
                    DataRead::Dropped => {
                        // Replies to earlier commands still go out; the message gets none.
                        conn.flush().await?;
                        return Ok(());
                    }
                    DataRead::TooLong => {
                        conn.reply("500 5.5.2 line too long");
                        return conn.close_gracefully().await;
                    }
                };
                if let Some(delay) = cfg.data_end_delay {
                    conn.flush().await?;
                    tokio::time::sleep(delay).await;
                }
                let mail_from = session.mail.take().unwrap_or_default();
                let rcpts = std::mem::take(&mut session.rcpts);
                let scripted = cfg.data_end_reply.clone();
                let accepted = scripted.as_deref().is_none_or(positive);
                let auth_user = session.auth_user.clone();
                let reply = server.shared.update(|rec| {
                    if accepted {
                        rec.queued += 1;
                        rec.messages.push(Message {
                            mail_from,
                            rcpts,
                            data,
                            raw_data,
                            auth_user,
                        });
                    }
                    scripted.unwrap_or_else(|| format!("250 2.0.0 queued as {}", rec.queued))
                });
                conn.reply(&reply);
            }
            "RSET" => {
                session.reset_transaction();
                conn.reply("250 2.0.0 ok");
            }
            "NOOP" => conn.reply("250 2.0.0 ok"),
            "QUIT" => {
                conn.reply("221 2.0.0 bye");
                conn.flush().await?;
                return conn.stream.shutdown().await;
            }
            _ => conn.reply("500 5.5.2 command not recognized"),
        }
    }
}

/// Runs the AUTH exchange. Returns the decoded (username, password), or None after
/// having replied with an error (unknown mechanism, cancelled, malformed).
async fn sasl(conn: &mut Conn, arg: &str) -> io::Result<Option<(String, String)>> {
    let (mech, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim())),
        None => (arg.to_ascii_uppercase(), None),
    };
    match mech.as_str() {
        "PLAIN" => {
            let Some(resp) = sasl_step(conn, initial, "334 ").await? else {
                return Ok(None);
            };
            let mut parts = resp.split(|&b| b == 0);
            let (Some(_authzid), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                conn.reply("501 5.5.2 malformed PLAIN response");
                return Ok(None);
            };
            Ok(Some((
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            )))
        }
        "LOGIN" => {
            let Some(user) = sasl_step(conn, initial, "334 VXNlcm5hbWU6").await? else {
                return Ok(None);
            };
            let Some(pass) = sasl_step(conn, None, "334 UGFzc3dvcmQ6").await? else {
                return Ok(None);
            };
            Ok(Some((
                String::from_utf8_lossy(&user).into_owned(),
                String::from_utf8_lossy(&pass).into_owned(),
            )))
        }
        "" => {
            conn.reply("501 5.5.4 syntax: AUTH mechanism");
            Ok(None)
        }
        _ => {
            conn.reply("504 5.5.4 mechanism not supported");
            Ok(None)
        }
    }
}

/// One SASL response: `initial` if given, else send `challenge` and read a line.
/// Returns the decoded bytes, or None after replying with an error.
async fn sasl_step(
    conn: &mut Conn,
    initial: Option<&str>,
    challenge: &str,
) -> io::Result<Option<Vec<u8>>> {
    let resp = match initial {
        Some(i) => i.to_string(),
        None => {
            conn.reply(challenge);
            match conn.read_line().await? {
                LineRead::Line(l) => String::from_utf8_lossy(&l).into_owned(),
                LineRead::TooLong => {
                    conn.reply("500 5.5.2 line too long");
                    conn.close_gracefully().await?;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
                }
                LineRead::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "EOF during AUTH",
                    ));
                }
            }
        }
    };
    if resp.trim() == "*" {
        conn.reply("501 5.0.0 authentication cancelled");
        return Ok(None);
    }
    match decode_b64(&resp) {
        Some(b) => Ok(Some(b)),
        None => {
            conn.reply("501 5.5.2 invalid base64");
            Ok(None)
        }
    }
}
