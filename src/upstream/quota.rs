//! Provider quotas of one upstream (`messages_per_day`, `recipients_per_day`):
//! GCRA limiters (governor, on tokio's clock) with the whole day's quota as
//! the burst, so a quiet relay may send a day's quota at once and a busy one
//! gets `n` a day spread evenly. A reload keeps an upstream's quotas when the
//! numbers are unchanged (`Policy::build` reuses the `Arc`), so a SIGHUP
//! cannot hand out a second day's quota.
//!
//! Relay mode refuses what is over the quota (`451 4.7.1`, with the time to
//! wait); spool and fallback mode keep the message and deliver it when the
//! quota allows.
//!
//! With `[cluster]` the quotas belong to the provider account, not to one
//! replica: Redis decides with the same GCRA (`Cluster::rate_n`, keys
//! `quota:<upstream>:msg|rcpt`), and the local limiters, built with the
//! quotas divided by `replicas`, decide only while Redis does not answer
//! (`on_redis_error = "local"`, counted as `daily_messages` /
//! `daily_recipients`); under `"refuse"` nothing is taken and the caller
//! answers `451 4.3.0` (or, spooling, waits `UNAVAILABLE_RETRY`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota as Gcra, RateLimiter};

use crate::cluster::{Cluster, Verdict};
use crate::limits::TokioClock;

// governor measures in `std::time::Instant`; tokio's paused clock converts to it.
#[allow(clippy::disallowed_types)]
type StdInstant = std::time::Instant;
type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<StdInstant>>;

const DAY: Duration = Duration::from_secs(86_400);

/// How long a spooled message waits when Redis could not decide a shared
/// quota and `on_redis_error = "refuse"`.
pub const UNAVAILABLE_RETRY: Duration = Duration::from_secs(30);

/// One upstream's daily quotas; `None` for a quota that is off (0 or unset).
pub struct Quota {
    /// (`messages_per_day`, `recipients_per_day`) as configured, to tell
    /// whether a reload changed them.
    pub numbers: (u32, u32),
    /// With `[cluster]`: Redis decides, the limiters below are the fallback.
    shared: Option<(Arc<Cluster>, Arc<str>)>,
    messages: Option<Limiter>,
    recipients: Option<(NonZeroU32, Limiter)>,
}

fn limiter(per_day: NonZeroU32) -> Limiter {
    let period = DAY / per_day.get();
    let gcra = Gcra::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Gcra::per_second(per_day))
        .allow_burst(per_day);
    RateLimiter::direct_with_clock(gcra, TokioClock)
}

/// Which quota said no, and how long until it allows the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub what: &'static str,
    pub wait: Duration,
    /// Not over the quota: Redis did not answer and the configuration says
    /// refuse (`451 4.3.0` rather than `451 4.7.1`).
    pub unavailable: bool,
}

impl Exceeded {
    fn over(what: &'static str, wait: Duration) -> Exceeded {
        Exceeded {
            what,
            wait,
            unavailable: false,
        }
    }

    /// What a client hears in relay mode.
    pub fn refusal(&self, upstream: &Arc<str>) -> crate::refusal::Refusal {
        if self.unavailable {
            return crate::refusal::Refusal::SharedLimitsUnavailable;
        }
        crate::refusal::Refusal::UpstreamQuota {
            upstream: upstream.clone(),
            what: self.what,
            wait: self.wait,
        }
    }
}

/// How Redis decided one shared quota.
enum Decided {
    Yes(Result<(), Exceeded>),
    /// Redis did not answer and the fallback is local.
    Local,
}

impl Quota {
    /// The quotas of `messages_per_day` and `recipients_per_day` (0 = none);
    /// `None` when both are off.
    pub fn new(messages: u32, recipients: u32) -> Option<Quota> {
        if messages == 0 && recipients == 0 {
            return None;
        }
        Some(Quota {
            numbers: (messages, recipients),
            shared: None,
            messages: NonZeroU32::new(messages).map(limiter),
            recipients: NonZeroU32::new(recipients).map(|n| (n, limiter(n))),
        })
    }

    /// The same quotas shared through `cluster` by every replica using
    /// `upstream`; the local limiters hold this replica's share (the quotas
    /// divided by `replicas`) for when Redis does not answer.
    pub fn shared(
        cluster: &Arc<Cluster>,
        upstream: &Arc<str>,
        numbers: (u32, u32),
    ) -> Option<Quota> {
        let (messages, recipients) = numbers;
        let share = |n: u32| if n == 0 { 0 } else { cluster.share_of(n) };
        let mut q = Quota::new(share(messages), share(recipients))?;
        q.numbers = numbers;
        q.shared = Some((cluster.clone(), upstream.clone()));
        Some(q)
    }

    /// Asks Redis, with `[cluster]`, for `cost` of the quota `what` (`per_day`).
    async fn decide(&self, kind: &str, what: &'static str, per_day: u32, cost: u32) -> Decided {
        let Some((cluster, upstream)) = &self.shared else {
            return Decided::Local;
        };
        match cluster
            .rate_n(&["quota", upstream, kind], DAY, per_day, cost)
            .await
        {
            Verdict::Allowed => Decided::Yes(Ok(())),
            Verdict::Wait(wait) => Decided::Yes(Err(Exceeded::over(what, wait))),
            Verdict::Unavailable if cluster.refuses() => Decided::Yes(Err(Exceeded {
                what,
                wait: UNAVAILABLE_RETRY,
                unavailable: true,
            })),
            Verdict::Unavailable => {
                cluster.fell_back(if kind == "msg" {
                    "daily_messages"
                } else {
                    "daily_recipients"
                });
                Decided::Local
            }
        }
    }

    /// Takes one message, or says how long until one is allowed.
    ///
    /// # Errors
    /// The quota that is used up and the wait.
    pub async fn take_message(&self) -> Result<(), Exceeded> {
        let Some(l) = &self.messages else {
            return Ok(());
        };
        let what = "messages_per_day";
        if let Decided::Yes(r) = self.decide("msg", what, self.numbers.0, 1).await {
            return r;
        }
        l.check()
            .map_err(|nu| Exceeded::over(what, nu.wait_time_from(TokioClock.now())))
    }

    /// Takes `n` recipients at once (a delivery's batch), or says how long
    /// until that many are allowed. A batch larger than the whole day's quota
    /// is taken as the whole quota (it could never pass otherwise).
    ///
    /// # Errors
    /// The quota that is used up and the wait.
    pub async fn take_recipients(&self, n: u32) -> Result<(), Exceeded> {
        let Some((cap, l)) = &self.recipients else {
            return Ok(());
        };
        let what = "recipients_per_day";
        if let Decided::Yes(r) = self.decide("rcpt", what, self.numbers.1, n).await {
            return r;
        }
        let n = NonZeroU32::new(n.min(cap.get())).unwrap_or(NonZeroU32::MIN);
        match l.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(nu)) => Err(Exceeded::over(what, nu.wait_time_from(TokioClock.now()))),
            // n <= cap, so the request always fits the burst.
            Err(_) => Err(Exceeded::over(what, DAY)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_days_quota_passes_at_once_then_waits() {
        let q = Quota::new(3, 0).unwrap();
        for _ in 0..3 {
            q.take_message().await.unwrap();
        }
        let e = q.take_message().await.unwrap_err();
        assert_eq!(e.what, "messages_per_day");
        // One message every 8 hours once the burst is spent.
        assert!(e.wait > Duration::from_secs(7 * 3600) && e.wait <= Duration::from_secs(8 * 3600));
        tokio::time::advance(Duration::from_secs(8 * 3600)).await;
        q.take_message().await.unwrap();
        assert!(q.take_message().await.is_err());
        // Recipients are off: never refused.
        q.take_recipients(1000).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn recipients_are_taken_by_batch() {
        let q = Quota::new(0, 10).unwrap();
        q.take_recipients(7).await.unwrap();
        let e = q.take_recipients(7).await.unwrap_err();
        assert_eq!(e.what, "recipients_per_day");
        q.take_recipients(3).await.unwrap();
        assert!(q.take_recipients(1).await.is_err());
        // A batch above the day's quota is taken as the whole quota, after a day.
        tokio::time::advance(DAY).await;
        q.take_recipients(50).await.unwrap();
    }

    #[test]
    fn both_off_is_no_quota() {
        assert!(Quota::new(0, 0).is_none());
    }
}
