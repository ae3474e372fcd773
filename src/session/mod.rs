//! The client side of postern: one `Session` per connection, the SMTP state
//! machine fed by its `Connection`.
//!
//! Input is one phase at a time (`Phase`): command lines (framed by
//! `smtp::line`, parsed by `smtp::command`), the rest of an over-long line
//! being skipped, a SASL continuation line, the message body (`smtp::data`),
//! or the octets of a BDAT chunk (`smtp::bdat`).
//! Each verb has its handler in a file of its own; the reply queue, resolved
//! and written out, is in `replies`.
//! Everything toward the upstream goes through `relay::Relay`.

mod auth;
mod bdat;
mod data;
mod ehlo;
mod mail;
mod misc;
mod rcpt;
mod record;
mod replies;
mod shared;
mod starttls;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::auth::User;
use crate::config::{AuthMode, TlsMode};
use crate::connection::{Connection, Handshake, Input};
use crate::net::BoxIo;
use crate::refusal::Refusal;
use crate::relay::{Queue, Relay, Route, Slot};
use crate::secret::SecretString;
use crate::smtp::command::{self, Command, MailFrom};
use crate::smtp::line::{self, Scan};
use crate::smtp::reply::Reply;
pub use crate::state::{ListenerInfo, Policy, Shared};
use crate::upstream::Upstream;
use shared::UserSlot;

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;
pub use crate::connection::HANDSHAKE_TIMEOUT;
/// Failed AUTH attempts in one session before it is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;
/// Refused commands in one session before it is closed.
pub const MAX_ERRORS: u32 = 20;

/// One input line, taken out of the read buffer.
enum LineInput {
    Command(Result<Command, command::ParseError>),
    /// A response in an open SASL exchange, as text (wiped on drop).
    Sasl(auth::Sasl, SecretString),
}

/// What the session does after a command.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    /// Upgrade the connection after writing the 220.
    StartTls,
    /// Write the queued replies now (the 354 before the body).
    Flush,
    /// Write what is queued and close.
    Close,
}

/// What the next input is.
enum Phase {
    /// Command lines.
    Command,
    /// The rest of an over-long line, up to its LF, is dropped.
    Discard,
    /// An open SASL exchange: the next line is a response, not a command.
    Sasl(auth::Sasl),
    /// The message body, up to `CRLF.CRLF`.
    Data(Box<data::Body>),
    /// The octets of a BDAT chunk.
    Chunk(Box<bdat::Chunk>),
}

/// A mail transaction in progress.
struct Txn {
    /// postern's message id (the outbox file's name too).
    id: String,
    /// When MAIL came, for `total_ms`.
    started: tokio::time::Instant,
    upstream: Arc<Upstream>,
    route: Route,
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
    /// Fallback: RCPTs the provider put off, for the spool.
    spool_rcpts: Vec<String>,
    /// The DSN parameters of the RCPTs passed on that had any, for the spool.
    rcpt_dsn: Vec<(String, crate::smtp::command::RcptParams)>,
    max_size: u64,
    /// `max_size` is a fallback upstream's (smaller) cap: over it is 451, not 552.
    size_capped_by_fallback: bool,
    max_recipients: u32,
    /// With `[cluster]`: the first RCPT's unit of `recipients_per_hour`,
    /// taken by MAIL's round trip (given back when dropped unused).
    rcpt_ahead: Option<crate::cluster::Taken>,
}

/// One client connection.
pub struct Session {
    shared: Arc<Shared>,
    /// The policy this session started with; kept to its end.
    policy: Arc<Policy>,
    listener: ListenerInfo,
    peer: SocketAddr,
    conn: Connection,
    replies: Queue,
    phase: Phase,
    /// EHLO/HELO name, and whether it was EHLO.
    helo: Option<(String, bool)>,
    /// Authenticated by AUTH.
    user: Option<Arc<User>>,
    /// This connection counted against its user's `max_connections_per_user`:
    /// the user, and the local count or (with `[cluster]`) the shared lease.
    user_slot: Option<(Arc<str>, UserSlot)>,
    auth_failures: u32,
    errors: u32,
    txn: Option<Txn>,
    /// MAIL ahead: the provider refused the sender answered 250 at once; this
    /// is what its RCPTs hear until the next MAIL or RSET (`relay`).
    refused_sender: Option<Reply>,
    /// A message in BDAT chunks, between chunks (its `Txn` is in its body).
    chunked: Option<bdat::Chunked>,
    relay: Relay,
}

impl Session {
    /// Serves one accepted connection to its end, over any byte stream.
    pub async fn serve(
        shared: Arc<Shared>,
        listener: ListenerInfo,
        stream: BoxIo,
        peer: SocketAddr,
    ) {
        let policy = shared.policy();
        let conn = Connection::new(
            stream,
            policy.config.limits.idle_timeout,
            shared.shutdown.clone(),
        );
        let mut s = Session {
            shared,
            policy,
            listener,
            peer,
            conn,
            replies: Queue::new(),
            phase: Phase::Command,
            helo: None,
            user: None,
            user_slot: None,
            auth_failures: 0,
            errors: 0,
            txn: None,
            refused_sender: None,
            chunked: None,
            relay: Relay::default(),
        };
        match s.run().await {
            Ok(()) => tracing::debug!("connection closed"),
            Err(e) => tracing::debug!(error = %e, "connection ended"),
        }
        s.end();
    }

    async fn run(&mut self) -> std::io::Result<()> {
        if self.listener.tls == TlsMode::Implicit && !Box::pin(self.upgrade_tls()).await {
            return Ok(());
        }
        let greeting = format!("{} ESMTP postern ready", self.policy.config.server.hostname);
        self.push(Reply::plain(220, greeting));
        loop {
            match self.process().await {
                Next::Continue => {}
                Next::Flush => {
                    self.write_out().await?;
                    continue;
                }
                Next::Close => {
                    Box::pin(self.drain()).await;
                    self.write_out().await?;
                    self.conn.close().await;
                    return Ok(());
                }
                Next::StartTls => {
                    Box::pin(self.drain()).await;
                    self.write_out().await?;
                    if !Box::pin(self.upgrade_tls()).await {
                        return Ok(());
                    }
                    continue;
                }
            }
            // Input exhausted: answer everything, then wait for more.
            let in_data = matches!(self.phase, Phase::Data(_) | Phase::Chunk(_));
            if !in_data {
                Box::pin(self.drain()).await;
                self.write_out().await?;
                self.release_idle_upstream();
            } else if matches!(self.phase, Phase::Chunk(_))
                && !self.replies.is_empty()
                && !Relay::pending(&self.replies)
            {
                // Inside a chunk: what is answered already goes out before
                // waiting for the rest of its octets.
                self.write_out().await?;
            }
            // A shutdown interrupts only an idle session: a transaction in
            // flight may finish, bounded by the server's grace deadline.
            let interruptible = !in_data && self.txn.is_none() && self.chunked.is_none();
            let closing = match self.conn.read_more(interruptible, in_data).await? {
                Input::More => continue,
                Input::Eof => None,
                Input::IdleTimeout => Some(Refusal::IdleTimeout),
                Input::Shutdown => Some(Refusal::ShuttingDown),
            };
            let said = closing.as_ref().map(Refusal::reply);
            self.abort_chunked(said.as_ref());
            if let Phase::Data(body) = std::mem::replace(&mut self.phase, Phase::Command) {
                let body = *body;
                self.record_abandoned(&body.txn, said.as_ref());
                self.relay.abort(body.sink);
            }
            if let Some(r) = closing {
                self.push(r.reply());
                Box::pin(self.drain()).await;
                self.encode_replies();
                self.conn.flush_briefly().await;
            }
            self.conn.close().await;
            return Ok(());
        }
    }

    /// Handles every complete input unit in the buffer. Stops early for
    /// STARTTLS, the 354 and close.
    async fn process(&mut self) -> Next {
        loop {
            let next = match &self.phase {
                Phase::Data(_) => match Box::pin(self.body_input()).await {
                    Some(next) => next,
                    None => return Next::Continue,
                },
                Phase::Chunk(_) => match Box::pin(self.chunk_input()).await {
                    Some(next) => next,
                    None => return Next::Continue,
                },
                Phase::Discard => {
                    let (n, done) = line::skip_to_lf(&self.conn.rbuf);
                    self.conn.rbuf.drain(..n);
                    if !done {
                        return Next::Continue;
                    }
                    self.phase = Phase::Command;
                    continue;
                }
                Phase::Command | Phase::Sasl(_) => match self.line().await {
                    Some(next) => next,
                    None => return Next::Continue,
                },
            };
            if next != Next::Continue {
                return next;
            }
        }
    }

    /// Takes one line in the command or SASL phase. `None`: no whole line buffered.
    async fn line(&mut self) -> Option<Next> {
        let in_sasl = matches!(self.phase, Phase::Sasl(_));
        let max = if in_sasl {
            crate::smtp::sasl::MAX_SASL_LINE
        } else {
            MAX_COMMAND_LINE
        };
        let next = match line::scan(&self.conn.rbuf, max) {
            Scan::Incomplete => return None,
            Scan::TooLong => {
                // Drop what was scanned; the rest of the line goes at the next LF.
                self.conn.rbuf.drain(..max);
                match std::mem::replace(&mut self.phase, Phase::Discard) {
                    Phase::Sasl(state) => {
                        self.push(Refusal::SaslLineTooLong.reply());
                        self.auth_failed(state.mechanism())
                    }
                    _ => self.refuse(Refusal::LineTooLong),
                }
            }
            Scan::BareLf { consumed } => {
                self.conn.rbuf.drain(..consumed);
                self.phase = Phase::Command;
                self.refuse(Refusal::BareLf)
            }
            Scan::Line { len, consumed } => {
                // Parsed (into owned values) before the line leaves `rbuf`, so
                // it is not copied; the handler may then change `rbuf`
                // (STARTTLS empties it).
                let line = &self.conn.rbuf[..len];
                let input = match std::mem::replace(&mut self.phase, Phase::Command) {
                    Phase::Sasl(state) => LineInput::Sasl(
                        state,
                        SecretString::new(String::from_utf8_lossy(line).into_owned()),
                    ),
                    _ => LineInput::Command(command::parse(line)),
                };
                // A SASL response or an AUTH with an initial response carries
                // the password: its bytes do not stay behind in `rbuf`.
                if matches!(
                    input,
                    LineInput::Sasl(..)
                        | LineInput::Command(Ok(Command::Auth {
                            initial: Some(_),
                            ..
                        }))
                ) {
                    crate::secret::wipe(&mut self.conn.rbuf[..consumed]);
                }
                self.conn.rbuf.drain(..consumed);
                match input {
                    LineInput::Sasl(state, text) => self.sasl_line(state, text).await,
                    LineInput::Command(parsed) => self.command(parsed).await,
                }
            }
        };
        Some(next)
    }

    /// Dispatches one parsed command line to its verb's handler.
    async fn command(&mut self, parsed: Result<Command, command::ParseError>) -> Next {
        let cmd = match parsed {
            Ok(c) => c,
            Err(e @ command::ParseError::BadChunk(_)) => {
                // Where the chunk ends is unknown: its octets must not be read
                // as commands.
                self.push(Refusal::Syntax(e.reply()).reply());
                return Next::Close;
            }
            Err(e) => return self.refuse(Refusal::Syntax(e.reply())),
        };
        if self.chunked.is_some() {
            match &cmd {
                Command::Bdat { .. }
                | Command::Noop
                | Command::Help
                | Command::Vrfy
                | Command::Quit => {}
                Command::Rset | Command::Ehlo(_) | Command::Helo(_) => self.abort_chunked(None),
                Command::Data => return self.refuse(Refusal::DataAfterBdat),
                _ => return self.refuse(Refusal::BdatInProgress),
            }
        }
        if self.conn.shutting_down() && self.txn.is_none() && self.chunked.is_none() {
            self.push(Refusal::ShuttingDown.reply());
            return Next::Close;
        }
        match cmd {
            Command::Ehlo(name) => self.ehlo(name, true),
            Command::Helo(name) => self.ehlo(name, false),
            Command::StartTls => self.starttls(),
            // The verbs that wait are boxed, here and at the other awaits of
            // `run` that go deep (`drain`, `upgrade_tls`, `body_input`): a
            // future's size is that of its largest await, and the session's
            // future is what an idle connection holds for as long as it is
            // open (9 KiB inline, before; `scripts/bench.sh` measures it).
            Command::Auth { mechanism, initial } => Box::pin(self.auth(&mechanism, initial)).await,
            Command::Mail(mail) => Box::pin(self.mail(mail)).await,
            Command::Rcpt(rcpt) => Box::pin(self.rcpt(rcpt)).await,
            Command::Data => Box::pin(self.data()).await,
            Command::Bdat { size, last } => Box::pin(self.bdat(size, last)).await,
            Command::Rset => self.rset(),
            Command::Noop => self.noop(),
            Command::Help => self.help(),
            Command::Vrfy => self.vrfy(),
            Command::Quit => self.quit(),
        }
    }

    /// Answers a refused command and counts it; too many close the session.
    fn refuse(&mut self, r: Refusal) -> Next {
        self.push(r.reply());
        self.count_error()
    }

    /// Answers a refusal that is not the client's fault (no error counted),
    /// counting the limit it hit, if any.
    fn decline(&mut self, r: Refusal) -> Next {
        self.count_limit(&r);
        self.push(r.reply());
        Next::Continue
    }

    /// Counts the limit `r` hit, if it is a limit hit, with its user and upstream.
    fn count_limit(&self, r: &Refusal) {
        use crate::metrics::{NONE, SERVER_LIMITS};
        let Some(limit) = r.limit() else { return };
        let user: Arc<str> = if SERVER_LIMITS.contains(&limit) {
            Arc::from(NONE)
        } else {
            r.user().map_or_else(|| self.user_label(), Arc::from)
        };
        self.shared
            .metrics
            .limit_hit(limit, &user, r.upstream().unwrap_or(NONE));
    }

    /// Counts a refused command; too many close the session.
    fn count_error(&mut self) -> Next {
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.push(Refusal::TooManyErrors.reply());
            return Next::Close;
        }
        Next::Continue
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

    /// The user label for metrics: a configured name, or "-".
    fn user_label(&self) -> Arc<str> {
        self.sender_identity()
            .map_or_else(|| Arc::from("-"), |u| u.name.clone())
    }

    /// Takes the connection through a TLS handshake. False when it failed (connection closed).
    async fn upgrade_tls(&mut self) -> bool {
        let Some(acceptor) = self.shared.tls.clone() else {
            return false;
        };
        let result = match self.conn.start_tls(&acceptor).await {
            Handshake::Done => "ok",
            Handshake::Failed(e) => {
                tracing::info!(error = %e, "TLS handshake failed");
                "error"
            }
            Handshake::TimedOut => "timeout",
            Handshake::NotPossible => return false,
        };
        self.shared
            .metrics
            .tls_handshakes
            .with_label_values(&[&self.listener.name, result])
            .inc();
        if let Some(version) = self.conn.tls_version() {
            self.shared
                .metrics
                .tls_versions
                .with_label_values(&[&self.listener.name, version])
                .inc();
        }
        result == "ok"
    }

    /// Gives the upstream connection back to its pool while no transaction is
    /// open, so a quiet client does not hold one of the provider's connections.
    fn release_idle_upstream(&mut self) {
        if self.txn.is_none() && !self.in_chunks() && !Relay::pending(&self.replies) {
            self.relay.release();
        }
    }

    /// Ends the session's use of its upstream connection: back to the pool when
    /// clean, dropped (closing it, which abandons any transaction) otherwise.
    fn end(&mut self) {
        // A provider connection with a transaction open on it is closed, never
        // given back to the pool in the middle of it.
        let mut open = self.in_chunks() || matches!(self.phase, Phase::Data(_));
        if let Some(txn) = self.txn.take() {
            self.record_abandoned(&txn, None);
            open = true;
        }
        if let Phase::Data(body) = &self.phase {
            self.record_abandoned(&body.txn, None);
        }
        self.abort_chunked(None);
        if !open {
            self.release_idle_upstream();
        }
        self.relay.drop_connection();
    }
}
