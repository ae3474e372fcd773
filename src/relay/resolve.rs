//! Resolving the reply queue: the queued commands go upstream in one write and
//! their replies are read in order, each slot becoming the client's reply; a
//! kept connection the provider cut while idle is replaced and the batch sent
//! again. MAIL ahead's held MAIL is read first (`Expect::MailAhead`).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Expect, Queue, Relay, Resolution, Slot, from_upstream, recipient_queued, sender_ok};
use crate::refusal::Refusal;
use crate::smtp::reply::Reply;
use crate::upstream::UpstreamError;
use crate::upstream::client::COMMAND_TIMEOUT;

impl Relay {
    /// Sends what is queued upstream, then resolves every slot in order.
    /// `user` labels the recipient counters.
    pub async fn resolve(&mut self, queue: &mut Queue, user: &str) -> Resolution {
        let mut out = Resolution::default();
        if !Relay::pending(queue) {
            return out;
        }
        if std::mem::take(&mut self.mail_owed) {
            queue.push_front(Slot::Upstream(Expect::MailAhead));
        }
        let mut sent = Instant::now();
        let mut failed = match self.kept.as_mut() {
            Some((_, c)) => c.flush_commands().await.err().map(|e| e.to_string()),
            None => Some("no upstream connection".to_owned()),
        };
        let name = self
            .kept
            .as_ref()
            .map_or_else(|| Arc::from("?"), |(_, c)| c.name().clone());
        let metrics = self.kept.as_ref().map(|(p, _)| p.dial().metrics.clone());
        // Only a reused connection may have been cut while idle, and only a batch
        // that starts a transaction can go again on another connection: one that
        // continues a transaction (RCPTs after an answered MAIL) would arrive there
        // without its MAIL.
        let starts_fresh = matches!(
            queue.iter().find_map(|s| match s {
                Slot::Upstream(e) => Some(e),
                Slot::Ready(_) => None,
            }),
            Some(Expect::Mail | Expect::MailAhead | Expect::Silent)
        );
        let mut may_replay = starts_fresh && self.kept.as_ref().is_some_and(|(_, c)| c.was_used());
        let mut resolved = VecDeque::with_capacity(queue.len());
        while let Some(slot) = queue.pop_front() {
            let expect = match slot {
                Slot::Ready(r) => {
                    resolved.push_back(Slot::Ready(r));
                    continue;
                }
                Slot::Upstream(e) => e,
            };
            let reply = if failed.is_none() {
                let label = match expect {
                    Expect::Mail | Expect::MailAhead => "MAIL",
                    Expect::Rcpt(_) => "RCPT",
                    Expect::Data => "DATA",
                    Expect::Silent => "RSET",
                };
                let mut r = self.read(label, sent).await;
                // A 421 as the first answer on a reused connection is the
                // provider's idle cut, like a bare close: nothing was taken.
                let cut = matches!(r, Err(UpstreamError::Closed | UpstreamError::Io(_)))
                    || matches!(&r, Ok(reply) if reply.code == 421);
                if may_replay && cut {
                    tracing::info!("kept upstream connection was closed; replaying on a new one");
                    r = match self.replace().await {
                        Ok(()) => {
                            sent = Instant::now();
                            self.read(label, sent).await
                        }
                        Err(e) => Err(e),
                    };
                }
                may_replay = false;
                match r {
                    Ok(r) if r.code == 421 => {
                        failed = Some(format!("upstream closing: {r}"));
                        None
                    }
                    Ok(r) => Some(r),
                    Err(e) => {
                        failed = Some(e.to_string());
                        None
                    }
                }
            } else {
                None
            };
            let Some(reply) = reply else {
                if self.fallback {
                    // The provider is gone: the spool takes the transaction.
                    out.to_spool = true;
                    match expect {
                        Expect::Silent | Expect::MailAhead => {}
                        Expect::Mail => resolved.push_back(Slot::Ready(sender_ok())),
                        Expect::Rcpt(path) => {
                            out.deferred.push(path);
                            resolved.push_back(Slot::Ready(recipient_queued()));
                        }
                        Expect::Data => {
                            resolved.push_back(Slot::Ready(Refusal::UpstreamLost.reply()))
                        }
                    }
                    continue;
                }
                // The upstream connection is gone: so is its transaction.
                out.ended = true;
                if let (Expect::Rcpt(_), Some(m)) = (&expect, &metrics) {
                    m.recipients
                        .with_label_values(&[user, "upstream_failed"])
                        .inc();
                }
                if !matches!(expect, Expect::Silent | Expect::MailAhead) {
                    resolved.push_back(Slot::Ready(Refusal::UpstreamLost.reply()));
                }
                continue;
            };
            let mut client_reply = from_upstream(&name, &reply);
            if self.fallback {
                match &expect {
                    Expect::Mail | Expect::MailAhead if reply.class() == 4 => {
                        tracing::info!(upstream = %name, reply = %reply, "provider put off MAIL; the message goes to the spool");
                        out.to_spool = true;
                        if matches!(expect, Expect::Mail) {
                            resolved.push_back(Slot::Ready(sender_ok()));
                        }
                        continue;
                    }
                    Expect::Rcpt(path) if out.to_spool || reply.class() == 4 => {
                        if let Some(m) = &metrics {
                            m.recipients.with_label_values(&[user, "spooled"]).inc();
                        }
                        out.deferred.push(path.clone());
                        resolved.push_back(Slot::Ready(recipient_queued()));
                        continue;
                    }
                    Expect::Data if out.to_spool => {
                        // data() answers 354 itself for the spool.
                        out.data = None;
                        client_reply = Refusal::UpstreamLost.reply();
                        resolved.push_back(Slot::Ready(client_reply));
                        continue;
                    }
                    _ => {}
                }
            }
            match expect {
                Expect::Silent => continue,
                Expect::MailAhead if !reply.is_positive() => {
                    // Its RCPTs carry this refusal (the provider's own replies
                    // to them would only say that no MAIL was accepted).
                    out.ended = true;
                    out.mail_refused = Some(reply.clone());
                    out.sender_refused = Some(client_reply);
                    continue;
                }
                Expect::MailAhead => continue,
                Expect::Mail if !reply.is_positive() => {
                    out.ended = true;
                    out.mail_refused = Some(reply.clone());
                }
                Expect::Mail => {}
                Expect::Rcpt(path) => {
                    if let (Some(sender), Some(mail)) = (&out.sender_refused, &out.mail_refused) {
                        client_reply = sender.clone();
                        let result = crate::refusal::upstream_result(mail);
                        if let Some(m) = &metrics {
                            m.recipients.with_label_values(&[user, result]).inc();
                        }
                        resolved.push_back(Slot::Ready(client_reply));
                        continue;
                    }
                    let result = crate::refusal::upstream_result(&reply);
                    if let Some(m) = &metrics {
                        m.recipients.with_label_values(&[user, result]).inc();
                    }
                    if !reply.is_positive() {
                        let text = client_reply.to_string();
                        tracing::info!(
                            user,
                            upstream = &*name,
                            result,
                            reply = text.as_str(),
                            "recipient refused"
                        );
                    }
                    if reply.is_positive() && !out.ended {
                        out.accepted.push(path);
                    }
                }
                Expect::Data => out.data = Some(reply),
            }
            resolved.push_back(Slot::Ready(client_reply));
        }
        if let Some(why) = failed {
            tracing::warn!(error = %why, "upstream connection failed during a transaction");
            self.kept = None;
        }
        *queue = resolved;
        out
    }

    async fn read(&mut self, label: &'static str, sent: Instant) -> Result<Reply, UpstreamError> {
        match self.kept.as_mut() {
            Some((_, c)) => c.read_reply(label, sent, COMMAND_TIMEOUT).await,
            None => Err(UpstreamError::Closed),
        }
    }

    /// Has the pool replace the kept connection, resending its last batch.
    pub(super) async fn replace(&mut self) -> Result<(), UpstreamError> {
        let Some((pool, dead)) = self.kept.take() else {
            return Err(UpstreamError::Closed);
        };
        let fresh = pool.replace(dead).await?;
        self.kept = Some((pool, fresh));
        Ok(())
    }
}
