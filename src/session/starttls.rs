//! STARTTLS (RFC 3207). Bytes the client pipelined after it are discarded,
//! never executed (CVE-2011-0411), and the session starts over after the
//! handshake: no EHLO, no user, no transaction.

use super::{Next, Phase, Session};
use crate::config::TlsMode;
use crate::refusal::Refusal;
use crate::smtp::reply::Reply;

impl Session {
    pub(super) fn starttls(&mut self) -> Next {
        if self.conn.is_tls() {
            return self.refuse(Refusal::TlsAlreadyActive);
        }
        if !self.starttls_offered() {
            return self.refuse(Refusal::TlsUnavailable);
        }
        if !self.conn.rbuf.is_empty() {
            tracing::info!(
                bytes = self.conn.rbuf.len(),
                "discarded input pipelined after STARTTLS"
            );
            self.conn.rbuf.clear();
        }
        self.push(Reply::new(220, "2.0.0", "Ready to start TLS"));
        self.phase = Phase::Command;
        self.reset_transaction();
        self.helo = None;
        self.user = None;
        Next::StartTls
    }

    pub(super) fn starttls_offered(&self) -> bool {
        self.listener.tls == TlsMode::Starttls && self.shared.tls.is_some() && !self.conn.is_tls()
    }
}
