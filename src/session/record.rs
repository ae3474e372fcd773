//! The outcome of each mail transaction, counted and logged once.
//!
//! A transaction ends in exactly one of these places: refused at MAIL (before
//! it opened), refused by the provider at MAIL or DATA, its connection lost,
//! at end-of-data, or abandoned by the client (RSET, EHLO, STARTTLS, QUIT, a
//! disconnect, a timeout). Each calls `record`, which counts it in
//! `postern_messages_total{user,result}` under a word from
//! `refusal::MESSAGE_RESULTS` and writes the one INFO line `transaction` with
//! every field an operator needs to answer "did the scanner's mail go out, and
//! if not why". Text fields go to tracing as `&str`, so the text format quotes
//! and escapes them (`key="value"`) and the JSON format writes JSON strings.
//! No password, AUTH payload or message text is ever part of it.

use std::time::Duration;

use tokio::time::Instant;

use super::{Session, Txn};
use crate::refusal::Refusal;
use crate::relay::{Relay, Route};
use crate::smtp::reply::Reply;

/// Longest client-chosen text (a sender, a username) a log line carries.
pub(super) const MAX_LOGGED_TEXT: usize = 256;

/// `s` cut to `MAX_LOGGED_TEXT` characters.
pub(super) fn bounded(s: &str) -> &str {
    match s.char_indices().nth(MAX_LOGGED_TEXT) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The `route` field: how the transaction's mail leaves.
fn route_word(route: &Route) -> &'static str {
    match route {
        Route::Provider(_) => "relay",
        Route::Outbox(_) => "outbox",
        Route::Spool(..) => "spool",
        Route::Fallback(..) => "fallback",
    }
}

/// What the log line and the counter say about one transaction.
pub(super) struct Record<'a> {
    pub id: &'a str,
    pub client_from: &'a str,
    /// The sender sent upstream (after `rewrite_sender`), once known.
    pub sender: Option<&'a str>,
    pub rcpt_accepted: usize,
    pub rcpt_refused: usize,
    pub size: Option<u64>,
    pub upstream: Option<&'a str>,
    pub route: Option<&'static str>,
    /// The last reply of the transaction; none when the client walked away.
    pub reply: Option<&'a Reply>,
    /// End-of-data to the provider's (or the outbox's) answer.
    pub relay: Option<Duration>,
    /// When MAIL came.
    pub started: Option<Instant>,
    pub result: &'static str,
}

impl<'a> Record<'a> {
    /// A transaction that was open, ending with `result`.
    pub fn of(txn: &'a Txn, result: &'static str, reply: Option<&'a Reply>) -> Record<'a> {
        let accepted = txn.accepted.len();
        Record {
            id: &txn.id,
            client_from: &txn.client_from,
            sender: Some(&txn.sender),
            rcpt_accepted: accepted,
            rcpt_refused: (txn.rcpt_commands as usize).saturating_sub(accepted),
            size: None,
            upstream: Some(&txn.upstream.name),
            route: Some(route_word(&txn.route)),
            reply,
            relay: None,
            started: Some(txn.started),
            result,
        }
    }

    /// A MAIL refused before any transaction opened.
    pub fn refused_mail(
        id: &'a str,
        client_from: &'a str,
        upstream: Option<&'a str>,
        result: &'static str,
        reply: &'a Reply,
    ) -> Record<'a> {
        Record {
            id,
            client_from,
            sender: None,
            rcpt_accepted: 0,
            rcpt_refused: 0,
            size: None,
            upstream,
            route: None,
            reply: Some(reply),
            relay: None,
            started: None,
            result,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Session {
    /// Counts the transaction under its user and result, and logs its line.
    pub(super) fn record(&self, r: &Record<'_>) {
        let user = self.user_label();
        self.shared
            .metrics
            .messages
            .with_label_values(&[&user, r.result])
            .inc();
        let reply = r.reply.map(ToString::to_string);
        let client = self.peer.to_string();
        tracing::info!(
            id = r.id,
            user = &*user,
            client = client.as_str(),
            listener = &*self.listener.name,
            tls = self.conn.tls_version().unwrap_or("none"),
            client_from = bounded(r.client_from),
            sender = r.sender.map(bounded),
            rcpt_accepted = r.rcpt_accepted as u64,
            rcpt_refused = r.rcpt_refused as u64,
            size = r.size,
            upstream = r.upstream,
            route = r.route,
            reply = reply.as_deref(),
            relay_ms = r.relay.map(millis),
            total_ms = r.started.map(|s| millis(s.elapsed())),
            result = r.result,
            "transaction"
        );
    }

    /// Ends the open transaction, if any, with `result`.
    pub(super) fn end_txn(&mut self, result: &'static str, reply: &Reply) {
        if let Some(txn) = self.txn.take() {
            self.record(&Record::of(&txn, result, Some(reply)));
        }
    }

    /// Ends the open transaction with a refusal postern decided.
    pub(super) fn end_txn_refused(&mut self, r: &Refusal) {
        self.end_txn(r.message_result(), &r.reply());
    }

    /// Records a transaction the client left before its end-of-data. One whose
    /// every RCPT was refused counts as `rejected_no_recipients` (a deferred
    /// one's recipients are not refused: their verdicts never came).
    pub(super) fn record_abandoned(&self, txn: &Txn, reply: Option<&Reply>) {
        let result = if txn.rcpt_commands > 0
            && txn.accepted.is_empty()
            && !Relay::pending(&self.replies)
            && !self.relay.has_deferred()
        {
            "rejected_no_recipients"
        } else {
            "abandoned"
        };
        self.record(&Record::of(txn, result, reply));
    }

    /// A refused MAIL: counted and logged once, then answered by `decline` or `refuse`.
    pub(super) fn record_mail_refusal(&self, id: &str, client_from: &str, r: &Refusal) {
        let reply = r.reply();
        let upstream = self
            .sender_identity()
            .and_then(|u| self.policy.upstreams.get(u.upstream).cloned());
        self.record(&Record::refused_mail(
            id,
            client_from,
            upstream.as_ref().map(|u| &*u.name),
            r.message_result(),
            &reply,
        ));
    }

    /// Counts and logs a RCPT postern refused itself.
    pub(super) fn record_rcpt_refusal(&self, r: &Refusal) {
        let user = self.user_label();
        let result = r.recipient_result();
        self.shared
            .metrics
            .recipients
            .with_label_values(&[&user, result])
            .inc();
        let reply = r.reply().to_string();
        tracing::info!(
            id = self.txn.as_ref().map(|t| t.id.as_str()),
            user = &*user,
            result,
            reply = reply.as_str(),
            "recipient refused"
        );
    }
}
