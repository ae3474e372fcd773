//! One delivery transaction of a spooled message: the commands a worker
//! sends for a batch of its recipients, the body, and what each reply means
//! for each recipient.

use std::sync::Arc;

use tokio::time::Instant;

use super::super::store::{Rcpt, Record};
use crate::smtp::reply::Reply;
use crate::upstream::UpstreamError;
use crate::upstream::client::{COMMAND_TIMEOUT, Client};
use crate::upstream::pool::Pool;

/// Body bytes handed to the client per write.
const BODY_CHUNK: usize = 64 * 1024;

/// What one recipient's attempt came to.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Done(String),
    Temporary(String),
    Permanent(String),
}

/// What one upstream transaction came to.
pub(super) struct Transaction {
    pub(super) outcomes: Vec<Outcome>,
    /// `postern_delivery_attempts_total` result word.
    pub(super) result: &'static str,
}

/// `MAIL FROM` for a stored record, with what the upstream understands.
fn mail_line(record: &Record, client: &Client) -> String {
    let caps = client.caps();
    let mut line = format!("MAIL FROM:<{}>", record.mail_from);
    if caps.size.is_some() {
        line.push_str(&format!(" SIZE={}", record.size));
    }
    if caps.eightbitmime && record.body == "8bitmime" {
        line.push_str(" BODY=8BITMIME");
    }
    if record.smtputf8 && caps.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        // Stored as the session validated them (RET a keyword, ENVID xtext).
        if let Some(ret) = record
            .ret
            .as_deref()
            .filter(|r| matches!(*r, "FULL" | "HDRS"))
        {
            line.push_str(&format!(" RET={ret}"));
        }
        if let Some(envid) = &record.envid {
            line.push_str(&format!(" ENVID={envid}"));
        }
    }
    line
}

/// `RCPT TO` for a stored recipient, with its DSN parameters when the upstream has DSN.
fn rcpt_line(r: &Rcpt, client: &Client) -> String {
    let mut line = format!("RCPT TO:<{}>", r.address);
    if client.caps().dsn {
        if let Some(n) = &r.notify {
            line.push_str(&format!(" NOTIFY={n}"));
        }
        if let Some(o) = &r.orcpt {
            line.push_str(&format!(" ORCPT={o}"));
        }
    }
    line
}

fn text(reply: &Reply) -> String {
    reply.to_string()
}

fn classify(reply: &Reply) -> Outcome {
    match reply.class() {
        2 => Outcome::Done(text(reply)),
        5 => Outcome::Permanent(text(reply)),
        _ => Outcome::Temporary(text(reply)),
    }
}

/// The upstream transactions for `batch`, on a connection of `pool` or of the
/// `fallback` upstream it fails over to: one, or several when that fallback
/// takes fewer recipients per message (its own `max_recipients`); none
/// tried, and every recipient put off, when the message is larger than the
/// fallback takes. `None` when no connection was free (nothing was tried).
pub(super) async fn transact(
    pool: &Arc<Pool>,
    record: &Record,
    batch: &[Rcpt],
    content: &[u8],
) -> Option<Vec<Transaction>> {
    let all = |o: Outcome, result, n| Transaction {
        outcomes: vec![o; n],
        result,
    };
    let (pool, c) = match pool.checkout_failover(&record.mail_from, None).await {
        Ok(taken) => taken,
        Err(UpstreamError::PoolTimeout) => return None,
        Err(e) => return Some(vec![all(temporary(&e), "error", batch.len())]),
    };
    let pool = &pool;
    if record.smtputf8 && !c.caps().smtputf8 {
        pool.checkin(c);
        return Some(vec![all(
            Outcome::Permanent("upstream does not support SMTPUTF8".into()),
            "rejected",
            batch.len(),
        )]);
    }
    if let Some(max) = pool.max_message_size().filter(|&m| record.size > m) {
        // Only a fallback can be smaller than the message: the session kept
        // to its own upstream's cap. The upstream itself may take it later.
        pool.checkin(c);
        let why = format!(
            "upstream {}: the message ({} bytes) is larger than its max_message_size ({max})",
            pool.dial().name,
            record.size
        );
        return Some(vec![all(Outcome::Temporary(why), "deferred", batch.len())]);
    }
    let per = pool
        .max_recipients()
        .map_or(batch.len(), |m| m.max(1) as usize)
        .max(1);
    let mut out = Vec::new();
    let mut conn = Some(c);
    for part in batch.chunks(per) {
        let c = match conn.take() {
            Some(c) => c,
            None => match pool.checkout().await {
                Ok(c) => c,
                Err(e) => {
                    out.push(all(temporary(&e), "error", part.len()));
                    continue;
                }
            },
        };
        let (t, clean) = one_transaction(pool, c, record, part, content).await;
        out.push(t);
        conn = clean;
    }
    if let Some(c) = conn {
        pool.checkin(c);
    }
    Some(out)
}

fn temporary(e: &UpstreamError) -> Outcome {
    Outcome::Temporary(format!("upstream: {e}"))
}

/// One transaction for `batch` on `c`; the connection back when it is clean for reuse.
async fn one_transaction(
    pool: &Arc<Pool>,
    mut c: Client,
    record: &Record,
    batch: &[Rcpt],
    content: &[u8],
) -> (Transaction, Option<Client>) {
    let failed = |e: UpstreamError| Transaction {
        outcomes: vec![temporary(&e); batch.len()],
        result: "error",
    };
    let pipelining = c.caps().pipelining;
    // Toward CHUNKING (with PIPELINING) the body goes in BDAT chunks after
    // the RCPT replies, and no DATA is sent.
    let chunking = pipelining && c.caps().chunking;
    c.queue(&mail_line(record, &c));
    if pipelining {
        for r in batch {
            c.queue(&rcpt_line(r, &c));
        }
        if !chunking {
            c.queue("DATA");
        }
    }
    let sent = Instant::now();
    let mut mail = match c.flush_commands().await {
        Ok(()) => c.read_reply("MAIL", sent, COMMAND_TIMEOUT).await,
        Err(e) => Err(e),
    };
    // A kept connection the provider cut while idle (closed, or a 421 as its
    // first answer): the batch goes again on a fresh one.
    let cut = matches!(mail, Err(UpstreamError::Closed | UpstreamError::Io(_)))
        || matches!(&mail, Ok(r) if r.code == 421);
    if cut && c.was_used() {
        tracing::info!("kept upstream connection was closed; replaying on a new one");
        c = match pool.replace(c).await {
            Ok(fresh) => fresh,
            Err(e) => return (failed(e), None),
        };
        mail = c.read_reply("MAIL", Instant::now(), COMMAND_TIMEOUT).await;
    }
    let mail = match mail {
        Ok(m) => m,
        Err(e) => return (failed(e), None),
    };
    match dialogue(&mut c, mail, (pipelining, chunking), sent, batch, content).await {
        Ok((t, clean)) => (t, clean.then_some(c)),
        Err(e) => (failed(e), None),
    }
}

/// The rest of the transaction after MAIL's reply: RCPTs, DATA and the body.
/// Returns the outcomes and whether the connection is clean for reuse.
async fn dialogue(
    c: &mut Client,
    mail: Reply,
    (pipelining, chunking): (bool, bool),
    sent: Instant,
    batch: &[Rcpt],
    content: &[u8],
) -> Result<(Transaction, bool), UpstreamError> {
    let mut rcpt_replies = Vec::with_capacity(batch.len());
    if pipelining {
        for _ in batch {
            rcpt_replies.push(c.read_reply("RCPT", sent, COMMAND_TIMEOUT).await?);
        }
    } else if mail.is_positive() {
        for r in batch {
            let line = rcpt_line(r, c);
            rcpt_replies.push(c.command(&line, "RCPT").await?);
        }
    }
    let accepted: Vec<bool> = rcpt_replies.iter().map(Reply::is_positive).collect();
    let any = accepted.iter().any(|a| *a);
    let data = if chunking {
        None
    } else if pipelining {
        Some(c.read_reply("DATA", sent, COMMAND_TIMEOUT).await?)
    } else if mail.is_positive() && any {
        Some(c.command("DATA", "DATA").await?)
    } else {
        None
    };
    let data_ok = data.as_ref().is_some_and(|d| d.code == 354);
    if !mail.is_positive() || !any || !(data_ok || chunking) {
        let mut outcomes: Vec<Outcome> = if mail.is_positive() {
            rcpt_replies.iter().map(classify).collect()
        } else {
            vec![classify(&mail); batch.len()]
        };
        if let Some(d) = data.as_ref().filter(|_| mail.is_positive() && !data_ok) {
            for (o, a) in outcomes.iter_mut().zip(&accepted) {
                if *a {
                    *o = match classify(d) {
                        Outcome::Done(t) => Outcome::Temporary(t),
                        other => other,
                    };
                }
            }
        }
        // A 354 with no recipient accepted: the body must not go; drop the connection.
        let clean = !data_ok && mail.code != 421;
        if clean {
            c.queue("RSET");
            c.flush().await?;
            c.read_reply("RSET", Instant::now(), COMMAND_TIMEOUT)
                .await?;
        }
        let result = if outcomes.iter().any(|o| matches!(o, Outcome::Temporary(_))) {
            "deferred"
        } else {
            "rejected"
        };
        return Ok((Transaction { outcomes, result }, clean));
    }
    let mut outcomes: Vec<Outcome> = rcpt_replies.iter().map(classify).collect();
    if chunking {
        c.begin_chunks(Vec::new());
    }
    let mut rest = content;
    while !rest.is_empty() {
        let cut = if rest.len() <= BODY_CHUNK {
            rest.len()
        } else {
            memchr::memrchr(b'\n', &rest[..BODY_CHUNK]).map_or(BODY_CHUNK, |i| i + 1)
        };
        c.write_body(&rest[..cut]).await?;
        rest = &rest[cut..];
    }
    if !content.is_empty() && !content.ends_with(b"\r\n") {
        c.write_body(b"\r\n").await?;
    }
    let (end, reusable) = if chunking {
        let e = c.end_chunks().await?;
        match e.verdict {
            Some(v) => (v, e.reusable),
            None => return Err(UpstreamError::Protocol("no verdict on the chunked body")),
        }
    } else {
        let end = c.end_body().await?;
        let reusable = end.code != 421;
        (end, reusable)
    };
    let final_outcome = classify(&end);
    for (o, a) in outcomes.iter_mut().zip(&accepted) {
        if *a {
            *o = final_outcome.clone();
        }
    }
    let result = match end.class() {
        2 => "delivered",
        5 => "rejected",
        _ => "deferred",
    };
    Ok((
        Transaction { outcomes, result },
        reusable && end.code != 421,
    ))
}
