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

use std::collections::{HashMap, HashSet};
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
    /// Reply to DATA instead of 354 (e.g. "452 4.3.1 out of storage"); the
    /// transaction stays open.
    pub data_reply: Option<String>,
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
    /// The certificate to serve when TLS is on; default a fresh self-signed one
    /// for localhost and 127.0.0.1.
    pub cert: Option<TestCert>,
    /// Bearer tokens XOAUTH2 and OAUTHBEARER accept (shared with a test token
    /// endpoint, which adds what it issues). A refused token gets a 334 with a
    /// base64 JSON error, then 535 after the client's empty response, as Gmail does.
    pub oauth_tokens: Option<Arc<Mutex<HashSet<String>>>>,
    /// More (username, password) pairs AUTH accepts besides `username`/`password`
    /// (a provider with one account per sender address); a bearer token from
    /// `oauth_tokens` is taken for these users too.
    pub accounts: HashMap<String, String>,
    /// Reply to every `BDAT n` that is not LAST instead of 250 (e.g. "452 4.3.1
    /// out of space"). A refusal ends the transaction: later chunks of it get
    /// "503 5.5.1 transaction failed". `BDAT n LAST` answers `data_end_reply`.
    pub bdat_reply: Option<String>,
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
            data_reply: None,
            data_end_reply: None,
            drop_after_data_bytes: None,
            inject_after_greeting: None,
            inject_after_starttls_220: None,
            data_end_delay: None,
            cert: None,
            oauth_tokens: None,
            accounts: HashMap::new(),
            bdat_reply: None,
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
    /// (still dot-stuffed); for BDAT, the chunks' bytes (equal to `data`).
    pub raw_data: Vec<u8>,
    /// The sizes of the BDAT chunks it came in, in order; empty when it came by DATA.
    pub chunks: Vec<usize>,
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
    /// The most connections open at once since start (or `reset_peak`).
    peak_open: usize,
    data_commands: usize,
    bdat_commands: usize,
    /// Each read from a client, per connection: (connection number, bytes).
    reads: Vec<(usize, Vec<u8>)>,
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
        let cert = (cfg.tls != UpTls::None).then(|| cfg.cert.clone().unwrap_or_else(test_cert));
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
                let id = server.shared.update(|r| {
                    r.connections += 1;
                    r.peak_open = r.peak_open.max(r.connections - r.closed_connections);
                    r.connections
                });
                let server = server.clone();
                let handle = tokio::spawn(async move {
                    let _ = serve(&server, tcp, id).await;
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
    /// The most connections that were open at once since start or `reset_peak`.
    pub fn peak_connections(&self) -> usize {
        self.shared.lock().peak_open
    }

    /// Starts counting `peak_connections` afresh from what is open now.
    pub fn reset_peak(&self) {
        self.shared
            .update(|r| r.peak_open = r.connections - r.closed_connections);
    }

    pub fn closed_connections(&self) -> usize {
        self.shared.lock().closed_connections
    }

    /// How many DATA commands got 354.
    pub fn data_commands(&self) -> usize {
        self.shared.lock().data_commands
    }

    /// How many BDAT commands were received (every chunk counts).
    pub fn bdat_commands(&self) -> usize {
        self.shared.lock().bdat_commands
    }

    /// Every read from a client, in order: (connection number from 1, the bytes
    /// that one read returned). Shows which commands arrived together.
    pub fn reads(&self) -> Vec<(usize, Vec<u8>)> {
        self.shared.lock().reads.clone()
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

mod conn;
mod dialogue;
use conn::tls_acceptor;
use dialogue::serve;
