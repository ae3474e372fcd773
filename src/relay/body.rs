//! The message body's way out: dot-stuffed onto the provider connection, or
//! into an outbox file; and the end of it: the provider's verdict after the
//! final dot, or the outbox commit.

use super::{Relay, from_upstream};
use crate::refusal::Refusal;
use crate::smtp::command::Body as BodyType;
use crate::smtp::reply::Reply;
use crate::upstream::outbox::{self, Envelope, Spool};

/// Where the body of the message in DATA goes.
pub enum Sink {
    /// The outbox file being written.
    Outbox(Spool),
    /// The kept provider connection, after its 354.
    Provider,
}

/// The envelope of a finished message.
pub struct Finished<'a> {
    pub user: &'a str,
    pub client_from: &'a str,
    pub sender: &'a str,
    pub recipients: &'a [String],
    pub size: u64,
    pub smtputf8: bool,
    pub body: Option<BodyType>,
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
            Sink::Provider => self.kept = None,
        }
    }

    /// End-of-data of a good message: the final dot and the provider's verdict,
    /// or the outbox commit. Returns the client's reply and the `result` word.
    pub async fn finish(&mut self, sink: Sink, m: &Finished<'_>) -> (Reply, &'static str) {
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
            Sink::Provider => {
                let Some((_, client)) = self.kept.as_mut() else {
                    return (Refusal::UpstreamLost.reply(), "upstream_failed");
                };
                let name = client.name().clone();
                match client.end_body().await {
                    Ok(r) if r.code == 250 => (from_upstream(&name, &r), "accepted"),
                    Ok(r) if r.code == 421 => {
                        self.kept = None;
                        (
                            from_upstream(&name, &Reply::new(451, "4.4.2", r.lines.join(" "))),
                            "upstream_tempfail",
                        )
                    }
                    Ok(r) if r.class() == 4 => (from_upstream(&name, &r), "upstream_tempfail"),
                    Ok(r) => (from_upstream(&name, &r), "upstream_rejected"),
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
