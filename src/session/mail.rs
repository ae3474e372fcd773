//! MAIL: identity, sender policy, limits, then the route's own answer. Toward
//! a provider the command is queued, not awaited (see `relay`). A MAIL
//! refused here is counted and logged once (`record`), with its user.

use super::{Next, Session, Txn};
use crate::policy;
use crate::refusal::Refusal;
use crate::relay::{After, Route};
use crate::smtp::command::MailFrom;
use crate::upstream::outbox;

impl Session {
    pub(super) async fn mail(&mut self, mail: MailFrom) -> Next {
        if self.helo.is_none() {
            return self.refuse(Refusal::NeedHelo);
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::NestedMail);
        }
        self.refused_sender = None;
        let id = outbox::new_id();
        let Some(user) = self.sender_identity() else {
            let r = Refusal::AuthRequired;
            self.record_mail_refusal(&id, &mail.path, &r);
            return self.refuse(r);
        };
        // The checks of MAIL's own first, so that with `[cluster]` the slot
        // and the message rate are one round trip, the rate taken only for
        // a MAIL that passed them; the answers keep their order.
        let non_ascii = !mail.path.is_ascii() && !mail.params.smtputf8;
        let upstream = self.policy.upstreams[user.upstream].clone();
        let max_size = upstream.effective_max_size(user.limits.max_message_size);
        let too_big = mail.params.size.is_some_and(|s| s > max_size);
        let sender_allowed = policy::sender_allowed(
            &user.allowed_senders,
            user.rewrite_sender.is_some(),
            &mail.path,
        );
        let passes = !non_ascii && !too_big && sender_allowed;
        let decided = match self.claim_slot_and_message(&user, passes).await {
            Ok(decided) => decided,
            Err(r) => {
                self.record_mail_refusal(&id, &mail.path, &r);
                return Next::Close;
            }
        };
        if non_ascii {
            let r = Refusal::NonAsciiSender;
            self.record_mail_refusal(&id, &mail.path, &r);
            return self.refuse(r);
        }
        if too_big {
            return self.mail_refused(&id, &mail, Refusal::SizeDeclaredTooBig);
        }
        if !sender_allowed {
            return self.mail_refused(&id, &mail, Refusal::SenderNotAllowed(user.name.clone()));
        }
        if let Some(Err(r)) = decided.message {
            return self.mail_refused(&id, &mail, r);
        }
        let sender = user
            .rewrite_sender
            .clone()
            .unwrap_or_else(|| mail.path.clone());
        let Some(route) = Route::for_sender(&upstream, &sender, self.policy.spool.as_ref()) else {
            tracing::info!(user = %user.name, upstream = %upstream.name, "no upstream account for the sender");
            let r = Refusal::NoAccountForSender {
                upstream: upstream.name.clone(),
            };
            self.shared
                .metrics
                .messages
                .with_label_values(&[&user.name, r.message_result()])
                .inc();
            return self.decline(r);
        };
        // The provider's daily message quota: relay mode refuses over it;
        // fallback mode spools (the workers deliver when it allows); spool
        // mode leaves it to the workers.
        let route = match (&upstream.quota, route) {
            (Some(q), route @ (Route::Provider(_) | Route::Fallback(..))) => {
                match q.take_message().await {
                    Ok(()) => route,
                    Err(e) => match route.spool_instead() {
                        Some(spooled) => {
                            tracing::info!(upstream = %upstream.name, quota = e.what, unavailable = e.unavailable, "upstream quota used up (or not decidable); the message goes to the spool");
                            spooled
                        }
                        None => {
                            let r = e.refusal(&upstream.name);
                            return self.mail_refused(&id, &mail, r);
                        }
                    },
                }
            }
            (_, route) => route,
        };
        // Spooled mail is sent in as many transactions as the provider needs:
        // the device's cap is the user's own.
        let max_recipients = if upstream.delivery.uses_spool() {
            user.limits.max_recipients
        } else {
            upstream.effective_max_recipients(user.limits.max_recipients)
        };
        let txn = Txn {
            id,
            started: tokio::time::Instant::now(),
            max_recipients,
            upstream,
            route,
            client_from: mail.path.clone(),
            sender,
            mail,
            rcpt_commands: 0,
            forwarded: 0,
            accepted: Vec::new(),
            spool_rcpts: Vec::new(),
            rcpt_dsn: Vec::new(),
            size_capped_by_fallback: false,
            max_size,
            rcpt_ahead: decided.rcpt_ahead,
        };
        let label = self.user_label();
        match self
            .relay
            .mail(
                &txn.route,
                &txn.sender,
                &txn.mail,
                &mut self.replies,
                &label,
            )
            .await
        {
            Ok(after) => {
                let mut txn = txn;
                if after == After::SpoolOnly
                    && let Some(spool) = txn.route.spool_instead()
                {
                    txn.route = spool;
                }
                // Failed over: the fallback's own caps hold for this
                // transaction (extra RCPTs get 452 4.5.3; a body over its
                // size, 451: the upstream itself may take it later).
                if let Route::Provider(pool) | Route::Fallback(pool, _) = &txn.route
                    && let Some(took) = self.relay.failed_over(pool)
                {
                    if let Some(m) = took.max_recipients() {
                        txn.max_recipients = txn.max_recipients.min(m);
                    }
                    if let Some(m) = took.max_message_size()
                        && m < txn.max_size
                    {
                        txn.max_size = m;
                        txn.size_capped_by_fallback = true;
                    }
                }
                self.txn = Some(txn);
                if after == After::Resolve {
                    self.drain().await;
                }
                Next::Continue
            }
            Err(refusal) => self.mail_refused(&txn.id, &txn.mail, refusal),
        }
    }

    /// A MAIL refused by policy or because the upstream cannot be set up:
    /// counted and logged once, answered without counting a client error.
    fn mail_refused(&mut self, id: &str, mail: &MailFrom, r: Refusal) -> Next {
        self.record_mail_refusal(id, &mail.path, &r);
        self.decline(r)
    }
}
