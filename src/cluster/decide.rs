//! One round trip per SMTP command: the decisions a command needs go to
//! Redis as one `DECIDE` script call, and what was given back since the last
//! call (leases, rate units taken ahead and not used) rides along in front
//! of them. What is given back waits at most `RELEASE_DELAY` for such a
//! ride; then it goes alone, with whatever else was given back meanwhile.
//!
//! At MAIL the batch is the user's connection lease, `messages_per_minute`
//! and one unit of `recipients_per_hour` taken ahead for the first RCPT
//! (`Ask::Ahead`), so that a message to one recipient costs one round trip.
//! A unit taken ahead is a `Taken`: used up by the RCPT, or given back when
//! the transaction ends without one. It is taken only when the MAIL is
//! allowed; when it could not be had, the RCPT asks Redis itself, as
//! without it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::lease::{Held, Lease};
use super::{Cluster, LeaseVerdict, Verdict};

/// How long what is given back waits for the next decision to carry it.
const RELEASE_DELAY: Duration = Duration::from_millis(5);

/// One decision of a `decide` batch.
pub enum Ask<'a> {
    /// One of the `max` slots of `parts` (a connection lease).
    Lease { parts: &'a [&'a str], max: u32 },
    /// `cost` units of a GCRA rate: at most `burst` per `period`
    /// (`Quota::with_period` semantics: a burst of `burst`, then one every
    /// `period / burst`); a cost above the burst is taken as the burst. A
    /// wait ends the batch.
    Rate {
        parts: &'a [&'a str],
        period: Duration,
        burst: u32,
        cost: u32,
    },
    /// One unit of a rate taken ahead, for a decision still to come
    /// (`Answer::Ahead`; `NotAsked` when it was not allowed). A wait ends
    /// the batch too (so it goes last).
    Ahead {
        parts: &'a [&'a str],
        period: Duration,
        burst: u32,
    },
}

/// What Redis said about one `Ask`.
pub enum Answer {
    Lease(LeaseVerdict),
    Rate(Verdict),
    /// `Ask::Ahead` allowed: the unit, to use up or give back.
    Ahead(Taken),
    /// Not decided (a lease or rate before it in the batch was refused), or
    /// an `Ask::Ahead` not allowed or not answered.
    NotAsked,
}

impl Answer {
    fn unavailable(ask: &Ask<'_>) -> Answer {
        match ask {
            Ask::Lease { .. } => Answer::Lease(LeaseVerdict::Unavailable),
            Ask::Rate { .. } => Answer::Rate(Verdict::Unavailable),
            Ask::Ahead { .. } => Answer::NotAsked,
        }
    }
}

/// Sent with the next decision (or alone within `RELEASE_DELAY`).
pub(super) enum Giving {
    /// A lease given back.
    Release(Arc<Held>),
    /// Rate units taken ahead and not used.
    Units {
        key: String,
        interval: u64,
        cost: u32,
    },
}

/// Units of a rate taken ahead (`Ask::Ahead`): `use_up` when the decision
/// they were taken for comes; dropped unused, they are given back.
pub struct Taken {
    cluster: Arc<Cluster>,
    key: String,
    interval: u64,
    cost: u32,
    used: bool,
}

impl Taken {
    /// The decision they were taken for has come: they stay taken.
    pub fn use_up(mut self) {
        self.used = true;
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if self.used || !self.cluster.may_ask() {
            return;
        }
        self.cluster.give(Giving::Units {
            key: std::mem::take(&mut self.key),
            interval: self.interval,
            cost: self.cost,
        });
    }
}

/// GCRA's emission interval in µs: `period / burst`.
fn interval(period: Duration, burst: u32) -> u64 {
    let interval = (period.as_micros() / u128::from(burst.max(1))).max(1);
    u64::try_from(interval).unwrap_or(u64::MAX)
}

impl Cluster {
    /// Decides `asks` in order in one round trip, atomically; a refused
    /// lease or rate ends the batch (what follows it is `NotAsked`, nothing
    /// taken).
    pub async fn decide<const N: usize>(self: &Arc<Self>, asks: [Ask<'_>; N]) -> [Answer; N] {
        if !self.may_ask() {
            self.drop_releases();
            return asks.each_ref().map(Answer::unavailable);
        }
        let ttl = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut call = self.scripts.decide.prepare_invoke();
        self.add_releases(&mut call);
        let mut leases: [Option<(u64, String, String)>; N] = [const { None }; N];
        let mut ahead: [Option<(String, u64)>; N] = [const { None }; N];
        for (i, ask) in asks.iter().enumerate() {
            match *ask {
                Ask::Lease { parts, max } => {
                    let key = self.key(parts);
                    let n = self
                        .next_lease
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let member = format!("{}:{n}", self.holder);
                    call.key(&key)
                        .key(format!("{key}:want"))
                        .arg("l")
                        .arg(&member)
                        .arg(max.max(1))
                        .arg(ttl);
                    leases[i] = Some((n, key, member));
                }
                Ask::Rate {
                    parts,
                    period,
                    burst,
                    cost,
                } => {
                    let burst = burst.max(1);
                    call.key(self.key(parts))
                        .arg("g")
                        .arg(interval(period, burst))
                        .arg(burst)
                        .arg(cost.clamp(1, burst));
                }
                Ask::Ahead {
                    parts,
                    period,
                    burst,
                } => {
                    let key = self.key(parts);
                    let interval = interval(period, burst);
                    call.key(&key)
                        .arg("g")
                        .arg(interval)
                        .arg(burst.max(1))
                        .arg(1);
                    ahead[i] = Some((key, interval));
                }
            }
        }
        let mut conn = self.conn.clone();
        let Some(out) = self.ask(call.invoke_async::<Vec<u64>>(&mut conn)).await else {
            return asks.each_ref().map(Answer::unavailable);
        };
        let mut out = out.into_iter();
        std::array::from_fn(|i| match (&asks[i], out.next()) {
            (_, None) => Answer::NotAsked,
            (Ask::Lease { .. }, Some(1)) => match leases[i].take() {
                Some((n, key, member)) => {
                    Answer::Lease(LeaseVerdict::Granted(Lease::new(self, n, key, member)))
                }
                None => Answer::NotAsked,
            },
            (Ask::Lease { .. }, Some(_)) => Answer::Lease(LeaseVerdict::Full),
            (Ask::Rate { .. }, Some(0)) => Answer::Rate(Verdict::Allowed),
            (Ask::Rate { .. }, Some(wait)) => {
                Answer::Rate(Verdict::Wait(Duration::from_micros(wait)))
            }
            (Ask::Ahead { .. }, Some(0)) => match ahead[i].take() {
                Some((key, interval)) => Answer::Ahead(Taken {
                    cluster: self.clone(),
                    key,
                    interval,
                    cost: 1,
                    used: false,
                }),
                None => Answer::NotAsked,
            },
            (Ask::Ahead { .. }, Some(_)) => Answer::NotAsked,
        })
    }

    /// One GCRA decision: at most `burst` per `period`.
    pub async fn rate(self: &Arc<Self>, parts: &[&str], period: Duration, burst: u32) -> Verdict {
        self.rate_n(parts, period, burst, 1).await
    }

    /// `rate` for `cost` units at once (a batch of recipients), as governor's
    /// `check_n`; a cost above the burst is taken as the burst.
    pub async fn rate_n(
        self: &Arc<Self>,
        parts: &[&str],
        period: Duration,
        burst: u32,
        cost: u32,
    ) -> Verdict {
        let [answer] = self
            .decide([Ask::Rate {
                parts,
                period,
                burst,
                cost,
            }])
            .await;
        match answer {
            Answer::Rate(v) => v,
            _ => Verdict::Unavailable,
        }
    }

    /// Tries once, without waiting, to take one of the `max` slots of `parts`.
    pub async fn try_lease(self: &Arc<Self>, parts: &[&str], max: u32) -> LeaseVerdict {
        let [answer] = self.decide([Ask::Lease { parts, max }]).await;
        match answer {
            Answer::Lease(v) => v,
            _ => LeaseVerdict::Unavailable,
        }
    }

    /// Queues what is given back for the next round trip (or `release_loop`).
    pub(super) fn give(&self, what: Giving) {
        let mut queue = self.releases.lock().unwrap_or_else(|p| p.into_inner());
        queue.push(what);
        if queue.len() == 1 {
            self.release_wake.notify_one();
        }
    }

    /// Puts what is queued at the front of `call` (`DECIDE`'s `r` and `u`).
    fn add_releases(&self, call: &mut redis::ScriptInvocation<'_>) {
        let queue = std::mem::take(&mut *self.releases.lock().unwrap_or_else(|p| p.into_inner()));
        for what in &queue {
            match what {
                Giving::Release(held) => {
                    call.key(&held.key).arg("r").arg(&held.member);
                }
                Giving::Units {
                    key,
                    interval,
                    cost,
                } => {
                    call.key(key).arg("u").arg(*interval).arg(*cost);
                }
            }
        }
    }

    /// Forgets what is queued: Redis is away; the TTLs free the leases, and
    /// units not given back expire with their window.
    fn drop_releases(&self) {
        self.releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Sends what is waiting to be given back now (at shutdown).
    pub async fn flush(self: &Arc<Self>) {
        if self.releases_waiting() {
            let [] = self.decide([]).await;
        }
    }

    fn releases_waiting(&self) -> bool {
        !self
            .releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// Sends what no decision carried within `RELEASE_DELAY`, until the cluster
/// is dropped (its `Drop` wakes this loop to end it).
pub(super) async fn release_loop(cluster: Weak<Cluster>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        tokio::time::sleep(RELEASE_DELAY).await;
        let Some(c) = cluster.upgrade() else { return };
        // A release that does not arrive is freed by the TTL.
        c.flush().await;
    }
}
