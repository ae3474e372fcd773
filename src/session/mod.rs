//! The client side of postern: one `Session` per connection, driving the SMTP
//! state machine over a `Stream`.
//!
//! Input is framed by the bounded line reader (`smtp::line`) and parsed by
//! `smtp::command`; each verb has its handler in a file of its own (`ehlo`,
//! `auth`, `mail`, `data`). Replies are queued in order as `Slot`s: a reply that
//! postern decides itself is ready at once, a reply that comes from the upstream
//! (MAIL, RCPT, DATA when relaying) is read when the queue is drained. The queue
//! is drained and written out when the client's input is exhausted, before
//! waiting for more (RFC 2920 §3.1), so pipelined commands are answered in one
//! write, in order, and their upstream counterparts go out in one write too.

mod auth;
mod data;
mod ehlo;
mod mail;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::auth::{User, Users};
use crate::config::{AuthMode, Config, TlsMode};
use crate::metrics::Metrics;
use crate::net::Stream;
use crate::smtp::command::{self, Command, MailFrom};
use crate::smtp::line::{self, Scan};
use crate::smtp::reply::Reply;
use crate::upstream::Upstream;
use crate::upstream::client::Client;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
/// TLS handshakes (STARTTLS and implicit) must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Failed AUTH attempts in one session before it is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;
/// Refused commands in one session before it is closed.
pub const MAX_ERRORS: u32 = 20;
/// How much the client may send beyond what postern has read before it stops reading.
const READ_CHUNK: usize = 64 * 1024;

/// What a configuration reload replaces: the config itself, the users and the
/// upstreams (with their credentials). A session keeps the `Policy` it started
/// with to its end; new sessions get the newest.
pub struct Policy {
    pub config: Arc<Config>,
    pub users: Arc<Users>,
    pub upstreams: Vec<Arc<Upstream>>,
}

/// Everything sessions share.
pub struct Shared {
    /// The current policy; swapped whole by a reload.
    pub policy: RwLock<Arc<Policy>>,
    pub metrics: Metrics,
    /// Connection counts and AUTH failures; kept across reloads.
    pub limiters: crate::limits::Limiters,
    pub tls: Option<TlsAcceptor>,
    /// Turns true when the server begins to stop.
    pub shutdown: watch::Receiver<bool>,
}

/// What a session knows of its listener.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub tls: TlsMode,
    pub auth: AuthMode,
    pub plaintext_auth: bool,
    /// With `proxy_protocol = true`: the sources allowed to send the PROXY header.
    pub proxy_from: Option<Arc<Vec<ipnet::IpNet>>>,
}

/// What the dispatcher does after a command.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    /// Upgrade the connection after writing the 220.
    StartTls,
    /// Receive the message body (the 354 is queued).
    Data,
    /// Write what is queued and close.
    Close,
}

/// A reply in the client's queue.
enum Slot {
    Ready(Reply),
    /// Comes from the upstream: read it when draining.
    Upstream(Expect),
}

/// Which upstream reply a slot waits for.
enum Expect {
    Mail,
    Rcpt(String),
    Data,
    /// RSET after an abandoned transaction: read and dropped.
    Silent,
}

/// An open SASL exchange: the next line is a response, not a command.
enum Sasl {
    Plain,
    LoginUser,
    LoginPass { username: String },
}

impl Sasl {
    fn mechanism(&self) -> &'static str {
        match self {
            Sasl::Plain => "plain",
            Sasl::LoginUser | Sasl::LoginPass { .. } => "login",
        }
    }
}

/// A mail transaction in progress.
struct Txn {
    upstream: Arc<Upstream>,
    /// The sender as the client gave it.
    client_from: String,
    /// The sender sent upstream (after `rewrite_sender`).
    sender: String,
    mail: MailFrom,
    /// RCPT commands received in this transaction, refused ones included.
    rcpt_commands: u32,
    /// RCPTs postern passed on (upstream replies pending or accepted).
    forwarded: u32,
    /// RCPTs the upstream accepted.
    accepted: Vec<String>,
    max_size: u64,
    max_recipients: u32,
}

impl Shared {
    /// The current policy.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs a new policy for sessions that start from now on.
    pub fn set_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.policy.write() {
            Ok(mut p) => *p = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}

/// One client connection.
pub struct Session {
    shared: Arc<Shared>,
    policy: Arc<Policy>,
    listener: ListenerInfo,
    peer: SocketAddr,
    stream: Option<Stream>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    slots: VecDeque<Slot>,
    /// Discarding the rest of an over-long command line.
    discarding: bool,
    /// EHLO/HELO name, and whether it was EHLO.
    helo: Option<(String, bool)>,
    /// Authenticated by AUTH.
    user: Option<Arc<User>>,
    /// This connection counted against its user's `max_connections_per_user`.
    user_slot: Option<crate::limits::CountGuard<Arc<str>>>,
    sasl: Option<Sasl>,
    auth_failures: u32,
    errors: u32,
    txn: Option<Txn>,
    /// The upstream connection, kept across this session's transactions.
    client: Option<Client>,
    /// The outbox file of the message in DATA.
    spool: Option<crate::upstream::outbox::Spool>,
    idle_timeout: Duration,
}

impl Session {
    /// Serves one accepted connection to its end.
    pub async fn serve(
        shared: Arc<Shared>,
        listener: ListenerInfo,
        stream: Stream,
        peer: SocketAddr,
    ) {
        let policy = shared.policy();
        let idle_timeout = policy.config.limits.idle_timeout;
        let mut s = Session {
            shared,
            policy,
            listener,
            peer,
            stream: Some(stream),
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(4096),
            slots: VecDeque::new(),
            discarding: false,
            helo: None,
            user: None,
            user_slot: None,
            sasl: None,
            auth_failures: 0,
            errors: 0,
            txn: None,
            client: None,
            spool: None,
            idle_timeout,
        };
        match s.run().await {
            Ok(()) => tracing::debug!("connection closed"),
            Err(e) => tracing::debug!(error = %e, "connection ended"),
        }
        s.release_upstream().await;
    }

    async fn run(&mut self) -> std::io::Result<()> {
        if self.listener.tls == TlsMode::Implicit && !self.upgrade_tls().await {
            return Ok(());
        }
        let greeting = format!("{} ESMTP postern ready", self.policy.config.server.hostname);
        self.push(Reply::plain(220, greeting));
        loop {
            match self.process_buffered().await? {
                Next::Continue => {}
                Next::Close => {
                    self.drain_slots().await;
                    self.write_out().await?;
                    return self.close().await;
                }
                Next::StartTls => {
                    self.drain_slots().await;
                    self.write_out().await?;
                    if !self.upgrade_tls().await {
                        return Ok(());
                    }
                    continue;
                }
                Next::Data => {
                    self.write_out().await?;
                    if self.receive_data().await? == Next::Close {
                        self.write_out().await?;
                        return self.close().await;
                    }
                    continue;
                }
            }
            // Input exhausted: answer everything, then wait for more.
            self.drain_slots().await;
            self.write_out().await?;
            self.release_idle_upstream();
            if !self.fill(true).await? {
                return self.close().await;
            }
        }
    }

    /// Handles every complete line in the buffer. Stops early for STARTTLS, DATA and close.
    async fn process_buffered(&mut self) -> std::io::Result<Next> {
        loop {
            if self.discarding {
                let (n, done) = line::skip_to_lf(&self.rbuf);
                self.rbuf.drain(..n);
                if !done {
                    return Ok(Next::Continue);
                }
                self.discarding = false;
            }
            let max = if self.sasl.is_some() {
                crate::smtp::sasl::MAX_SASL_LINE
            } else {
                MAX_COMMAND_LINE
            };
            let next = match line::scan(&self.rbuf, max) {
                Scan::Incomplete => return Ok(Next::Continue),
                Scan::TooLong => {
                    // Drop what was scanned; the rest of the line goes at the next LF.
                    self.discarding = true;
                    self.rbuf.drain(..max);
                    match self.sasl.take() {
                        Some(state) => {
                            self.push(Reply::new(
                                500,
                                "5.5.6",
                                "Authentication Exchange line is too long",
                            ));
                            self.auth_failed(state.mechanism())
                        }
                        None => {
                            self.push(Reply::new(500, "5.5.2", "Line too long"));
                            self.count_error()
                        }
                    }
                }
                Scan::BareLf { consumed } => {
                    self.rbuf.drain(..consumed);
                    self.sasl = None;
                    self.push(Reply::new(
                        500,
                        "5.5.2",
                        "Bare LF: lines must end with CRLF",
                    ));
                    self.count_error()
                }
                Scan::Line { len, consumed } => {
                    let line: Vec<u8> = self.rbuf[..len].to_vec();
                    self.rbuf.drain(..consumed);
                    if self.sasl.is_some() {
                        self.sasl_line(&line).await
                    } else {
                        self.command(&line).await
                    }
                }
            };
            if next != Next::Continue {
                return Ok(next);
            }
        }
    }

    /// Dispatches one command line.
    async fn command(&mut self, line: &[u8]) -> Next {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                self.push(e.reply());
                return self.count_error();
            }
        };
        if *self.shared.shutdown.borrow() && self.txn.is_none() {
            self.push(Reply::new(
                421,
                "4.3.0",
                "Server shutting down, try again later",
            ));
            return Next::Close;
        }
        match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial).await,
            Command::Mail(mail) => self.mail(mail).await,
            Command::Rcpt(rcpt) => self.rcpt(rcpt).await,
            Command::Data => self.data().await,
            Command::Rset => {
                self.reset_transaction();
                self.push(Reply::new(250, "2.0.0", "OK"));
                Next::Continue
            }
            Command::Noop => {
                self.push(Reply::new(250, "2.0.0", "OK"));
                Next::Continue
            }
            Command::Help => {
                self.push(Reply::new(
                    214,
                    "2.0.0",
                    "postern relay: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP VRFY QUIT",
                ));
                Next::Continue
            }
            Command::Vrfy => {
                self.push(Reply::new(
                    252,
                    "2.5.2",
                    "Cannot VRFY user, but will accept message and attempt delivery",
                ));
                Next::Continue
            }
            Command::Quit => {
                self.push(Reply::new(221, "2.0.0", "Bye"));
                Next::Close
            }
        }
    }

    /// Counts a refused command; too many close the session.
    fn count_error(&mut self) -> Next {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.push(Reply::new(
                421,
                "4.7.0",
                "Too many errors, closing connection",
            ));
            return Next::Close;
        }
        Next::Continue
    }

    fn push(&mut self, reply: Reply) {
        self.slots.push_back(Slot::Ready(reply));
    }

    /// The user this session sends as: authenticated, or trusted by network on an
    /// `auth = "optional"` listener.
    fn sender_identity(&self) -> Option<Arc<User>> {
        if let Some(u) = &self.user {
            return Some(u.clone());
        }
        if self.listener.auth == AuthMode::Optional {
            return self.policy.users.by_network(self.peer.ip()).cloned();
        }
        None
    }

    /// Counts this connection against `user`'s connection cap (once per session).
    /// `false` when the user already has as many connections as allowed: the
    /// 421 is queued and the session must close.
    fn claim_user_slot(&mut self, user: &User) -> bool {
        if self
            .user_slot
            .as_ref()
            .is_some_and(|s| *s.key() == user.name)
        {
            return true;
        }
        self.user_slot = None;
        let max = user.limits.max_connections_per_user;
        match self
            .shared
            .limiters
            .connections_per_user
            .try_acquire(user.name.clone(), max)
        {
            Some(slot) => {
                self.user_slot = Some(slot);
                true
            }
            None => {
                tracing::info!(user = %user.name, max, "connection limit per user reached");
                self.shared
                    .metrics
                    .limit_hits
                    .with_label_values(&["connections_per_user"])
                    .inc();
                self.push(Reply::new(
                    421,
                    "4.7.0",
                    format!(
                        "Too many connections for user {}, try again later",
                        user.name
                    ),
                ));
                false
            }
        }
    }

    /// Reads more input into the buffer. `Ok(false)` on EOF or a closing timeout/shutdown
    /// (the 421 is already written). A shutdown interrupts the wait only when
    /// `interruptible` and no transaction is open: a message in flight may finish,
    /// bounded by the server's grace deadline.
    async fn fill(&mut self, interruptible: bool) -> std::io::Result<bool> {
        let mut shutdown = self.shared.shutdown.clone();
        let idle = self.idle_timeout;
        let in_txn = !interruptible || self.txn.is_some();
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        let read = async {
            tokio::select! {
                r = timeout(idle, stream.read_buf(&mut self.rbuf)) => Some(r),
                _ = async {
                    if in_txn {
                        // A transaction in progress may finish; the server's grace deadline bounds it.
                        std::future::pending::<()>().await;
                    }
                    let _ = shutdown.wait_for(|s| *s).await;
                } => None,
            }
        };
        match read.await {
            Some(Ok(Ok(0))) => Ok(false),
            Some(Ok(Ok(_))) => Ok(true),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => {
                self.push(Reply::new(421, "4.4.2", "Idle timeout, closing connection"));
                self.flush_close().await;
                Ok(false)
            }
            None => {
                self.push(Reply::new(
                    421,
                    "4.3.0",
                    "Server shutting down, try again later",
                ));
                self.flush_close().await;
                Ok(false)
            }
        }
    }

    /// Writes the queued replies (best effort) before a close postern decided on.
    async fn flush_close(&mut self) {
        self.drain_slots().await;
        let _ = timeout(Duration::from_secs(5), self.write_out()).await;
    }

    /// Writes the encoded replies.
    async fn write_out(&mut self) -> std::io::Result<()> {
        for slot in std::mem::take(&mut self.slots) {
            match slot {
                Slot::Ready(r) => r.encode(&mut self.wbuf),
                // drain_slots resolves these first; never leave a command unanswered.
                Slot::Upstream(_) => {
                    Reply::new(451, "4.3.0", "Internal error").encode(&mut self.wbuf)
                }
            }
        }
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let r = timeout(self.idle_timeout, async {
            stream.write_all(&self.wbuf).await?;
            stream.flush().await
        })
        .await;
        self.wbuf.clear();
        match r {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client not reading",
            )),
        }
    }

    async fn close(&mut self) -> std::io::Result<()> {
        if let Some(mut s) = self.stream.take() {
            let _ = timeout(Duration::from_secs(5), s.shutdown()).await;
        }
        Ok(())
    }

    /// Takes the TCP stream through a TLS handshake. False when it failed (connection closed).
    async fn upgrade_tls(&mut self) -> bool {
        let listener = self.listener.name.clone();
        let (Some(acceptor), Some(Stream::Plain(tcp))) =
            (self.shared.tls.clone(), self.stream.take())
        else {
            return false;
        };
        match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.shared
                    .metrics
                    .tls_handshakes
                    .with_label_values(&[&listener, "ok"])
                    .inc();
                self.stream = Some(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls))));
                true
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "TLS handshake failed");
                self.shared
                    .metrics
                    .tls_handshakes
                    .with_label_values(&[&listener, "error"])
                    .inc();
                false
            }
            Err(_) => {
                self.shared
                    .metrics
                    .tls_handshakes
                    .with_label_values(&[&listener, "timeout"])
                    .inc();
                false
            }
        }
    }

    /// Gives the upstream connection back to its pool while no transaction is
    /// open, so a quiet client does not hold one of the provider's connections.
    fn release_idle_upstream(&mut self) {
        let idle = self.txn.is_none() && !self.slots.iter().any(|s| matches!(s, Slot::Upstream(_)));
        if idle && let Some(c) = self.client.take() {
            c.upstream().clone().checkin(c);
        }
    }

    /// Ends the session's use of its upstream connection: back to the pool when
    /// clean, dropped (closing it, which abandons any transaction) otherwise.
    async fn release_upstream(&mut self) {
        self.release_idle_upstream();
        self.client = None;
    }
}
