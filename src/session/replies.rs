//! The session's reply queue. Replies are queued in order (`relay::Queue`): a
//! reply postern decides itself is ready at once, a reply that comes from the
//! upstream is read when the queue is resolved. The queue is resolved and
//! written out when the client's input is exhausted, before waiting for more
//! (RFC 2920 §3.1), so pipelined commands are answered in one write, in order,
//! and their upstream counterparts go out in one write too.

use super::Session;
use crate::refusal::Refusal;
use crate::relay::{Relay, Resolution, Slot};
use crate::smtp::reply::Reply;

impl Session {
    pub(super) fn push(&mut self, reply: Reply) {
        self.replies.push_back(Slot::Ready(reply));
    }

    /// Sends what is queued upstream and resolves the reply queue, applying
    /// what it learned to the open transaction.
    pub(super) async fn drain(&mut self) -> Option<Reply> {
        if !Relay::pending(&self.replies) {
            return None;
        }
        let user = self.user_label();
        let Resolution {
            ended,
            accepted,
            data,
            mail_refused,
            sender_refused,
            to_spool,
            deferred,
        } = self.relay.resolve(&mut self.replies, &user).await;
        if sender_refused.is_some() {
            self.refused_sender = sender_refused;
        }
        if ended {
            if let Some(txn) = self.txn.as_ref() {
                // The provider refused MAIL, or the connection was lost.
                let (result, reply) = match &mail_refused {
                    Some(r) => (
                        crate::refusal::upstream_result(r),
                        crate::relay::from_upstream(&txn.upstream.name, r),
                    ),
                    None => ("upstream_failed", Refusal::UpstreamLost.reply()),
                };
                self.end_txn(result, &reply);
            }
        } else if let Some(txn) = self.txn.as_mut() {
            txn.accepted.extend(accepted);
            txn.spool_rcpts.extend(deferred);
            if to_spool && let Some(spool) = txn.route.spool_instead() {
                txn.route = spool;
                // The spool takes every recipient; later ones are accepted on
                // its route, after these (the client's order is kept).
                let put_off = std::mem::take(&mut txn.spool_rcpts);
                txn.accepted.extend(put_off);
                self.relay.drop_connection();
            }
        }
        data
    }

    /// Encodes the queued replies and writes them.
    pub(super) async fn write_out(&mut self) -> std::io::Result<()> {
        self.encode_replies();
        self.conn.flush().await
    }

    /// Moves the queued replies into the connection's write buffer.
    pub(super) fn encode_replies(&mut self) {
        for slot in std::mem::take(&mut self.replies) {
            match slot {
                Slot::Ready(r) => self.conn.send(&r),
                // `drain` resolves these first; never leave a command unanswered.
                Slot::Upstream(_) => self.conn.send(&Refusal::Internal.reply()),
            }
        }
    }
}
