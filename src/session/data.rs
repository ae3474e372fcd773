//! DATA: the 354, the body streamed to the route line by line in large
//! writes, and the final reply, which is the upstream's own: the client hears
//! 250 only after the upstream said 250 or the outbox file is durable.
//!
//! A message that is refused (bare CR/LF, over-long line, too big) or whose
//! upstream failed is read to its end-of-data and then refused; its upstream
//! transaction is abandoned by closing the connection without the final dot
//! (RFC 5321 §4.1.1.10), so nothing half-sent is ever delivered.

use tokio::time::Instant;

use super::record::Record;
use super::{Next, Phase, Session, Slot, Txn};
use crate::refusal::{Refusal, upstream_result};
use crate::relay::{Relay, Route, Sink, body::Finished, from_upstream};
use crate::smtp::data::{DataError, Receiver, Step};
use crate::smtp::header;
use crate::smtp::reply::Reply;

/// Header collection for `rewrite_header_from`.
enum Headers {
    /// Pass lines through untouched.
    Pass,
    /// Collecting the header section; rewritten at the empty line.
    Collect(Vec<u8>),
}

/// The DATA phase (or a message in BDAT chunks, `session::bdat`): the
/// transaction, the framer, and where the body goes.
pub(super) struct Body {
    pub(super) txn: Txn,
    rx: Receiver,
    headers: Headers,
    /// The header `From:` to write, with `rewrite_header_from`.
    rewrite: Option<String>,
    pub(super) sink: Sink,
    /// Set at the first failure; the rest of the body is read and dropped.
    pub(super) fault: Option<Refusal>,
}

fn go_ahead() -> Reply {
    Reply::plain(354, "End data with <CR><LF>.<CR><LF>")
}

impl Session {
    pub(super) async fn data(&mut self) -> Next {
        let Some(txn) = self.txn.as_ref() else {
            if self.refused_sender.is_some() {
                // MAIL ahead, then refused by the provider: no recipient stands.
                return self.decline(Refusal::NoValidRecipients);
            }
            return self.refuse(Refusal::NeedMailForData);
        };
        if txn.rcpt_commands == 0 {
            return self.refuse(Refusal::NeedRcptForData);
        }
        if txn.forwarded == 0 {
            return self.decline(Refusal::NoValidRecipients);
        }
        if let Route::Spool(spool, _, hold) = &txn.route {
            return match Relay::begin_spool(spool, *hold) {
                Ok(sink) => {
                    self.push(go_ahead());
                    self.start_body(sink)
                }
                Err(r) => self.decline(r),
            };
        }
        if let Route::Outbox(ob) = &txn.route {
            return match Relay::begin_outbox(ob, &txn.id) {
                Ok(sink) => {
                    self.push(go_ahead());
                    self.start_body(sink)
                }
                Err(r) => self.decline(r),
            };
        }
        let fallback = matches!(txn.route, Route::Fallback(..));
        // Every RCPT already answered and none accepted: no DATA upstream at all.
        if !Relay::pending(&self.replies) && txn.accepted.is_empty() {
            if fallback && !txn.spool_rcpts.is_empty() {
                self.push(Refusal::Internal.reply());
                return self.body_to_spool();
            }
            return self.decline(Refusal::NoValidRecipients);
        }
        // BDAT toward a CHUNKING provider; a fallback transaction keeps DATA
        // (its body is copied to the spool while it streams).
        if !fallback && self.relay.chunking() {
            return self.data_chunked().await;
        }
        // DATA ahead: every RCPT was answered and one accepted (so the client
        // waits for each reply): our 354 now, the provider's before the body.
        if !fallback && !Relay::pending(&self.replies) {
            if !self.relay.data_ahead().await {
                self.end_txn_refused(&Refusal::UpstreamLost);
                return self.decline(Refusal::UpstreamLost);
            }
            self.push(go_ahead());
            return self.start_body(Sink::Provider);
        }
        // MAIL, RCPTs and DATA go upstream together; the replies come back in order.
        if !self.relay.data(&mut self.replies) {
            if fallback {
                self.push(Refusal::Internal.reply());
                return self.body_to_spool();
            }
            self.end_txn_refused(&Refusal::UpstreamLost);
            return self.decline(Refusal::UpstreamLost);
        }
        let reply = self.drain().await;
        let (accepted, spooled, now_spool) = self.txn.as_ref().map_or((0, 0, false), |t| {
            (
                t.accepted.len(),
                t.spool_rcpts.len(),
                matches!(t.route, Route::Spool(..)),
            )
        });
        if fallback && self.txn.is_some() {
            // The provider is out of it (lost, or put the transaction off), or
            // it would take the message for none of the recipients left.
            let put_off = reply
                .as_ref()
                .is_none_or(|r| r.class() == 4 || (accepted == 0 && r.code != 354));
            if now_spool || (accepted + spooled > 0 && put_off) || (accepted == 0 && spooled > 0) {
                return self.body_to_spool();
            }
        }
        match reply {
            Some(r) if r.code == 354 && accepted > 0 => {
                // Replace the upstream's 354 with our own words; same meaning.
                if let Some(Slot::Ready(last)) = self.replies.back_mut() {
                    *last = go_ahead();
                }
                let sink = match self.txn.as_ref().map(|t| &t.route) {
                    Some(Route::Fallback(_, spool)) => Relay::begin_tee(spool),
                    _ => Sink::Provider,
                };
                self.start_body(sink)
            }
            Some(r) if r.code == 354 => {
                // The upstream would take a message with no recipient: refuse it here.
                self.relay.drop_connection();
                self.end_txn_refused(&Refusal::NoValidRecipients);
                if let Some(Slot::Ready(last)) = self.replies.back_mut() {
                    *last = Refusal::NoValidRecipients.reply();
                }
                Next::Continue
            }
            Some(r) => {
                // The provider refused DATA.
                let name = self.txn.as_ref().map(|t| t.upstream.name.clone());
                let shown = name.map_or_else(|| r.clone(), |n| from_upstream(&n, &r));
                self.end_txn(upstream_result(&r), &shown);
                Next::Continue
            }
            None => {
                // Lost before DATA was answered (`drain` recorded a MAIL refusal).
                self.end_txn_refused(&Refusal::UpstreamLost);
                Next::Continue
            }
        }
    }

    /// Fallback: the body goes to the spool alone. The provider connection is
    /// closed (abandoning its transaction) and the last queued reply, the one
    /// to DATA, becomes our 354, or the refusal when the spool cannot take it.
    fn body_to_spool(&mut self) -> Next {
        self.relay.drop_connection();
        let Some(txn) = self.txn.as_mut() else {
            return Next::Continue;
        };
        let Some(route) = txn
            .route
            .spool_instead()
            .or_else(|| Some(txn.route.clone()))
        else {
            return Next::Continue;
        };
        txn.route = route;
        let Route::Spool(spool, _, hold) = &txn.route else {
            return Next::Continue;
        };
        match Relay::begin_spool(spool, *hold) {
            Ok(sink) => {
                if let Some(Slot::Ready(last)) = self.replies.back_mut() {
                    *last = go_ahead();
                }
                self.start_body(sink)
            }
            Err(r) => {
                if let Some(Slot::Ready(last)) = self.replies.back_mut() {
                    *last = r.reply();
                }
                self.end_txn_refused(&r);
                Next::Continue
            }
        }
    }

    /// DATA toward a provider that offers CHUNKING: no DATA goes upstream; the
    /// body goes in BDAT chunks after our own 354. With one recipient still
    /// unanswered, the transaction is deferred (MAIL, RCPT and the body leave in
    /// one flight, the provider's verdicts come at end-of-data); otherwise the
    /// RCPT replies are the provider's, read before the 354.
    async fn data_chunked(&mut self) -> Next {
        let single = self
            .txn
            .as_ref()
            .is_some_and(|t| t.forwarded == 1 && t.accepted.is_empty());
        if single && self.relay.can_defer(&self.replies) {
            self.relay.defer(&mut self.replies);
            self.push(go_ahead());
            return self.start_body(Sink::Provider);
        }
        self.drain().await;
        let Some(txn) = self.txn.as_ref() else {
            // `drain` ended the transaction: the provider refused MAIL, or the
            // connection was lost (and it recorded which).
            let r = if self.refused_sender.is_some() {
                // MAIL ahead: its RCPTs carried the refusal.
                Refusal::NoValidRecipients
            } else if self.relay.chunking() {
                Refusal::NeedMailForData
            } else {
                Refusal::UpstreamLost
            };
            self.push(r.reply());
            return Next::Continue;
        };
        if txn.accepted.is_empty() {
            return self.decline(Refusal::NoValidRecipients);
        }
        if !self.relay.begin_chunks() {
            self.end_txn_refused(&Refusal::UpstreamLost);
            return self.decline(Refusal::UpstreamLost);
        }
        self.push(go_ahead());
        self.start_body(Sink::Provider)
    }

    /// Enters the DATA phase; the 354 is queued and goes out first.
    fn start_body(&mut self, sink: Sink) -> Next {
        let Some(txn) = self.txn.take() else {
            return Next::Continue;
        };
        let rewrite = self
            .sender_identity()
            .filter(|u| u.rewrite_header_from)
            .and_then(|u| u.rewrite_sender.clone());
        let headers = if rewrite.is_some() {
            Headers::Collect(Vec::new())
        } else {
            Headers::Pass
        };
        self.phase = Phase::Data(Box::new(Body {
            rx: Receiver::new(txn.max_size),
            txn,
            headers,
            rewrite,
            sink,
            fault: None,
        }));
        Next::Flush
    }

    /// Feeds the buffered input to the DATA framer. `None` when all of it was
    /// taken and more is needed; after end-of-data, the reply is queued.
    pub(super) async fn body_input(&mut self) -> Option<Next> {
        let Phase::Data(mut body) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return Some(Next::Continue);
        };
        // `rbuf` is taken out while a batch of lines is handled, and cut once per
        // batch: draining it line by line would move the buffer for every line.
        let mut buf = std::mem::take(&mut self.conn.rbuf);
        let mut pos = 0;
        let end = loop {
            match body.rx.step(&buf[pos..]) {
                Step::Need => {
                    buf.drain(..pos);
                    self.conn.rbuf = buf;
                    self.phase = Phase::Data(body);
                    return None;
                }
                Step::Skip { consumed } => pos += consumed,
                Step::Content {
                    start,
                    len,
                    consumed,
                } => {
                    if body.fault.is_none() {
                        let line = &buf[pos + start..pos + start + len];
                        if let Err(f) = self.deliver_line(&mut body, line).await {
                            body.fault = Some(f);
                        }
                    }
                    pos += consumed;
                }
                Step::End { consumed, result } => {
                    buf.drain(..pos + consumed);
                    self.conn.rbuf = buf;
                    break result;
                }
            }
        };
        let seen = body.rx.size();
        let reply = self.end_of_data(*body, end, seen).await;
        self.push(reply);
        Some(Next::Continue)
    }

    /// Passes one content line on, through the header rewriter when it is on.
    pub(super) async fn deliver_line(
        &mut self,
        body: &mut Body,
        line: &[u8],
    ) -> Result<(), Refusal> {
        if let (Headers::Collect(h), Some(from)) = (&mut body.headers, body.rewrite.as_deref()) {
            if line == b"\r\n" {
                let mut out = header::rewrite_from(h, from);
                out.extend_from_slice(b"\r\n");
                body.headers = Headers::Pass;
                return self.relay.write(&mut body.sink, &out).await;
            }
            if h.len() + line.len() > header::MAX_HEADER_SECTION {
                return Err(Refusal::HeaderTooLarge);
            }
            h.extend_from_slice(line);
            return Ok(());
        }
        self.relay.write(&mut body.sink, line).await
    }

    /// End-of-data: the final reply for the client, counted and logged once.
    /// `seen` is the size recorded for a refused message.
    pub(super) async fn end_of_data(
        &mut self,
        mut body: Body,
        end: Result<u64, DataError>,
        seen: u64,
    ) -> Reply {
        // `relay_ms` runs from here, the client's final dot, not from the 354.
        let end_of_data = Instant::now();
        let size = match end {
            Ok(size) => size,
            Err(e) => {
                body.fault.get_or_insert(Refusal::Data(e));
                seen
            }
        };
        if body.fault.is_none()
            && let (Headers::Collect(h), Some(from)) = (&mut body.headers, body.rewrite.as_deref())
        {
            // A message that is all header: rewrite what there is.
            let rewritten = header::rewrite_from(&std::mem::take(h), from);
            if let Err(f) = self.relay.write(&mut body.sink, &rewritten).await {
                body.fault = Some(f);
            }
        }
        let user = self.user_label();
        let metrics = self.shared.metrics.clone();
        let txn = &body.txn;
        if txn.size_capped_by_fallback
            && matches!(body.fault, Some(Refusal::Data(DataError::TooBig)))
        {
            // Too big for the fallback the transaction failed over to, not
            // for the user's own upstream: a temporary failure.
            body.fault = Some(Refusal::UpstreamSetup {
                upstream: txn.upstream.name.clone(),
                failure: crate::refusal::SetupFailure::Unavailable,
            });
        }
        if let Some(fault) = body.fault {
            self.relay.abort(body.sink);
            self.count_limit(&fault);
            let reply = fault.reply();
            let mut record = Record::of(txn, fault.message_result(), Some(&reply));
            record.size = Some(size);
            self.record(&record);
            return reply;
        }
        let finished = Finished {
            upstream: &txn.upstream.name,
            user: &user,
            client_from: &txn.client_from,
            sender: &txn.sender,
            recipients: &txn.accepted,
            spool_recipients: &txn.spool_rcpts,
            ret: txn.mail.params.ret,
            envid: txn.mail.params.envid.as_deref(),
            rcpt_dsn: &txn.rcpt_dsn,
            size,
            smtputf8: txn.mail.params.smtputf8,
            body: txn.mail.params.body,
        };
        let (reply, result, late) = self.relay.finish(body.sink, &finished).await;
        body.txn.accepted.extend(late);
        let txn = &body.txn;
        let relay = end_of_data.elapsed();
        metrics
            .relay_duration
            .with_label_values(&[&txn.upstream.name])
            .observe(relay.as_secs_f64());
        if result == "accepted" || result == "spooled" {
            metrics
                .message_bytes
                .with_label_values(&[&user])
                .inc_by(size);
        }
        let mut record = Record::of(txn, result, Some(&reply));
        record.size = Some(size);
        record.relay = Some(relay);
        self.record(&record);
        reply
    }
}
