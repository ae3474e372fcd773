//! RCPT: the recipient limits, then the route. Toward a provider the command
//! is queued and its reply is the provider's (see `relay`, which counts those
//! replies); what postern refuses or accepts itself is counted here.

use super::{Next, Session};
use crate::refusal::Refusal;
use crate::relay::{After, Route, Slot};
use crate::smtp::command::RcptTo;

impl Session {
    pub(super) async fn rcpt(&mut self, rcpt: RcptTo) -> Next {
        let Some(txn) = self.txn.as_mut() else {
            if let Some(r) = self.refused_sender.clone() {
                // MAIL ahead: the provider refused the sender after our 250.
                self.push(r);
                return Next::Continue;
            }
            return self.refuse(Refusal::NeedMailForRcpt);
        };
        txn.rcpt_commands += 1;
        if !rcpt.path.is_ascii() && !txn.mail.params.smtputf8 {
            let r = Refusal::NonAsciiRecipient;
            self.record_rcpt_refusal(&r);
            return self.refuse(r);
        }
        if txn.forwarded >= txn.max_recipients {
            return self.rcpt_refused(Refusal::TooManyRecipients);
        }
        if let Some(user) = self.sender_identity()
            && let Err(r) = self.take_recipient(&user).await
        {
            return self.rcpt_refused(r);
        }
        let Some(txn) = self.txn.as_mut() else {
            return Next::Continue;
        };
        if rcpt.params != Default::default() {
            txn.rcpt_dsn.push((rcpt.path.clone(), rcpt.params.clone()));
        }
        if let Some(q) = txn.upstream.quota.clone()
            && matches!(txn.route, Route::Provider(_) | Route::Fallback(..))
            && let Err(e) = q.take_recipients(1).await
        {
            if matches!(txn.route, Route::Fallback(..)) {
                // Over the provider's daily quota: this recipient waits in the spool.
                txn.forwarded += 1;
                txn.spool_rcpts.push(rcpt.path);
                self.replies
                    .push_back(Slot::Ready(crate::relay::recipient_queued()));
                self.shared
                    .metrics
                    .recipients
                    .with_label_values(&[&self.user_label(), "spooled"])
                    .inc();
                return Next::Continue;
            }
            let r = e.refusal(&txn.upstream.name);
            return self.rcpt_refused(r);
        }
        txn.forwarded += 1;
        let (accepted, after) = self.relay.rcpt(&txn.route, &rcpt, &mut self.replies);
        if accepted {
            txn.accepted.push(rcpt.path);
            self.shared
                .metrics
                .recipients
                .with_label_values(&[&self.user_label(), "accepted"])
                .inc();
        }
        if after == After::Resolve {
            self.drain().await;
        }
        Next::Continue
    }

    fn rcpt_refused(&mut self, r: Refusal) -> Next {
        self.record_rcpt_refusal(&r);
        self.decline(r)
    }
}
