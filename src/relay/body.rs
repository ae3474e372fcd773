//! The message body's way out: dot-stuffed onto the provider connection (or
//! in BDAT chunks, when it offers CHUNKING), or into an outbox file or a
//! spool entry; and the end of it: the provider's verdict after the final dot
//! or `BDAT n LAST` (with a deferred transaction's MAIL and RCPT verdicts), or
//! the outbox or spool commit.

use super::{Expect, Relay, from_upstream};
use crate::refusal::{Refusal, upstream_result};
use crate::smtp::command::Body as BodyType;
use crate::smtp::reply::Reply;
use crate::spool::{self, Incoming, NewMessage, SpoolError};
use crate::upstream::outbox::{self, Envelope, Spool};

/// Where the body of the message in DATA goes.
pub enum Sink {
    /// The outbox file being written.
    Outbox(Spool),
    /// The spool entry being written (`delivery = "spool"`, or a fallback
    /// spooled before DATA); the flag as `Route::Spool`'s.
    Spool(std::sync::Arc<spool::Spool>, Incoming, bool),
    /// The kept provider connection, after its 354.
    Provider,
    /// Fallback: the provider connection and a spool entry written alongside
    /// (not synced), kept only if the provider does not take the message.
    /// `None` once the spool write failed; `false` once the provider failed.
    Tee(std::sync::Arc<spool::Spool>, Option<Incoming>, bool),
}

/// The envelope of a finished message.
pub struct Finished<'a> {
    pub upstream: &'a str,
    pub user: &'a str,
    pub client_from: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    /// Fallback: recipients the provider put off, for the spool.
    pub spool_recipients: &'a [String],
    pub size: u64,
    pub smtputf8: bool,
    pub body: Option<BodyType>,
    /// DSN parameters of MAIL and of the RCPTs that had any, kept in the spool.
    pub ret: Option<crate::smtp::command::Ret>,
    pub envid: Option<&'a str>,
    pub rcpt_dsn: &'a [(String, crate::smtp::command::RcptParams)],
}

impl Relay {
    /// Starts an outbox message (after the outbox route's DATA) under the transaction's id.
    ///
    /// # Errors
    /// `LocalError` when the file cannot be created.
    pub fn begin_outbox(ob: &outbox::Outbox, id: &str) -> Result<Sink, Refusal> {
        ob.begin_as(id).map(Sink::Outbox).map_err(|e| {
            tracing::error!(error = %e, "outbox: cannot create a message file");
            Refusal::LocalError
        })
    }

    /// Starts a spool entry (after the spool route's DATA).
    ///
    /// # Errors
    /// `SpoolFull` over `max_size` or on a full disk, `LocalError` otherwise.
    pub fn begin_spool(s: &std::sync::Arc<spool::Spool>, hold: bool) -> Result<Sink, Refusal> {
        s.begin()
            .map(|inc| Sink::Spool(s.clone(), inc, hold))
            .map_err(spool_refusal)
    }

    /// The sink of a fallback message going to the provider: the provider and a
    /// spool copy. Without room in the spool, the provider alone.
    pub fn begin_tee(s: &std::sync::Arc<spool::Spool>) -> Sink {
        let inc = s
            .begin()
            .map_err(|e| tracing::warn!(error = %e, "spool: no copy of this relayed message"))
            .ok();
        Sink::Tee(s.clone(), inc, true)
    }

    /// Writes unstuffed content lines to the sink.
    ///
    /// # Errors
    /// The refusal the message gets: a disk error is postern's own, a write
    /// error toward the provider loses the transaction.
    pub async fn write(&mut self, sink: &mut Sink, lines: &[u8]) -> Result<(), Refusal> {
        match sink {
            Sink::Outbox(spool) => spool.write(lines).map_err(|e| {
                tracing::error!(error = %e, "outbox: cannot write the message");
                Refusal::LocalError
            }),
            Sink::Spool(_, inc, _) => inc.write(lines).map_err(spool_refusal),
            Sink::Tee(_, inc, provider) => {
                if let Some(i) = inc
                    && let Err(e) = i.write(lines)
                {
                    tracing::warn!(error = %e, "spool: cannot keep a copy of a relayed message");
                    if let Some(i) = inc.take() {
                        i.abort();
                    }
                }
                if *provider {
                    let ok = match self.kept.as_mut() {
                        Some((_, client)) => client.write_body(lines).await.map_err(|e| {
                            tracing::warn!(upstream = %client.name(), error = %e, "upstream failed during DATA; the spool keeps the message");
                        }).is_ok(),
                        None => false,
                    };
                    if !ok {
                        *provider = false;
                        self.kept = None;
                    }
                }
                if !*provider && inc.is_none() {
                    return Err(Refusal::UpstreamLostInData);
                }
                Ok(())
            }
            Sink::Provider => {
                let Some((_, client)) = self.kept.as_mut() else {
                    return Err(Refusal::UpstreamLostInData);
                };
                client.write_body(lines).await.map_err(|e| {
                    tracing::warn!(upstream = %client.name(), error = %e, "upstream failed during DATA");
                    Refusal::UpstreamLostInData
                })
            }
        }
    }

    /// Drops a message that will not be delivered: no final dot upstream (close the
    /// connection), no file in the outbox.
    pub fn abort(&mut self, sink: Sink) {
        match sink {
            Sink::Outbox(spool) => spool.abort(),
            Sink::Spool(_, inc, _) => inc.abort(),
            Sink::Provider => self.drop_connection(),
            Sink::Tee(_, inc, _) => {
                if let Some(i) = inc {
                    i.abort();
                }
                self.kept = None;
            }
        }
    }

    /// End-of-data of a good message: the final dot (or `BDAT n LAST`) and the
    /// provider's verdict, or the outbox commit. Returns the client's reply, the
    /// `result` word, and the recipients a deferred transaction's provider accepted.
    pub async fn finish(
        &mut self,
        sink: Sink,
        m: &Finished<'_>,
    ) -> (Reply, &'static str, Vec<String>) {
        if matches!(sink, Sink::Provider) && self.kept.as_ref().is_some_and(|(_, c)| c.in_chunks())
        {
            return self.finish_chunks(m.user).await;
        }
        let (reply, result) = self.finish_data(sink, m).await;
        (reply, result, Vec::new())
    }

    async fn finish_data(&mut self, sink: Sink, m: &Finished<'_>) -> (Reply, &'static str) {
        match sink {
            Sink::Outbox(spool) => {
                let id = spool.id().to_owned();
                let envelope = Envelope {
                    id: &id,
                    user: m.user,
                    mail_from: m.sender,
                    rcpt_to: m.recipients,
                    client_mail_from: m.client_from,
                    received_at: outbox::now_secs(),
                    size: m.size,
                    smtputf8: m.smtputf8,
                    body: match m.body {
                        Some(BodyType::EightBitMime) => "8bitmime",
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
                        (Refusal::LocalError.reply(), "outbox_failed")
                    }
                }
            }
            Sink::Spool(s, inc, hold) => {
                let all: Vec<String> = m
                    .recipients
                    .iter()
                    .chain(m.spool_recipients)
                    .cloned()
                    .collect();
                spool_commit(&s, inc, m, &all, hold).await
            }
            Sink::Tee(s, inc, provider) => self.finish_tee(s, inc, provider, m).await,
            Sink::Provider => {
                let Some((_, client)) = self.kept.as_mut() else {
                    return (Refusal::UpstreamLost.reply(), "upstream_failed");
                };
                let name = client.name().clone();
                match client.end_body().await {
                    Ok(r) => {
                        let (reply, result, closing) = verdict(&name, &r);
                        // A refused DATA leaves the provider's transaction open.
                        if closing || client.data_was_refused() {
                            self.kept = None;
                        }
                        (reply, result)
                    }
                    Err(e) => {
                        tracing::warn!(upstream = %name, error = %e, "no reply to end-of-data");
                        self.kept = None;
                        (Refusal::UpstreamUnconfirmed.reply(), "upstream_failed")
                    }
                }
            }
        }
    }
}

impl Relay {
    /// End of a body sent in BDAT chunks: `BDAT n LAST`, the replies owed, and
    /// the verdict: a deferred MAIL's or RCPT's refusal if there was one (the
    /// same code, enhanced code and text the client would have heard at RCPT),
    /// else the provider's answer to the body. A connection lost before any
    /// answer is 451 and nothing is taken as accepted; a reused one that was
    /// cut before its one flight was answered is replaced and the flight sent again.
    async fn finish_chunks(&mut self, user: &str) -> (Reply, &'static str, Vec<String>) {
        let deferred = std::mem::take(&mut self.deferred);
        let Some((pool, client)) = self.kept.as_mut() else {
            return (Refusal::UpstreamLost.reply(), "upstream_failed", Vec::new());
        };
        let name = client.name().clone();
        let metrics = pool.dial().metrics.clone();
        let mut end = client.end_chunks().await;
        let starts_fresh = deferred.iter().any(|e| matches!(e, Expect::Mail));
        if matches!(
            end,
            Err(crate::upstream::UpstreamError::Closed | crate::upstream::UpstreamError::Io(_))
        ) && starts_fresh
            && client.was_used()
            && client.chunks_replayable()
        {
            tracing::info!("kept upstream connection was closed; replaying on a new one");
            let state = client.take_chunks();
            end = match self.replace().await {
                Ok(()) => match (self.kept.as_mut(), state) {
                    (Some((_, fresh)), Some(state)) => {
                        fresh.put_chunks(state);
                        fresh.collect_chunks().await
                    }
                    _ => Err(crate::upstream::UpstreamError::Closed),
                },
                Err(e) => Err(e),
            };
        }
        let end = match end {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(upstream = %name, error = %e, "no reply to end-of-data (BDAT)");
                self.drop_connection();
                for e in &deferred {
                    if matches!(e, Expect::Rcpt(_)) {
                        metrics
                            .recipients
                            .with_label_values(&[user, "upstream_failed"])
                            .inc();
                    }
                }
                return (
                    Refusal::UpstreamUnconfirmed.reply(),
                    "upstream_failed",
                    Vec::new(),
                );
            }
        };
        if !end.reusable {
            self.drop_connection();
        }
        let mut accepted = Vec::new();
        let mut refused: Option<Reply> = None;
        for (expect, reply) in deferred.into_iter().zip(end.lead) {
            match expect {
                Expect::Mail | Expect::MailAhead if !reply.is_positive() => {
                    refused.get_or_insert(reply);
                }
                Expect::Rcpt(path) => {
                    let result = upstream_result(&reply);
                    metrics.recipients.with_label_values(&[user, result]).inc();
                    if reply.is_positive() {
                        if refused.is_none() {
                            accepted.push(path);
                        }
                    } else {
                        let text = from_upstream(&name, &reply).to_string();
                        tracing::info!(
                            user,
                            upstream = &*name,
                            result,
                            reply = text.as_str(),
                            "recipient refused"
                        );
                        refused.get_or_insert(reply);
                    }
                }
                Expect::Mail | Expect::MailAhead | Expect::Silent | Expect::Data => {}
            }
        }
        let Some(reply) = refused.or(end.verdict) else {
            self.drop_connection();
            return (
                Refusal::UpstreamUnconfirmed.reply(),
                "upstream_failed",
                Vec::new(),
            );
        };
        let (shown, result, closing) = verdict(&name, &reply);
        if closing {
            self.drop_connection();
        }
        if result != "accepted" {
            accepted.clear();
        }
        (shown, result, accepted)
    }
}

/// The client's reply and the `result` word for the provider's verdict on a
/// message, and whether the provider is closing the connection (421).
fn verdict(name: &str, r: &Reply) -> (Reply, &'static str, bool) {
    match r.code {
        250 => (from_upstream(name, r), "accepted", false),
        421 => (
            from_upstream(name, &Reply::new(451, "4.4.2", r.lines.join(" "))),
            "upstream_tempfail",
            true,
        ),
        _ if r.class() == 4 => (from_upstream(name, r), "upstream_tempfail", false),
        _ => (from_upstream(name, r), "upstream_rejected", false),
    }
}

impl Relay {
    /// End of a fallback message that went to the provider and the spool: the
    /// provider's 250 keeps the spool copy only for the recipients it put off;
    /// its 4xx, a timeout or a lost connection keep it for everyone; its 5xx
    /// is passed back.
    async fn finish_tee(
        &mut self,
        s: std::sync::Arc<spool::Spool>,
        inc: Option<Incoming>,
        provider: bool,
        m: &Finished<'_>,
    ) -> (Reply, &'static str) {
        let verdict = match (provider, self.kept.as_mut()) {
            (true, Some((_, client))) => {
                let name = client.name().clone();
                match client.end_body().await {
                    Ok(r) if r.code == 421 => {
                        self.kept = None;
                        Err(format!("{name}: {r}"))
                    }
                    Ok(r) if r.class() == 4 => Err(format!("{name}: {r}")),
                    Ok(r) => Ok((name, r)),
                    Err(e) => {
                        self.kept = None;
                        Err(format!("{name}: no reply to end-of-data: {e}"))
                    }
                }
            }
            _ => Err("provider connection lost during DATA".to_owned()),
        };
        match verdict {
            Ok((name, r)) if r.code == 250 => {
                let reply = from_upstream(&name, &r);
                match inc {
                    Some(inc) if !m.spool_recipients.is_empty() => {
                        let (spooled, _) =
                            spool_commit(&s, inc, m, m.spool_recipients, false).await;
                        if spooled.code == 250 {
                            (reply, "accepted")
                        } else {
                            // The put-off recipients would be lost: the device sends again.
                            (Refusal::LocalError.reply(), "outbox_failed")
                        }
                    }
                    Some(inc) => {
                        inc.abort();
                        (reply, "accepted")
                    }
                    None if m.spool_recipients.is_empty() => (reply, "accepted"),
                    None => (Refusal::LocalError.reply(), "outbox_failed"),
                }
            }
            Ok((name, r)) => {
                if let Some(inc) = inc {
                    inc.abort();
                }
                (from_upstream(&name, &r), "upstream_rejected")
            }
            Err(why) => {
                let Some(inc) = inc else {
                    return (Refusal::UpstreamUnconfirmed.reply(), "upstream_failed");
                };
                tracing::info!(reason = %why, "provider did not take the message; it goes to the spool");
                let all: Vec<String> = m
                    .recipients
                    .iter()
                    .chain(m.spool_recipients)
                    .cloned()
                    .collect();
                spool_commit(&s, inc, m, &all, false).await
            }
        }
    }
}

/// Commits a spool entry for `recipients`: `250 Queued as <id>`, or the
/// refusal. `hold`: spool mode, where the message is expected to go at once
/// (fallback spools what the provider could not take now: it waits).
async fn spool_commit(
    s: &spool::Spool,
    inc: Incoming,
    m: &Finished<'_>,
    recipients: &[String],
    hold: bool,
) -> (Reply, &'static str) {
    let body = match m.body {
        Some(BodyType::EightBitMime) => "8bitmime",
        _ => "7bit",
    };
    let msg = NewMessage {
        upstream: m.upstream,
        user: m.user,
        mail_from: m.sender,
        client_mail_from: m.client_from,
        recipients,
        smtputf8: m.smtputf8,
        body,
        notice: false,
        ret: m.ret,
        envid: m.envid,
        rcpt_dsn: m.rcpt_dsn,
        hold,
    };
    match s.commit(inc, &msg).await {
        Ok(id) => (
            Reply::new(250, "2.0.0", format!("Queued as {id}")),
            "spooled",
        ),
        Err(e) => {
            let r = spool_refusal(e);
            (r.reply(), r.message_result())
        }
    }
}

/// The refusal for a spool failure: a full spool or disk is 452 4.3.1.
fn spool_refusal(e: SpoolError) -> Refusal {
    match e {
        SpoolError::Full => {
            tracing::warn!("spool full: message refused with 452");
            Refusal::SpoolFull
        }
        SpoolError::Io(e) => {
            tracing::error!(error = %e, "spool: cannot store the message");
            Refusal::LocalError
        }
    }
}
