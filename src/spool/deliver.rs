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
use crate::upstream::pool::Pool;
use crate::upstream::quota::Quota;

mod transaction;
use transaction::{Outcome, transact};

/// Retry of an entry whose lock a queue command holds, or whose pool was full.
const BUSY_RETRY: Duration = Duration::from_secs(2);
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
            spool.retry_soon(id, now, record.attempts);
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
        spool.retry_soon(id, now, record.attempts);
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
                spool.retry_soon(id, now, record.attempts);
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

impl Spool {
    /// Puts an entry back after `retry_initial`: a local failure to retry.
    fn retry_soon(&self, id: &str, now: u64, attempts: u32) {
        let next = now + self.settings.retry_initial.as_millis() as u64;
        self.release(id, next, attempts);
    }
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
