//! The upstream half of a session: where a transaction's mail goes (`Route`),
//! the connection kept across the session's transactions, the upstream
//! replies still to be read, and the message body's way out (`body`); the
//! command lines and the replies' wording are in `wire`.
//!
//! Upstream commands are queued, not awaited: the session's reply queue holds
//! a `Slot::Upstream` for each, and `resolve` sends what is queued in one write
//! and reads the replies in order (RFC 2920), so a pipelined client's MAIL and
//! RCPTs reach the provider in one write too. A kept connection that the
//! provider closed while idle fails before its first reply; then nothing of the
//! batch was taken, and the pool replaces the connection and the batch goes
//! again, without the client noticing.
//!
//! Toward a provider that offers CHUNKING and PIPELINING, the body goes in BDAT
//! chunks (`body`). A transaction whose one recipient is still unanswered when
//! DATA comes (a pipelining client's MAIL, RCPT, DATA) is *deferred*: its MAIL
//! and RCPT are answered 250 at once, stay queued, and go out in the same write
//! as the body's first chunk; the provider's verdict on them comes back in the
//! end-of-data reply. So a message costs one round trip to the provider.
//!
//! Toward a provider that offers PIPELINING, MAIL is answered at once (*MAIL
//! ahead*): its command stays queued and goes out with the first RCPT (or, in a
//! deferred transaction, with the body), whose reply carries the provider's
//! refusal of MAIL if there was one (same code, enhanced code and text). RCPT
//! replies stay the provider's: 250 only for a recipient it accepted after
//! accepting MAIL. Toward one without CHUNKING, a client that waits for each
//! reply gets its 354 at once when a recipient was accepted (*DATA ahead*):
//! DATA goes out then and its 354 is awaited only before the body's first byte
//! leaves (`Client::send_data_ahead`), so that round trip runs while the
//! client uploads the body. A device that does not pipeline so pays two
//! provider round trips a message with BDAT (RCPT, `BDAT n LAST`), not three,
//! and three with DATA, not four.

pub mod body;
mod resolve;
mod wire;

use std::collections::VecDeque;
use std::sync::Arc;

pub use body::Sink;
use wire::sender_ok;
pub use wire::{from_upstream, mail_command, rcpt_command, recipient_queued};

use crate::config::Delivery;
use crate::refusal::Refusal;
use crate::smtp::command::{MailFrom, RcptTo};
use crate::smtp::reply::Reply;
use crate::spool::Spool;
use crate::upstream::client::Client;
use crate::upstream::outbox::Outbox;
use crate::upstream::pool::Pool;
use crate::upstream::{Capabilities, Target, Upstream};

/// Where one transaction's mail goes, chosen at MAIL from the user's upstream.
#[derive(Clone)]
pub enum Route {
    /// An SMTP provider: commands are relayed, the client hears its verdicts.
    Provider(Arc<Pool>),
    /// The outbox directory: postern answers, and stores the message.
    Outbox(Outbox),
    /// `delivery = "spool"`: postern answers, the spool keeps the message and
    /// its workers deliver it to the upstream named here. The flag: spool
    /// mode, where the message should go at once (see `spool::hold`), not a
    /// fallback from a provider that could not take it now.
    Spool(Arc<Spool>, Arc<str>, bool),
    /// `delivery = "fallback"`: relayed as `Provider`; what the provider cannot
    /// take now (set-up failure, pool wait, a lost connection, a timeout, any
    /// 4xx) goes to the spool and the client hears 250.
    Fallback(Arc<Pool>, Arc<Spool>),
}

impl Route {
    /// The route of a transaction from `sender` (after `rewrite_sender`) to
    /// `upstream`; `spool` is the policy's spool. With `[[upstream.account]]`,
    /// `None` when the sender has no account (refused at MAIL, before anything
    /// reaches the provider); the spool's workers choose the account's pool
    /// by the same sender.
    pub fn for_sender(
        upstream: &Upstream,
        sender: &str,
        spool: Option<&Arc<Spool>>,
    ) -> Option<Route> {
        let pool = match &upstream.target {
            Target::Outbox(outbox) => return Some(Route::Outbox(outbox.clone())),
            Target::Smtp(pool) if upstream.has_accounts() => upstream.account_pool(sender)?.clone(),
            Target::Smtp(pool) => pool.clone(),
        };
        Some(match (upstream.delivery, spool) {
            (Delivery::Spool, Some(s)) => Route::Spool(s.clone(), upstream.name.clone(), true),
            (Delivery::Fallback, Some(s)) => Route::Fallback(pool, s.clone()),
            _ => Route::Provider(pool),
        })
    }

    /// Whether postern answers MAIL and RCPT itself (no provider in the dialogue).
    pub fn is_local(&self) -> bool {
        matches!(self, Route::Outbox(_) | Route::Spool(..))
    }

    /// For a fallback transaction the provider cannot take: the spool route.
    pub fn spool_instead(&self) -> Option<Route> {
        match self {
            Route::Fallback(pool, spool) => {
                Some(Route::Spool(spool.clone(), pool.dial().name.clone(), false))
            }
            _ => None,
        }
    }
}

/// A reply in the client's queue, in the order of the commands.
pub enum Slot {
    Ready(Reply),
    /// Comes from the upstream: read it when resolving.
    Upstream(Expect),
}

/// Which upstream reply a slot waits for.
pub enum Expect {
    Mail,
    Rcpt(String),
    Data,
    /// RSET after an abandoned transaction: read and dropped.
    Silent,
    /// MAIL answered at once (MAIL ahead): its reply is read and kept, not sent.
    MailAhead,
}

/// The session's reply queue.
pub type Queue = VecDeque<Slot>;

/// What resolving the queue learned about the open transaction.
#[derive(Default)]
pub struct Resolution {
    /// The upstream refused MAIL, or the connection was lost: the transaction is over.
    pub ended: bool,
    /// Fallback: the provider cannot take this transaction now; it goes to the spool.
    pub to_spool: bool,
    /// Fallback: recipients the provider put off (4xx): they go to the spool.
    pub deferred: Vec<String>,
    /// Recipients the upstream accepted.
    pub accepted: Vec<String>,
    /// The upstream's reply to DATA, when one was read.
    pub data: Option<Reply>,
    /// The upstream's refusal of MAIL, when that ended the transaction.
    pub mail_refused: Option<Reply>,
    /// MAIL ahead: the client's reply to that refusal, which its RCPTs got.
    pub sender_refused: Option<Reply>,
}

/// What the session should do after queueing a command upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Nothing now (pipelined, or answered locally).
    Continue,
    /// The upstream has no PIPELINING: resolve the queue before the next command.
    Resolve,
    /// Fallback: the provider could not be set up; the transaction goes to the spool.
    SpoolOnly,
}

/// The upstream half of one session.
#[derive(Default)]
pub struct Relay {
    /// The provider connection kept across this session's transactions, with its pool.
    kept: Option<(Arc<Pool>, Client)>,
    /// The open transaction falls back to the spool (`delivery = "fallback"`).
    fallback: bool,
    /// A deferred transaction's commands, answered at once and queued upstream
    /// with the body; their replies are read at end-of-data.
    deferred: Vec<Expect>,
    /// MAIL ahead: the open transaction's MAIL is queued on the kept
    /// connection, answered, and its reply is read first at the next `resolve`.
    mail_owed: bool,
}

impl Relay {
    /// MAIL on `route`: queues its reply (or its upstream command).
    ///
    /// # Errors
    /// The refusal when the upstream cannot be set up or lacks SMTPUTF8.
    pub async fn mail(
        &mut self,
        route: &Route,
        sender: &str,
        mail: &MailFrom,
        queue: &mut Queue,
        user: &str,
    ) -> Result<After, Refusal> {
        self.fallback = matches!(route, Route::Fallback(..));
        let pool = match route {
            Route::Fallback(pool, _) => pool,
            Route::Outbox(_) => {
                queue.push_back(Slot::Ready(Reply::new(250, "2.1.0", "Sender OK")));
                return Ok(After::Continue);
            }
            Route::Spool(spool, ..) => {
                if spool.is_full(mail.params.size.unwrap_or(0)) {
                    return Err(Refusal::SpoolFull);
                }
                queue.push_back(Slot::Ready(Reply::new(250, "2.1.0", "Sender OK")));
                return Ok(After::Continue);
            }
            Route::Provider(pool) => pool,
        };
        // Answer what is queued before this (it may need the connection); no
        // transaction is open, so what it resolves concerns none.
        let _ = self.resolve(queue, user).await;
        let caps = match self.open(pool, sender, user).await {
            Ok(caps) => caps,
            Err(r) if self.fallback => {
                // The device hears 250 (spooled), but a limit was hit all the same.
                if let Some(limit) = r.limit() {
                    pool.dial()
                        .metrics
                        .limit_hit(limit, user, &pool.dial().name);
                }
                tracing::info!(upstream = %pool.dial().name, reason = %r, "provider unavailable; the message goes to the spool");
                queue.push_back(Slot::Ready(Reply::new(250, "2.1.0", "Sender OK")));
                return Ok(After::SpoolOnly);
            }
            Err(r) => return Err(r),
        };
        if mail.params.smtputf8 && !caps.smtputf8 {
            return Err(Refusal::UpstreamNoSmtputf8(pool.dial().name.clone()));
        }
        // Failed over to a fallback that cannot take a message of the declared
        // size: the upstream itself is unavailable for this one (451, the
        // device tries again later).
        if let Some(took) = self.failed_over(pool)
            && let (Some(size), Some(max)) = (mail.params.size, took.max_message_size())
            && size > max
        {
            tracing::info!(upstream = %pool.dial().name, fallback = %took.dial().name, size, max, "the fallback upstream cannot take a message this large");
            if self.fallback {
                // `delivery = "fallback"`: the spool keeps it for the upstream.
                queue.push_back(Slot::Ready(sender_ok()));
                return Ok(After::SpoolOnly);
            }
            return Err(Refusal::UpstreamSetup {
                upstream: pool.dial().name.clone(),
                failure: crate::refusal::SetupFailure::Unavailable,
            });
        }
        let line = mail_command(sender, mail, &caps);
        if caps.pipelining
            && let Some((_, c)) = self.kept.as_mut()
        {
            c.queue(&line);
            self.mail_owed = true;
            queue.push_back(Slot::Ready(sender_ok()));
            return Ok(After::Continue);
        }
        Ok(self.send(&line, Expect::Mail, queue))
    }

    /// RCPT on `route`. `Ok(true)` when the recipient is accepted at once (outbox).
    pub fn rcpt(&mut self, route: &Route, rcpt: &RcptTo, queue: &mut Queue) -> (bool, After) {
        if route.is_local() {
            queue.push_back(Slot::Ready(Reply::new(250, "2.1.5", "Recipient OK")));
            return (true, After::Continue);
        }
        let Some((_, client)) = self.kept.as_mut() else {
            queue.push_back(Slot::Ready(Refusal::UpstreamGone.reply()));
            return (false, After::Continue);
        };
        let line = rcpt_command(rcpt, client.caps());
        (
            false,
            self.send(&line, Expect::Rcpt(rcpt.path.clone()), queue),
        )
    }

    /// DATA toward the provider: queues the command. `false` when there is no
    /// connection any more (the transaction is lost).
    pub fn data(&mut self, queue: &mut Queue) -> bool {
        match self.kept.as_mut() {
            Some((_, c)) => {
                c.queue("DATA");
                queue.push_back(Slot::Upstream(Expect::Data));
                true
            }
            None => false,
        }
    }

    /// DATA ahead: sends DATA now, ahead of the body, whose first byte waits for
    /// its 354. `false` when the connection is gone (the transaction is lost).
    pub async fn data_ahead(&mut self) -> bool {
        let Some((_, c)) = self.kept.as_mut() else {
            return false;
        };
        if let Err(e) = c.send_data_ahead().await {
            tracing::warn!(upstream = %c.name(), error = %e, "upstream failed at DATA");
            self.drop_connection();
            return false;
        }
        true
    }

    /// Whether the body goes in BDAT chunks: the kept connection's provider
    /// offers CHUNKING.
    pub fn chunking(&self) -> bool {
        self.kept.as_ref().is_some_and(|(_, c)| c.caps().chunking)
    }

    /// Whether the transaction can be deferred at DATA: its one recipient is still
    /// unanswered, and the provider takes MAIL, RCPT and BDAT in one flight.
    pub fn can_defer(&self, queue: &Queue) -> bool {
        let pipelined = self
            .kept
            .as_ref()
            .is_some_and(|(_, c)| c.caps().chunking && c.caps().pipelining);
        pipelined
            && queue
                .iter()
                .any(|s| matches!(s, Slot::Upstream(Expect::Rcpt(_))))
    }

    /// Defers the transaction: every upstream reply still pending is answered at
    /// once (250 to MAIL and RCPT), its command stays queued upstream, and the
    /// body starts in BDAT chunks behind them.
    pub fn defer(&mut self, queue: &mut Queue) {
        let Some((_, client)) = self.kept.as_mut() else {
            return;
        };
        let mut labels = Vec::new();
        if std::mem::take(&mut self.mail_owed) {
            // MAIL ahead: queued first, so its reply comes first.
            labels.push("MAIL");
            self.deferred.push(Expect::MailAhead);
        }
        let mut answered = VecDeque::with_capacity(queue.len());
        for slot in queue.drain(..) {
            let expect = match slot {
                Slot::Ready(r) => {
                    answered.push_back(Slot::Ready(r));
                    continue;
                }
                Slot::Upstream(e) => e,
            };
            match &expect {
                Expect::Mail => {
                    labels.push("MAIL");
                    answered.push_back(Slot::Ready(Reply::new(250, "2.1.0", "Sender OK")));
                }
                Expect::Rcpt(_) => {
                    labels.push("RCPT");
                    answered.push_back(Slot::Ready(Reply::new(250, "2.1.5", "Recipient OK")));
                }
                Expect::Silent => labels.push("RSET"),
                // DATA is never queued toward a CHUNKING provider, nor MAIL ahead.
                Expect::Data => labels.push("DATA"),
                Expect::MailAhead => labels.push("MAIL"),
            }
            self.deferred.push(expect);
        }
        *queue = answered;
        client.begin_chunks(labels);
    }

    /// Whether a deferred transaction's provider verdicts are still to come
    /// (its recipients are neither accepted nor refused yet).
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Starts the body in BDAT chunks after MAIL and the RCPTs were answered.
    pub fn begin_chunks(&mut self) -> bool {
        match self.kept.as_mut() {
            Some((_, c)) => {
                c.begin_chunks(Vec::new());
                true
            }
            None => false,
        }
    }

    /// RSET of an abandoned transaction, read and dropped.
    pub fn rset(&mut self, queue: &mut Queue) {
        if let Some((_, c)) = self.kept.as_mut() {
            c.queue("RSET");
            queue.push_back(Slot::Upstream(Expect::Silent));
        }
    }

    /// Queues a command on the kept connection and its slot.
    fn send(&mut self, line: &str, expect: Expect, queue: &mut Queue) -> After {
        let Some((_, c)) = self.kept.as_mut() else {
            return After::Continue;
        };
        c.queue(line);
        queue.push_back(Slot::Upstream(expect));
        if c.caps().pipelining {
            After::Continue
        } else {
            After::Resolve
        }
    }

    /// Makes sure a fresh connection of `pool` (or, when it cannot be set up,
    /// of one of its `fallback` upstreams) is kept; returns its capabilities.
    async fn open(
        &mut self,
        pool: &Arc<Pool>,
        sender: &str,
        user: &str,
    ) -> Result<Capabilities, Refusal> {
        if let Some((p, c)) = &self.kept
            && Arc::ptr_eq(p, pool)
            && !c.is_stale()
        {
            return Ok(c.caps().clone());
        }
        if let Some((p, old)) = self.kept.take() {
            if std::mem::take(&mut self.mail_owed) {
                // A MAIL queued and not sent: not for the pool.
                drop(old);
            } else {
                p.checkin(old);
            }
        }
        match pool.checkout_failover(sender, Some(user)).await {
            Ok((took, c)) => {
                let caps = c.caps().clone();
                self.kept = Some((took, c));
                Ok(caps)
            }
            Err(e) => {
                let name = &pool.dial().name;
                tracing::warn!(upstream = %name, error = %e, "upstream connection failed");
                Err(e.setup_refusal(name))
            }
        }
    }

    /// The fallback upstream's pool when the kept connection is not `pool`'s
    /// (the transaction failed over); its own caps then hold.
    pub fn failed_over(&self, pool: &Arc<Pool>) -> Option<&Arc<Pool>> {
        self.kept
            .as_ref()
            .map(|(p, _)| p)
            .filter(|p| !Arc::ptr_eq(p, pool))
    }

    /// Whether upstream replies are still to be read.
    pub fn pending(queue: &Queue) -> bool {
        queue.iter().any(|s| matches!(s, Slot::Upstream(_)))
    }

    /// Closes the kept connection, abandoning whatever it was doing.
    pub fn drop_connection(&mut self) {
        self.kept = None;
        self.deferred.clear();
        self.mail_owed = false;
    }

    /// Gives the connection back to its pool (the session has no transaction
    /// open and no reply pending), so a quiet client holds no provider slot.
    pub fn release(&mut self) {
        if self.mail_owed {
            // Never happens (RSET resolves it first); a MAIL left queued must
            // not reach the pool.
            self.drop_connection();
        }
        if let Some((pool, c)) = self.kept.take() {
            pool.checkin(c);
        }
    }
}
