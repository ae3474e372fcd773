//! MAIL and RCPT: identity, sender policy, limits, then the upstream. Upstream
//! commands are queued, not awaited, and their replies are read in order when
//! the slot queue is drained (`drain_slots`), so a pipelined client's MAIL and
//! RCPTs reach the upstream in one write (RFC 2920).

use std::sync::Arc;
use std::time::Instant;

use super::{Expect, Next, Session, Slot, Txn};
use crate::config::UpstreamKind;
use crate::policy;
use crate::smtp::command::{Body, MailFrom, RcptTo, Ret};
use crate::smtp::reply::Reply;
use crate::upstream::client::{COMMAND_TIMEOUT, Client};
use crate::upstream::{Capabilities, Upstream, UpstreamError};

impl Session {
    pub(super) async fn mail(&mut self, mail: MailFrom) -> Next {
        if self.helo.is_none() {
            self.push(Reply::new(503, "5.5.1", "Send HELO or EHLO first"));
            return self.count_error();
        }
        if self.txn.is_some() {
            self.push(Reply::new(503, "5.5.1", "Nested MAIL command"));
            return self.count_error();
        }
        let Some(user) = self.sender_identity() else {
            self.push(Reply::new(530, "5.7.0", "Authentication required"));
            return self.count_error();
        };
        if !self.claim_user_slot(&user) {
            return Next::Close;
        }
        if !mail.path.is_ascii() && !mail.params.smtputf8 {
            self.push(Reply::new(
                550,
                "5.6.7",
                "Non-ASCII address needs the SMTPUTF8 parameter",
            ));
            return self.count_error();
        }
        let upstream = self.policy.upstreams[user.upstream].clone();
        let max_size = upstream.effective_max_size(user.limits.max_message_size);
        if mail.params.size.is_some_and(|s| s > max_size) {
            self.push(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
            self.shared
                .metrics
                .limit_hits
                .with_label_values(&["message_size"])
                .inc();
            return Next::Continue;
        }
        if !policy::sender_allowed(
            &user.allowed_senders,
            user.rewrite_sender.is_some(),
            &mail.path,
        ) {
            tracing::info!(user = %user.name, "sender refused by allowed_senders");
            self.shared
                .metrics
                .messages
                .with_label_values(&[&user.name, "sender_refused"])
                .inc();
            self.push(Reply::new(
                550,
                "5.7.1",
                format!("Sender address not allowed for user {}", user.name),
            ));
            return Next::Continue;
        }
        if let Err(wait) = user.rates.take_message() {
            self.shared
                .metrics
                .limit_hits
                .with_label_values(&["messages_per_minute"])
                .inc();
            self.push(Reply::new(
                450,
                "4.7.1",
                format!(
                    "Message rate limit for user {} reached, retry in {} s",
                    user.name,
                    wait.as_secs().max(1)
                ),
            ));
            return Next::Continue;
        }
        let sender = user
            .rewrite_sender
            .clone()
            .unwrap_or_else(|| mail.path.clone());
        let max_recipients = upstream
            .max_recipients
            .map_or(user.limits.max_recipients, |m| {
                m.min(user.limits.max_recipients)
            });
        let txn = Txn {
            upstream: upstream.clone(),
            client_from: mail.path.clone(),
            sender,
            mail,
            rcpt_commands: 0,
            forwarded: 0,
            accepted: Vec::new(),
            max_size,
            max_recipients,
        };
        if upstream.kind == UpstreamKind::Outbox {
            self.txn = Some(txn);
            self.push(Reply::new(250, "2.1.0", "Sender OK"));
            return Next::Continue;
        }
        // Answer what is queued before this (it may need the connection), then make sure one is open.
        self.drain_slots().await;
        if let Err(reply) = self.ensure_client(&upstream).await {
            self.push(reply);
            return Next::Continue;
        }
        let caps = self
            .client
            .as_ref()
            .map(|c| c.caps().clone())
            .unwrap_or_default();
        if txn.mail.params.smtputf8 && !caps.smtputf8 {
            self.push(Reply::new(
                550,
                "5.6.7",
                format!("upstream {} does not support SMTPUTF8", upstream.name),
            ));
            return Next::Continue;
        }
        let line = mail_command(&txn.sender, &txn.mail, &caps);
        if let Some(c) = self.client.as_mut() {
            c.queue(&line);
        }
        self.txn = Some(txn);
        self.slots.push_back(Slot::Upstream(Expect::Mail));
        self.flush_upstream_unless_pipelining().await;
        Next::Continue
    }

    pub(super) async fn rcpt(&mut self, rcpt: RcptTo) -> Next {
        let Some(txn) = self.txn.as_mut() else {
            self.push(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
            return self.count_error();
        };
        txn.rcpt_commands += 1;
        if !rcpt.path.is_ascii() && !txn.mail.params.smtputf8 {
            self.push(Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address needs the SMTPUTF8 parameter",
            ));
            return self.count_error();
        }
        if txn.forwarded >= txn.max_recipients {
            self.shared
                .metrics
                .limit_hits
                .with_label_values(&["max_recipients"])
                .inc();
            self.push(Reply::new(452, "4.5.3", "Too many recipients"));
            return Next::Continue;
        }
        if let Some(user) = self.sender_identity()
            && let Err(wait) = user.rates.take_recipient()
        {
            self.shared
                .metrics
                .limit_hits
                .with_label_values(&["recipients_per_hour"])
                .inc();
            self.push(Reply::new(
                450,
                "4.7.1",
                format!(
                    "Recipient rate limit for user {} reached, retry in {} s",
                    user.name,
                    wait.as_secs().max(1)
                ),
            ));
            return Next::Continue;
        }
        let Some(txn) = self.txn.as_mut() else {
            return Next::Continue;
        };
        txn.forwarded += 1;
        if txn.upstream.kind == UpstreamKind::Outbox {
            txn.accepted.push(rcpt.path);
            self.push(Reply::new(250, "2.1.5", "Recipient OK"));
            return Next::Continue;
        }
        let Some(client) = self.client.as_mut() else {
            self.push(Reply::new(451, "4.4.2", "Upstream connection lost"));
            return Next::Continue;
        };
        let line = rcpt_command(&rcpt, client.caps());
        client.queue(&line);
        self.slots
            .push_back(Slot::Upstream(Expect::Rcpt(rcpt.path)));
        self.flush_upstream_unless_pipelining().await;
        Next::Continue
    }

    /// RSET, EHLO, STARTTLS: abandons the transaction here and upstream.
    pub(super) fn reset_transaction(&mut self) {
        if self.txn.take().is_some()
            && let Some(c) = self.client.as_mut()
        {
            c.queue("RSET");
            self.slots.push_back(Slot::Upstream(Expect::Silent));
        }
    }

    /// Opens the upstream connection if there is none (or it is for another upstream).
    async fn ensure_client(&mut self, upstream: &Arc<Upstream>) -> Result<(), Reply> {
        if let Some(c) = &self.client
            && Arc::ptr_eq(c.upstream(), upstream)
            && !c.is_stale()
        {
            return Ok(());
        }
        if let Some(old) = self.client.take() {
            old.upstream().clone().checkin(old);
        }
        match upstream.checkout().await {
            Ok(c) => {
                self.client = Some(c);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "upstream connection failed");
                Err(e.setup_reply(&upstream.name))
            }
        }
    }

    /// Opens a new connection to the same upstream and sends it the batch the
    /// dead one never answered.
    async fn replay(&mut self) -> Result<(), UpstreamError> {
        let Some(mut old) = self.client.take() else {
            return Err(UpstreamError::Closed);
        };
        let batch = old.take_last_batch();
        let permit = old.take_permit();
        let mut fresh = Client::connect(old.upstream().clone()).await?;
        drop(old);
        if let Some(p) = permit {
            fresh.set_permit(p);
        }
        fresh.queue_raw(&batch);
        let r = fresh.flush_commands().await;
        self.client = Some(fresh);
        r
    }

    /// Without upstream PIPELINING, every command waits for its reply.
    pub(super) async fn flush_upstream_unless_pipelining(&mut self) {
        if self.client.as_ref().is_some_and(|c| !c.caps().pipelining) {
            self.drain_slots().await;
        }
    }

    /// Sends what is queued upstream, then resolves every slot in order.
    /// Returns the upstream's reply to DATA when a `Expect::Data` slot was resolved.
    pub(super) async fn drain_slots(&mut self) -> Option<Reply> {
        if !self.slots.iter().any(|s| matches!(s, Slot::Upstream(_))) {
            return None;
        }
        let mut sent = Instant::now();
        let mut failed = match self.client.as_mut() {
            Some(c) => c.flush_commands().await.err().map(|e| e.to_string()),
            None => Some("no upstream connection".to_owned()),
        };
        // A reused connection the provider closed while idle fails before its first
        // reply; then nothing of this batch was taken, and it goes again on a new one.
        let mut may_replay = self.client.as_ref().is_some_and(Client::was_used);
        let mut data_reply = None;
        let mut resolved = std::collections::VecDeque::with_capacity(self.slots.len());
        while let Some(slot) = self.slots.pop_front() {
            let expect = match slot {
                Slot::Ready(r) => {
                    resolved.push_back(Slot::Ready(r));
                    continue;
                }
                Slot::Upstream(e) => e,
            };
            let reply = match (&failed, self.client.as_mut()) {
                (None, Some(c)) => {
                    let label = match expect {
                        Expect::Mail => "MAIL",
                        Expect::Rcpt(_) => "RCPT",
                        Expect::Data => "DATA",
                        Expect::Silent => "RSET",
                    };
                    let mut r = c.read_reply(label, sent, COMMAND_TIMEOUT).await;
                    if may_replay && matches!(r, Err(UpstreamError::Closed | UpstreamError::Io(_)))
                    {
                        tracing::info!(
                            "kept upstream connection was closed; replaying on a new one"
                        );
                        r = match self.replay().await {
                            Ok(()) => {
                                sent = Instant::now();
                                match self.client.as_mut() {
                                    Some(c) => c.read_reply(label, sent, COMMAND_TIMEOUT).await,
                                    None => Err(UpstreamError::Closed),
                                }
                            }
                            Err(e) => Err(e),
                        };
                    }
                    may_replay = false;
                    match r {
                        Ok(r) => Some(r),
                        Err(e) => {
                            failed = Some(e.to_string());
                            None
                        }
                    }
                }
                _ => None,
            };
            let reply = match reply {
                Some(r) if r.code == 421 => {
                    failed = Some(format!("upstream closing: {r}"));
                    None
                }
                other => other,
            };
            let Some(reply) = reply else {
                // The upstream connection is gone: so is its transaction.
                self.txn = None;
                if !matches!(expect, Expect::Silent) {
                    resolved.push_back(Slot::Ready(Reply::new(
                        451,
                        "4.4.2",
                        "Upstream connection lost; try again later",
                    )));
                }
                continue;
            };
            let client_reply = self.upstream_reply(&reply);
            match expect {
                Expect::Silent => continue,
                Expect::Mail if !reply.is_positive() => self.txn = None,
                Expect::Mail => {}
                Expect::Rcpt(path) => {
                    let user = self.user_label();
                    let result = if reply.is_positive() {
                        "accepted"
                    } else {
                        "rejected"
                    };
                    self.shared
                        .metrics
                        .recipients
                        .with_label_values(&[&user, result])
                        .inc();
                    if let (true, Some(txn)) = (reply.is_positive(), self.txn.as_mut()) {
                        txn.accepted.push(path);
                    }
                }
                Expect::Data => data_reply = Some(reply),
            }
            resolved.push_back(Slot::Ready(client_reply));
        }
        if let Some(why) = failed {
            tracing::warn!(error = %why, "upstream connection failed during a transaction");
            self.client = None;
        }
        self.slots = resolved;
        data_reply
    }

    /// An upstream reply for the client, marked with the name of the upstream in use.
    pub(super) fn upstream_reply(&self, reply: &Reply) -> Reply {
        let name = self
            .txn
            .as_ref()
            .map(|t| t.upstream.name.clone())
            .or_else(|| self.client.as_ref().map(|c| c.upstream().name.clone()))
            .unwrap_or_else(|| Arc::from("?"));
        from_upstream(&name, reply)
    }

    /// The user label for metrics: a configured name, or "-".
    pub(super) fn user_label(&self) -> Arc<str> {
        self.sender_identity()
            .map_or_else(|| Arc::from("-"), |u| u.name.clone())
    }
}

/// An upstream reply as the client sees it: code and enhanced code kept (a
/// class-only code added where the upstream gave none), text marked as the provider's.
pub(super) fn from_upstream(upstream: &str, reply: &Reply) -> Reply {
    let mut r = reply.prefixed(&format!("upstream {upstream}: "));
    if r.enhanced.is_none() {
        r.enhanced = Some(format!("{}.0.0", reply.class()));
    }
    r
}

/// `MAIL FROM:<sender>` with the parameters the upstream understands. Built from
/// parsed fields only; the client's AUTH= parameter is never passed on.
pub(super) fn mail_command(sender: &str, mail: &MailFrom, caps: &Capabilities) -> String {
    let mut line = format!("MAIL FROM:<{sender}>");
    let p = &mail.params;
    if let (Some(size), Some(_)) = (p.size, caps.size) {
        line.push_str(&format!(" SIZE={size}"));
    }
    if caps.eightbitmime {
        match p.body {
            Some(Body::EightBitMime) => line.push_str(" BODY=8BITMIME"),
            Some(Body::SevenBit) => line.push_str(" BODY=7BIT"),
            None => {}
        }
    }
    if p.smtputf8 && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        match p.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &p.envid {
            line.push_str(&format!(" ENVID={envid}"));
        }
    }
    line
}

/// `RCPT TO:<path>` with DSN parameters when the upstream has DSN.
pub(super) fn rcpt_command(rcpt: &RcptTo, caps: &Capabilities) -> String {
    let mut line = format!("RCPT TO:<{}>", rcpt.path);
    if caps.dsn {
        if let Some(n) = &rcpt.params.notify {
            line.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = &rcpt.params.orcpt {
            line.push_str(&format!(" ORCPT={o}"));
        }
    }
    line
}
