//! Delivery workers: one loop per spooling upstream takes due entries and
//! delivers each through the upstream's pool (so `max_connections` holds for
//! everything postern does), at most `concurrency` at once.
//!
//! Per recipient: 2xx done, 4xx (or no answer) retried with exponential
//! backoff and jitter from `retry_initial` to `retry_max`, 5xx dead. More
//! recipients than the upstream's `max_recipients` go in several
//! transactions. An entry whose recipients are all done leaves the spool; one
//! with dead recipients and none pending moves to `dead/` with the reasons;
//! undelivered after `max_age`, its pending recipients die too.
//!
//! Each attempt holds the entry's file lock and re-reads its record, so a
//! queue command that changed or removed it in between is honoured.

use std::fs::File;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::commit::{Logged, Op};
use super::store::{Place, Rcpt, RcptStatus, Record};
use super::{NewMessage, Spool};
use crate::smtp::reply::Reply;
use crate::upstream::UpstreamError;
use crate::upstream::client::{COMMAND_TIMEOUT, Client};
use crate::upstream::pool::Pool;
use crate::upstream::quota::Quota;

/// Retry of an entry whose lock a queue command holds, or whose pool was full.
const BUSY_RETRY: Duration = Duration::from_secs(2);
/// Body bytes handed to the client per write.
const BODY_CHUNK: usize = 64 * 1024;

/// What one recipient's attempt came to.
#[derive(Debug, Clone)]
enum Outcome {
    Done(String),
    Temporary(String),
    Permanent(String),
}

/// What one upstream transaction came to.
struct Transaction {
    outcomes: Vec<Outcome>,
    /// `postern_delivery_attempts_total` result word.
    result: &'static str,
}

/// With `[[upstream.account]]`: (lower-case sender address, its pool).
pub type Accounts = Arc<Vec<(String, Weak<Pool>)>>;

/// The pool for an entry from `sender`: its account's, or `default` (the
/// upstream's pool; with accounts the first one's, e.g. for a dead-letter
/// notice, whose sender has no account of its own).
fn pool_for(default: &Arc<Pool>, accounts: &Accounts, sender: &str) -> Arc<Pool> {
    accounts
        .iter()
        .find(|(user, _)| user.eq_ignore_ascii_case(sender))
        .and_then(|(_, p)| p.upgrade())
        .unwrap_or_else(|| default.clone())
}

/// The delivery loop of one upstream, until its pool is retired (a reload
/// started a new loop) or the pool or the spool is dropped. `pool` is the
/// upstream's pool (with accounts, the first account's); `accounts` the pool
/// of each account, chosen by the entry's envelope sender.
pub async fn run(
    spool: Weak<Spool>,
    pool: Weak<Pool>,
    accounts: Accounts,
    quota: Option<Arc<Quota>>,
    max_recipients: u32,
    concurrency: usize,
) {
    let Some((name, mut wake)) = spool.upgrade().zip(pool.upgrade()).map(|(s, p)| {
        let name = p.dial().name.clone();
        s.metrics.init_upstream(&name);
        (name, s.watch())
    }) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    loop {
        let (Some(spool), Some(pool)) = (spool.upgrade(), pool.upgrade()) else {
            return;
        };
        if pool.is_retired() {
            return;
        }
        let now = spool.clock.now_ms();
        while let Ok(slot) = slots.clone().try_acquire_owned() {
            let Some(id) = spool.take_due(&name, now) else {
                break;
            };
            let (spool, pool, accounts) = (spool.clone(), pool.clone(), accounts.clone());
            let quota = quota.clone();
            tokio::spawn(async move {
                let how = How {
                    accounts: &accounts,
                    quota: quota.as_deref(),
                    max_recipients,
                };
                attempt(&spool, &pool, &how, &id).await;
                drop(slot);
                spool.wake.send_modify(|n| *n += 1);
            });
        }
        let tick = Instant::now() + Duration::from_secs(1);
        let deadline = match spool.next_due(&name) {
            Some(t) if slots.available_permits() > 0 => spool.clock.instant_at(t).min(tick),
            _ => tick,
        };
        drop((spool, pool));
        tokio::select! {
            r = wake.changed() => if r.is_err() { return },
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// A number in [0, 1) from the OS's random source, for jitter.
fn unit_random() -> f64 {
    (crate::upstream::outbox::nonce() >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay before attempt `attempts + 1`: `initial` doubled per attempt,
/// capped at `max`, plus up to a quarter of jitter (still capped).
pub fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << exp).min(max);
    let jitter = base.mul_f64(unit_random() * 0.25);
    (base + jitter).min(max).max(initial.min(max))
}

/// One delivery attempt of entry `id`.
/// What every attempt of one upstream's loop shares.
struct How<'a> {
    accounts: &'a Accounts,
    quota: Option<&'a Quota>,
    max_recipients: u32,
}

async fn attempt(spool: &Spool, default: &Arc<Pool>, how: &How<'_>, id: &str) {
    let max_recipients = how.max_recipients;
    let layout = &spool.layout;
    let eml_path = layout.eml(Place::Queue, id);
    // A message still held in memory is delivered from there; no queue
    // command can reach it before it is written out, so it needs no lock.
    let mut file = None;
    let (mut record, read) = match spool.hold.snapshot(id) {
        Some((record, eml)) => (record, Ok(Some(eml))),
        None => {
            let f = match File::open(&eml_path) {
                Ok(f) => f,
                Err(_) => {
                    spool.forget(id);
                    return;
                }
            };
            if f.try_lock().is_err() {
                let attempts = spool.index().queued.get(id).map_or(0, |m| m.attempts);
                spool.release(
                    id,
                    spool.clock.now_ms() + BUSY_RETRY.as_millis() as u64,
                    attempts,
                );
                return;
            }
            file = Some(f);
            // Under the lock: the record as it is now (a queue command may have changed it).
            let record = match layout.read_record(Place::Queue, id) {
                Ok(r) => r,
                Err(_) => {
                    spool.forget(id);
                    return;
                }
            };
            let read = match std::fs::read(&eml_path) {
                Ok(c) if crc32fast::hash(&c) == record.crc32 && c.len() as u64 == record.size => {
                    Ok(Some(Arc::<[u8]>::from(c)))
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            (record, read)
        }
    };
    let pool = &pool_for(default, how.accounts, &record.mail_from);
    let name = pool.dial().name.clone();
    let now = spool.clock.now_ms();
    let content = match read {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(id, error = %e, "spool: cannot read message; retrying later");
            spool.release(
                id,
                now + spool.settings.retry_initial.as_millis() as u64,
                record.attempts,
            );
            return;
        }
    };
    let expired =
        now.saturating_sub(record.received_at_ms) >= spool.settings.max_age.as_millis() as u64;
    let mut busy = false;
    let mut over_quota = None;
    match content {
        None => kill_pending(&mut record, "message file damaged in the spool"),
        Some(_) if expired => {
            let why = format!(
                "expired: undelivered after {} s; last error: {}",
                spool.settings.max_age.as_secs(),
                record.last_error.as_deref().unwrap_or("none")
            );
            kill_pending(&mut record, &why);
        }
        Some(content) => {
            let pending: Vec<Rcpt> = record.pending().cloned().collect();
            let mut temp_error = None;
            let mut tried = 0;
            for batch in pending.chunks(max_recipients.max(1) as usize) {
                // The provider's daily quotas: a transaction is one message,
                // its batch that many recipients; over them, the entry waits.
                let taken = match how.quota {
                    Some(q) => match q.take_message().await {
                        Ok(()) => q.take_recipients(batch.len() as u32).await,
                        Err(e) => Err(e),
                    },
                    None => Ok(()),
                };
                if let Err(e) = taken {
                    over_quota = Some(e);
                    break;
                }
                let Some(transactions) = transact(pool, &record, batch, &content).await else {
                    busy = true;
                    break;
                };
                tried += 1;
                let mut outcomes = Vec::with_capacity(batch.len());
                for t in transactions {
                    spool
                        .metrics
                        .attempts
                        .with_label_values(&[&name, t.result])
                        .inc();
                    outcomes.extend(t.outcomes);
                }
                for (addr, outcome) in batch.iter().map(|r| &r.address).zip(outcomes) {
                    let Some(r) = record.recipients.iter_mut().find(|r| &r.address == addr) else {
                        continue;
                    };
                    match outcome {
                        Outcome::Done(reply) => {
                            r.status = RcptStatus::Done;
                            r.reply = Some(reply);
                        }
                        Outcome::Permanent(reply) => {
                            r.status = RcptStatus::Dead;
                            r.reply = Some(reply);
                        }
                        Outcome::Temporary(reply) => {
                            temp_error.get_or_insert_with(|| reply.clone());
                            r.reply = Some(reply);
                        }
                    }
                }
            }
            if tried > 0 {
                record.attempts += 1;
            }
            if let Some(e) = temp_error {
                record.last_error = Some(e);
            }
        }
    }
    let pending = record.pending().count();
    let dead = record
        .recipients
        .iter()
        .filter(|r| r.status == RcptStatus::Dead)
        .count();
    if (pending > 0 || dead > 0)
        && let Err(e) = spool.hold.write_out(layout, id)
    {
        // Its outcome is kept in its files: without them, try again later.
        tracing::error!(id, error = %e, "spool: cannot write the message's files; will retry");
        spool.release(
            id,
            now + spool.settings.retry_initial.as_millis() as u64,
            record.attempts,
        );
        return;
    }
    if pending == 0 {
        let result = if dead == 0 {
            remove(spool, id).await
        } else {
            dead_letter(spool, &record).await
        };
        match result {
            Ok(()) => spool.forget(id),
            Err(e) => {
                tracing::error!(id, error = %e, "spool: cannot record the outcome; will retry");
                spool.release(
                    id,
                    now + spool.settings.retry_initial.as_millis() as u64,
                    record.attempts,
                );
            }
        }
        if dead > 0 {
            spool.insert_dead(id, &record.upstream);
            spool.metrics.dead_letters.with_label_values(&[&name]).inc();
            tracing::warn!(id, upstream = %name, dead, "spool: dead letter");
            notify(spool, &record).await;
        } else {
            tracing::info!(id, upstream = %name, "spool: delivered");
        }
        return;
    }
    let delay = if let Some(e) = over_quota {
        record.last_error = Some(format!("waiting for upstream {name}'s {} quota", e.what));
        e.wait.max(BUSY_RETRY)
    } else if busy && record.attempts == 0 {
        BUSY_RETRY
    } else {
        backoff(
            spool.settings.retry_initial,
            spool.settings.retry_max,
            record.attempts,
        )
    };
    record.next_attempt_ms = spool.clock.now_ms() + delay.as_millis() as u64;
    if let Err(e) = save(spool, &record).await {
        tracing::error!(id, error = %e, "spool: cannot record the attempt");
    }
    tracing::info!(
        id,
        upstream = %name,
        pending,
        attempts = record.attempts,
        retry_in_s = delay.as_secs(),
        error = record.last_error.as_deref().unwrap_or(""),
        "spool: deferred"
    );
    spool.release(id, record.next_attempt_ms, record.attempts);
    drop(file);
}

/// Every pending recipient dies with `why`.
fn kill_pending(record: &mut Record, why: &str) {
    for r in &mut record.recipients {
        if r.status == RcptStatus::Pending {
            r.status = RcptStatus::Dead;
            r.reply = Some(match &r.reply {
                Some(last) => format!("{why} (last reply: {last})"),
                None => why.to_owned(),
            });
        }
    }
}

/// Replaces the entry's record, durably.
async fn save(spool: &Spool, record: &Record) -> std::io::Result<()> {
    let (f, tmp) = spool.layout.write_tmp_record(record)?;
    spool
        .committer
        .commit(
            vec![f],
            vec![Op::Rename(tmp, spool.layout.json(Place::Queue, &record.id))],
            vec![spool.layout.dir(Place::Queue)],
        )
        .await
}

/// Removes a delivered entry: record first (the commit point), then the
/// message, each renamed into `done/` (unlinked later, off the commit path).
/// A `Gone` in the log makes it durable (a replay removes what a crash left).
async fn remove(spool: &Spool, id: &str) -> std::io::Result<()> {
    let l = &spool.layout;
    // Still held in memory: it has no files.
    let ops = if spool.hold.discard(id) {
        Vec::new()
    } else {
        vec![
            Op::Discard(
                l.json(Place::Queue, id),
                l.done().join(format!("{id}.json")),
            ),
            Op::Discard(l.eml(Place::Queue, id), l.done().join(format!("{id}.eml"))),
        ]
    };
    spool
        .committer
        .submit(
            vec![],
            vec![],
            ops,
            vec![l.dir(Place::Queue)],
            Some(Logged::Gone(id.to_owned())),
        )
        .await
        .map(|_| ())
}

/// Moves an entry to `dead/` with its reasons: message, then record, then the old record goes.
async fn dead_letter(spool: &Spool, record: &Record) -> std::io::Result<()> {
    let l = &spool.layout;
    let id = &record.id;
    let (f, tmp) = l.write_tmp_record(record)?;
    spool
        .committer
        .commit(
            vec![f],
            vec![
                Op::Rename(l.eml(Place::Queue, id), l.eml(Place::Dead, id)),
                Op::Rename(tmp, l.json(Place::Dead, id)),
                Op::Remove(l.json(Place::Queue, id)),
            ],
            vec![l.dir(Place::Queue), l.dir(Place::Dead)],
        )
        .await
}

/// With `notify` set: one notice of a dead letter to that address, spooled
/// toward the same upstream. Never to the device's sender, never for a notice.
async fn notify(spool: &Spool, record: &Record) {
    let Some(to) = spool.settings.notify.clone() else {
        return;
    };
    if record.notice {
        return;
    }
    let mut text = format!(
        "From: postern <{from}>\r\nTo: <{to}>\r\nSubject: Undelivered mail {id}\r\n\
         Auto-Submitted: auto-generated\r\n\r\n\
         postern could not deliver message {id} (user {user}, sender {sender}) through upstream {up}.\r\n\
         It is kept in the spool's dead/ directory: `postern queue show {id}`,\r\n\
         `postern queue requeue {id}` to try again.\r\n\r\n",
        from = record.mail_from,
        id = record.id,
        user = record.user,
        sender = record.client_mail_from,
        up = record.upstream,
    );
    for r in &record.recipients {
        let status = match r.status {
            RcptStatus::Done => "delivered",
            RcptStatus::Dead => "failed",
            RcptStatus::Pending => "pending",
        };
        text.push_str(&format!(
            "  {}: {status}: {}\r\n",
            r.address,
            r.reply.as_deref().unwrap_or("")
        ));
    }
    let result = async {
        let mut inc = spool.begin()?;
        inc.write(text.as_bytes())?;
        spool
            .commit(
                inc,
                &NewMessage {
                    upstream: &record.upstream,
                    user: "postern",
                    mail_from: &record.mail_from,
                    client_mail_from: "",
                    recipients: &[to],
                    smtputf8: false,
                    body: "7bit",
                    notice: true,
                    ret: None,
                    envid: None,
                    rcpt_dsn: &[],
                    hold: false,
                },
            )
            .await
    }
    .await;
    if let Err(e) = result {
        tracing::error!(id = %record.id, error = %e, "spool: cannot queue the dead-letter notice");
    }
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
async fn transact(
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
