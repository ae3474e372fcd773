//! EHLO and HELO: the greeting, and the extensions offered on this connection.

use super::{Next, Session};
use crate::smtp::reply::Reply;

impl Session {
    /// EHLO/HELO: (re)starts the session's greeting state and abandons any transaction.
    pub(super) fn ehlo(&mut self, name: String, extended: bool) -> Next {
        self.reset_transaction();
        let hostname = self.policy.config.server.hostname.clone();
        if !extended {
            self.helo = Some((name.clone(), false));
            self.push(Reply::plain(250, format!("{hostname} greets {name}")));
            return Next::Continue;
        }
        let mut lines = vec![format!("{hostname} greets {name}"), "PIPELINING".to_owned()];
        lines.push(format!("SIZE {}", self.advertised_size()));
        let caps = self.common_capabilities();
        if caps.eightbitmime {
            lines.push("8BITMIME".to_owned());
        }
        if caps.smtputf8 {
            lines.push("SMTPUTF8".to_owned());
        }
        if caps.dsn {
            lines.push("DSN".to_owned());
        }
        lines.push("ENHANCEDSTATUSCODES".to_owned());
        lines.push("CHUNKING".to_owned());
        if self.auth_allowed() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        if self.starttls_offered() {
            lines.push("STARTTLS".to_owned());
        }
        self.helo = Some((name, true));
        self.push(Reply::multi(250, lines));
        Next::Continue
    }

    /// Whether AUTH may be used now: after TLS, or before it where plaintext AUTH is allowed.
    pub(super) fn auth_allowed(&self) -> bool {
        self.user.is_none() && (self.conn.is_tls() || self.listener.plaintext_auth)
    }

    /// The SIZE to advertise before the user is known: the server limit, capped by every upstream's.
    fn advertised_size(&self) -> u64 {
        self.policy
            .upstreams
            .iter()
            .map(|u| u.effective_max_size(self.policy.config.limits.max_message_size))
            .min()
            .unwrap_or(self.policy.config.limits.max_message_size)
    }

    /// Extensions every upstream offers (a user is not known yet at EHLO).
    fn common_capabilities(&self) -> crate::upstream::Capabilities {
        let mut all = self.policy.upstreams.iter().map(|u| u.capabilities());
        let Some(Some(mut caps)) = all.next() else {
            return Default::default();
        };
        for c in all {
            let Some(c) = c else {
                return Default::default();
            };
            caps.eightbitmime &= c.eightbitmime;
            caps.smtputf8 &= c.smtputf8;
            caps.dsn &= c.dsn;
        }
        caps
    }
}
