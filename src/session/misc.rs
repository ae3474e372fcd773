//! RSET, NOOP, HELP, VRFY and QUIT: the verbs that need no state of their own.

use super::{Next, Session};
use crate::smtp::reply::Reply;

impl Session {
    /// RSET: abandons the transaction here and upstream.
    pub(super) fn rset(&mut self) -> Next {
        self.reset_transaction();
        self.push(Reply::new(250, "2.0.0", "OK"));
        Next::Continue
    }

    pub(super) fn noop(&mut self) -> Next {
        self.push(Reply::new(250, "2.0.0", "OK"));
        Next::Continue
    }

    pub(super) fn help(&mut self) -> Next {
        self.push(Reply::new(
            214,
            "2.0.0",
            "postern relay: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY QUIT",
        ));
        Next::Continue
    }

    /// VRFY: never confirms an address (RFC 5321 §3.5.3 allows 252).
    pub(super) fn vrfy(&mut self) -> Next {
        self.push(Reply::new(
            252,
            "2.5.2",
            "Cannot VRFY user, but will accept message and attempt delivery",
        ));
        Next::Continue
    }

    pub(super) fn quit(&mut self) -> Next {
        self.push(Reply::new(221, "2.0.0", "Bye"));
        Next::Close
    }

    /// RSET, EHLO, STARTTLS: abandons the transaction here and upstream.
    pub(super) fn reset_transaction(&mut self) {
        self.refused_sender = None;
        if let Some(txn) = self.txn.take() {
            self.record_abandoned(&txn, None);
            self.relay.rset(&mut self.replies);
        }
    }
}
