//! DATA: the 354, the body streamed to the upstream (or the outbox) line by line
//! in large writes, and the final reply, which is the upstream's own: the client
//! hears 250 only after the upstream said 250 or the outbox file is durable.
//!
//! A message that is refused (bare CR/LF, over-long line, too big) or whose
//! upstream failed is read to its end-of-data and then refused; its upstream
//! transaction is abandoned by closing the connection without the final dot
//! (RFC 5321 §4.1.1.10), so nothing half-sent is ever delivered.

use std::time::Instant;

use super::{Expect, Next, Session, Slot, Txn};
use crate::config::UpstreamKind;
use crate::smtp::data::{self, DataError, Receiver, Step};
use crate::smtp::header;
use crate::smtp::reply::Reply;
use crate::upstream::UpstreamError;
use crate::upstream::client::DATA_END_TIMEOUT;
use crate::upstream::outbox::{self, Envelope, Spool};

/// Where the body goes.
enum Sink {
    Upstream,
    Outbox(Spool),
}

/// Header collection for `rewrite_header_from`.
enum Headers {
    /// Pass lines through untouched.
    Pass,
    /// Collecting the header section; rewritten at the empty line.
    Collect(Vec<u8>),
}

/// Why a message in DATA cannot be delivered.
enum Fault {
    Data(DataError),
    HeaderTooLarge,
    Upstream(UpstreamError),
}

impl Session {
    pub(super) async fn data(&mut self) -> Next {
        let Some(txn) = self.txn.as_ref() else {
            self.push(Reply::new(503, "5.5.1", "Need MAIL before DATA"));
            return self.count_error();
        };
        if txn.rcpt_commands == 0 {
            self.push(Reply::new(503, "5.5.1", "Need RCPT before DATA"));
            return self.count_error();
        }
        if txn.forwarded == 0 {
            self.push(Reply::new(554, "5.5.1", "No valid recipients"));
            return Next::Continue;
        }
        if txn.upstream.kind == UpstreamKind::Outbox {
            let Some(ob) = txn.upstream.outbox.as_ref() else {
                self.push(Reply::new(451, "4.3.0", "Outbox not available"));
                return Next::Continue;
            };
            return match ob.begin() {
                Ok(spool) => {
                    self.push(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"));
                    self.spool = Some(spool);
                    Next::Data
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox: cannot create a message file");
                    self.push(Reply::new(
                        451,
                        "4.3.0",
                        "Local error in processing; try again later",
                    ));
                    Next::Continue
                }
            };
        }
        // Every RCPT already answered and none accepted: no DATA upstream at all.
        let pending = self.slots.iter().any(|s| matches!(s, Slot::Upstream(_)));
        if !pending && self.txn.as_ref().is_some_and(|t| t.accepted.is_empty()) {
            self.push(Reply::new(554, "5.5.1", "No valid recipients"));
            return Next::Continue;
        }
        // MAIL, RCPTs and DATA go upstream together; the replies come back in order.
        match self.client.as_mut() {
            Some(c) => c.queue("DATA"),
            None => {
                self.txn = None;
                self.push(Reply::new(
                    451,
                    "4.4.2",
                    "Upstream connection lost; try again later",
                ));
                return Next::Continue;
            }
        }
        self.slots.push_back(Slot::Upstream(Expect::Data));
        let reply = self.drain_slots().await;
        let accepted = self.txn.as_ref().map_or(0, |t| t.accepted.len());
        match reply {
            Some(r) if r.code == 354 && accepted > 0 => {
                // Replace the upstream's 354 with our own words; same meaning.
                if let Some(Slot::Ready(last)) = self.slots.back_mut() {
                    *last = Reply::plain(354, "End data with <CR><LF>.<CR><LF>");
                }
                Next::Data
            }
            Some(r) if r.code == 354 => {
                // The upstream would take a message with no recipient: refuse it here.
                self.client = None;
                self.txn = None;
                if let Some(Slot::Ready(last)) = self.slots.back_mut() {
                    *last = Reply::new(554, "5.5.1", "No valid recipients");
                }
                Next::Continue
            }
            _ => {
                self.txn = None;
                Next::Continue
            }
        }
    }

    /// Receives the body after the 354 has been written. Returns `Close` if the client went away.
    pub(super) async fn receive_data(&mut self) -> std::io::Result<Next> {
        let Some(txn) = self.txn.take() else {
            return Ok(Next::Continue);
        };
        let user = self.user_label();
        let rewrite = self
            .sender_identity()
            .filter(|u| u.rewrite_header_from)
            .and_then(|u| u.rewrite_sender.clone());
        let mut headers = if rewrite.is_some() {
            Headers::Collect(Vec::new())
        } else {
            Headers::Pass
        };
        let mut sink = match self.spool.take() {
            Some(s) => Sink::Outbox(s),
            None => Sink::Upstream,
        };
        let mut rx = Receiver::new(txn.max_size);
        let mut fault: Option<Fault> = None;
        let started = Instant::now();
        // `rbuf` is taken out while a batch of lines is handled, and cut once per
        // batch: draining it line by line would move the buffer for every line.
        let mut buf = std::mem::take(&mut self.rbuf);
        let mut pos = 0;
        let size = loop {
            match rx.step(&buf[pos..]) {
                Step::Need => {
                    buf.drain(..pos);
                    pos = 0;
                    self.rbuf = std::mem::take(&mut buf);
                    if !self.fill(false).await? {
                        self.abort_sink(sink);
                        return Ok(Next::Close);
                    }
                    buf = std::mem::take(&mut self.rbuf);
                }
                Step::Skip { consumed } => pos += consumed,
                Step::Content {
                    start,
                    len,
                    consumed,
                } => {
                    if fault.is_none() {
                        let line = &buf[pos + start..pos + start + len];
                        if let Err(f) = self
                            .deliver_line(&mut sink, &mut headers, rewrite.as_deref(), line)
                            .await
                        {
                            fault = Some(f);
                        }
                    }
                    pos += consumed;
                }
                Step::End { consumed, result } => {
                    buf.drain(..pos + consumed);
                    self.rbuf = buf;
                    match result {
                        Ok(size) => break size,
                        Err(e) => {
                            fault.get_or_insert(Fault::Data(e));
                            break rx.size();
                        }
                    }
                }
            }
        };
        if fault.is_none()
            && let (Headers::Collect(h), Some(from)) = (&mut headers, rewrite.as_deref())
        {
            // A message that is all header: rewrite what there is.
            let rewritten = header::rewrite_from(&std::mem::take(h), from);
            if let Err(f) = self.write_sink(&mut sink, &rewritten).await {
                fault = Some(f);
            }
        }
        let reply = match fault {
            Some(f) => {
                self.abort_sink(sink);
                let (reply, result) = match f {
                    Fault::Data(DataError::BareLineEnding) => (
                        DataError::BareLineEnding.reply(),
                        "rejected_bare_line_ending",
                    ),
                    Fault::Data(DataError::LineTooLong) => {
                        (DataError::LineTooLong.reply(), "rejected_line_too_long")
                    }
                    Fault::Data(DataError::TooBig) => {
                        self.shared
                            .metrics
                            .limit_hits
                            .with_label_values(&["message_size"])
                            .inc();
                        (DataError::TooBig.reply(), "rejected_too_big")
                    }
                    Fault::HeaderTooLarge => (
                        Reply::new(552, "5.3.4", "Header section too large to rewrite"),
                        "rejected_too_big",
                    ),
                    Fault::Upstream(e) => {
                        tracing::warn!(upstream = %txn.upstream.name, error = %e, "upstream failed during DATA");
                        (
                            Reply::new(
                                451,
                                "4.4.2",
                                "Upstream connection lost during DATA; try again later",
                            ),
                            "upstream_failed",
                        )
                    }
                };
                self.shared
                    .metrics
                    .messages
                    .with_label_values(&[&user, result])
                    .inc();
                tracing::info!(user = %user, upstream = %txn.upstream.name, result, reply = %reply, "message refused");
                reply
            }
            None => self.finish(sink, &txn, &user, size, started).await,
        };
        self.push(reply);
        Ok(Next::Continue)
    }

    /// Passes one content line on, through the header rewriter when it is on.
    async fn deliver_line(
        &mut self,
        sink: &mut Sink,
        headers: &mut Headers,
        rewrite: Option<&str>,
        line: &[u8],
    ) -> Result<(), Fault> {
        if let (Headers::Collect(h), Some(from)) = (&mut *headers, rewrite) {
            if line == b"\r\n" {
                let mut out = header::rewrite_from(h, from);
                out.extend_from_slice(b"\r\n");
                *headers = Headers::Pass;
                return self.write_sink(sink, &out).await;
            }
            if h.len() + line.len() > header::MAX_HEADER_SECTION {
                return Err(Fault::HeaderTooLarge);
            }
            h.extend_from_slice(line);
            return Ok(());
        }
        self.write_sink(sink, line).await
    }

    /// Writes unstuffed content lines to the sink (dot-stuffed again for SMTP).
    async fn write_sink(&mut self, sink: &mut Sink, lines: &[u8]) -> Result<(), Fault> {
        match sink {
            Sink::Outbox(spool) => spool
                .write(lines)
                .map_err(|e| Fault::Upstream(UpstreamError::Outbox(e))),
            Sink::Upstream => {
                let Some(client) = self.client.as_mut() else {
                    return Err(Fault::Upstream(UpstreamError::Closed));
                };
                let buf = client.data_buffer();
                // Usually one line; a rewritten header block is several.
                let mut rest = lines;
                while !rest.is_empty() {
                    let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
                    data::stuff_line(&rest[..end], buf);
                    rest = &rest[end..];
                }
                client.write_data(&[]).await.map_err(Fault::Upstream)
            }
        }
    }

    /// Drops a message that will not be delivered: no final dot upstream (close the
    /// connection), no file in the outbox.
    fn abort_sink(&mut self, sink: Sink) {
        match sink {
            Sink::Outbox(spool) => spool.abort(),
            Sink::Upstream => self.client = None,
        }
    }

    /// End-of-data of a good message: the final dot and the upstream's verdict, or the
    /// outbox commit.
    async fn finish(
        &mut self,
        sink: Sink,
        txn: &Txn,
        user: &str,
        size: u64,
        started: Instant,
    ) -> Reply {
        let upstream = &txn.upstream;
        let metrics = self.shared.metrics.clone();
        let (reply, result) = match sink {
            Sink::Outbox(spool) => {
                let id = spool.id().to_owned();
                let envelope = Envelope {
                    id: &id,
                    user,
                    mail_from: &txn.sender,
                    rcpt_to: &txn.accepted,
                    client_mail_from: &txn.client_from,
                    received_at: outbox::now_secs(),
                    size,
                    smtputf8: txn.mail.params.smtputf8,
                    body: match txn.mail.params.body {
                        Some(crate::smtp::command::Body::EightBitMime) => "8bitmime",
                        _ => "7bit",
                    },
                };
                match spool.commit(&envelope) {
                    Ok(id) => (
                        Reply::new(250, "2.0.0", format!("Queued in outbox as {id}")),
                        "accepted",
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "outbox: cannot store message");
                        (
                            Reply::new(451, "4.3.0", "Local error in processing; try again later"),
                            "outbox_failed",
                        )
                    }
                }
            }
            Sink::Upstream => match self.client.as_mut() {
                None => (
                    Reply::new(451, "4.4.2", "Upstream connection lost; try again later"),
                    "upstream_failed",
                ),
                Some(client) => {
                    client.queue(".");
                    let sent = Instant::now();
                    let r = match client.flush().await {
                        Ok(()) => client.read_reply("DATA_END", sent, DATA_END_TIMEOUT).await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(r) if r.code == 250 => {
                            (super::mail::from_upstream(&upstream.name, &r), "accepted")
                        }
                        Ok(r) if r.code == 421 => {
                            self.client = None;
                            (
                                super::mail::from_upstream(
                                    &upstream.name,
                                    &Reply::new(451, "4.4.2", r.lines.join(" ")),
                                ),
                                "upstream_tempfail",
                            )
                        }
                        Ok(r) if r.class() == 4 => (
                            super::mail::from_upstream(&upstream.name, &r),
                            "upstream_tempfail",
                        ),
                        Ok(r) => (
                            super::mail::from_upstream(&upstream.name, &r),
                            "upstream_rejected",
                        ),
                        Err(e) => {
                            tracing::warn!(upstream = %upstream.name, error = %e, "no reply to end-of-data");
                            self.client = None;
                            (
                                Reply::new(
                                    451,
                                    "4.4.2",
                                    "Upstream did not confirm the message; try again later",
                                ),
                                "upstream_failed",
                            )
                        }
                    }
                }
            },
        };
        metrics
            .relay_duration
            .with_label_values(&[&upstream.name])
            .observe(started.elapsed().as_secs_f64());
        metrics.messages.with_label_values(&[user, result]).inc();
        if result == "accepted" {
            metrics
                .message_bytes
                .with_label_values(&[user])
                .inc_by(size);
        }
        tracing::info!(
            user,
            upstream = %upstream.name,
            recipients = txn.accepted.len(),
            size,
            result,
            reply = %reply,
            "message"
        );
        reply
    }
}
