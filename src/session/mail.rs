//! MAIL: identity, sender policy, limits, then the route's own answer. Toward
//! a provider the command is queued, not awaited (see `relay`).

use super::{Next, Session, Txn};
use crate::policy;
use crate::refusal::Refusal;
use crate::relay::{After, Route};
use crate::smtp::command::MailFrom;

impl Session {
    pub(super) async fn mail(&mut self, mail: MailFrom) -> Next {
        if self.helo.is_none() {
            return self.refuse(Refusal::NeedHelo);
        }
        if self.txn.is_some() {
            return self.refuse(Refusal::NestedMail);
        }
        let Some(user) = self.sender_identity() else {
            return self.refuse(Refusal::AuthRequired);
        };
        if !self.claim_user_slot(&user) {
            return Next::Close;
        }
        if !mail.path.is_ascii() && !mail.params.smtputf8 {
            return self.refuse(Refusal::NonAsciiSender);
        }
        let upstream = self.policy.upstreams[user.upstream].clone();
        let max_size = upstream.effective_max_size(user.limits.max_message_size);
        if mail.params.size.is_some_and(|s| s > max_size) {
            return self.decline(Refusal::SizeDeclaredTooBig);
        }
        if !policy::sender_allowed(
            &user.allowed_senders,
            user.rewrite_sender.is_some(),
            &mail.path,
        ) {
            tracing::info!(user = %user.name, "sender refused by allowed_senders");
            let r = Refusal::SenderNotAllowed(user.name.clone());
            self.shared
                .metrics
                .messages
                .with_label_values(&[&user.name, r.message_result()])
                .inc();
            return self.decline(r);
        }
        if let Err(wait) = user.rates.take_message() {
            return self.decline(Refusal::MessageRate {
                user: user.name.clone(),
                wait,
            });
        }
        let sender = user
            .rewrite_sender
            .clone()
            .unwrap_or_else(|| mail.path.clone());
        let route = Route::of(&upstream);
        let txn = Txn {
            max_recipients: upstream.effective_max_recipients(user.limits.max_recipients),
            upstream,
            route,
            client_from: mail.path.clone(),
            sender,
            mail,
            rcpt_commands: 0,
            forwarded: 0,
            accepted: Vec::new(),
            max_size,
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
                self.txn = Some(txn);
                if after == After::Resolve {
                    self.drain().await;
                }
                Next::Continue
            }
            Err(refusal) => self.decline(refusal),
        }
    }
}
