//! Limits that span connections: per-user message and recipient rates
//! (governor), concurrent connections per user and per client address (counted
//! in a `DashMap`, released by a guard's `Drop`), and the brute-force throttle on
//! failed AUTH per client address (`AuthThrottle`), which is checked before any
//! password hash is computed.
//!
//! Every clock here is tokio's (`TokioClock` for governor), so the limits run
//! in paused time in tests.
//!
//! Address keys are the IPv4 address, or the /64 prefix of an IPv6 address (one
//! subscriber usually owns a whole /64). The maps are pruned by `prune`, which
//! the server runs every minute, so addresses an attacker chooses cannot grow
//! them without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

pub use crate::addr::ip_key;
use crate::config::Limits;

/// governor's clock, read from tokio's (so `tokio::time::pause` moves it).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

// governor measures in `std::time::Instant`; tokio's paused clock converts to it.
#[allow(clippy::disallowed_types)]
type StdInstant = std::time::Instant;

impl Clock for TokioClock {
    type Instant = StdInstant;

    fn now(&self) -> StdInstant {
        Instant::now().into_std()
    }
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<StdInstant>>;
type KeyedLimiter<K> = RateLimiter<K, DashMapStateStore<K>, TokioClock, NoOpMiddleware<StdInstant>>;

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A user's message and recipient rates (one per user per policy; a reload
/// starts them afresh).
#[derive(Debug)]
pub struct UserRates {
    messages: DirectLimiter,
    recipients: DirectLimiter,
}

impl UserRates {
    /// The user's rates, each divided by `share` (the replica count when these
    /// are a `[cluster]`'s local fallback; 1 otherwise).
    pub fn new(limits: &Limits, share: u32) -> UserRates {
        let share = share.max(1);
        UserRates {
            messages: RateLimiter::direct_with_clock(
                Quota::per_minute(nonzero(limits.messages_per_minute / share)),
                TokioClock,
            ),
            recipients: RateLimiter::direct_with_clock(
                Quota::per_hour(nonzero(limits.recipients_per_hour / share)),
                TokioClock,
            ),
        }
    }

    /// Takes one message from the per-minute quota, or says how long to wait.
    pub fn take_message(&self) -> Result<(), Duration> {
        self.messages
            .check()
            .map_err(|nu| nu.wait_time_from(TokioClock.now()))
    }

    /// Takes one recipient from the per-hour quota, or says how long to wait.
    pub fn take_recipient(&self) -> Result<(), Duration> {
        self.recipients
            .check()
            .map_err(|nu| nu.wait_time_from(TokioClock.now()))
    }
}

/// Connection counts by key; a `CountGuard` holds one until dropped.
#[derive(Debug)]
pub struct Counter<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> {
    counts: Arc<DashMap<K, u32>>,
}

impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> Default for Counter<K> {
    fn default() -> Self {
        Counter {
            counts: Arc::new(DashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> Counter<K> {
    /// Counts one more for `key` unless `max` are already counted.
    pub fn try_acquire(&self, key: K, max: u32) -> Option<CountGuard<K>> {
        let mut entry = self.counts.entry(key.clone()).or_insert(0);
        if *entry >= max {
            return None;
        }
        *entry += 1;
        drop(entry);
        Some(CountGuard {
            counts: self.counts.clone(),
            key,
        })
    }

    /// How many are counted for `key`.
    pub fn get(&self, key: &K) -> u32 {
        self.counts.get(key).map_or(0, |c| *c)
    }
}

/// One counted connection; dropping it counts it out.
#[derive(Debug)]
pub struct CountGuard<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> {
    counts: Arc<DashMap<K, u32>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> CountGuard<K> {
    /// What this guard counts against.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: std::hash::Hash + Eq + Clone + Send + Sync + 'static> Drop for CountGuard<K> {
    fn drop(&mut self) {
        // The entry goes when its count reaches zero, so the map holds only open connections.
        self.counts.remove_if_mut(&self.key, |_, c| {
            *c = c.saturating_sub(1);
            *c == 0
        });
    }
}

/// Connection counts, kept across reloads: they count live connections.
#[derive(Default)]
pub struct Limiters {
    pub connections_per_ip: Counter<IpAddr>,
    pub connections_per_user: Counter<Arc<str>>,
}

/// The brute-force throttle on failed AUTH, per client address. It belongs to
/// a policy (a reload with a new `auth_failures_per_ip_per_minute` builds a new
/// one, carrying the addresses locked out now).
pub struct AuthThrottle {
    per_minute: u32,
    failures: KeyedLimiter<IpAddr>,
    /// Addresses refused AUTH until the instant given.
    locked: DashMap<IpAddr, Instant>,
}

impl AuthThrottle {
    /// `per_minute` is the server-wide `[limits]` value (a per-user value cannot
    /// apply: the user is not known when AUTH fails).
    pub fn new(per_minute: u32) -> AuthThrottle {
        AuthThrottle {
            per_minute,
            failures: RateLimiter::dashmap_with_clock(
                Quota::per_minute(nonzero(per_minute)),
                TokioClock,
            ),
            locked: DashMap::new(),
        }
    }

    /// The throttle for a new policy: this one if the quota is unchanged, else
    /// a new one that keeps today's lockouts.
    pub fn renewed(self: &Arc<Self>, per_minute: u32) -> Arc<AuthThrottle> {
        if per_minute == self.per_minute {
            return self.clone();
        }
        let next = AuthThrottle::new(per_minute);
        for entry in &self.locked {
            next.locked.insert(*entry.key(), *entry.value());
        }
        Arc::new(next)
    }

    /// The failures allowed per minute and address.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Whether AUTH from `ip` is refused for now (too many recent failures).
    pub fn locked(&self, ip: IpAddr) -> bool {
        let key = ip_key(ip);
        match self.locked.get(&key).map(|until| *until) {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                self.locked
                    .remove_if(&key, |_, until| *until <= Instant::now());
                false
            }
            None => false,
        }
    }

    /// Records a failed AUTH from `ip`; past the quota the address is locked
    /// until a failure would fit again.
    pub fn failed(&self, ip: IpAddr) {
        let key = ip_key(ip);
        if let Err(not_until) = self.failures.check_key(&key) {
            let wait = not_until.wait_time_from(TokioClock.now());
            self.locked
                .insert(key, Instant::now() + wait.max(Duration::from_secs(1)));
        }
    }

    /// Drops state that no longer matters. Run every minute or so.
    pub fn prune(&self) {
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        let now = Instant::now();
        self.locked.retain(|_, until| *until > now);
    }

    /// Entries held, for tests and debugging.
    pub fn tracked_addresses(&self) -> usize {
        self.failures.len() + self.locked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_caps_and_releases() {
        let c: Counter<u8> = Counter::default();
        let a = c.try_acquire(1, 2).unwrap();
        let b = c.try_acquire(1, 2).unwrap();
        assert!(c.try_acquire(1, 2).is_none());
        assert!(c.try_acquire(2, 2).is_some(), "other keys are separate");
        drop(a);
        assert_eq!(c.get(&1), 1);
        let _again = c.try_acquire(1, 2).unwrap();
        drop(b);
        assert_eq!(c.get(&1), 1);
        assert_eq!(c.counts.len(), 1, "a key at zero is removed");
    }

    #[test]
    fn rates_refuse_past_the_quota_with_a_wait() {
        let limits = Limits {
            messages_per_minute: 2,
            recipients_per_hour: 1,
            ..Limits::default()
        };
        let r = UserRates::new(&limits, 1);
        assert!(r.take_message().is_ok());
        assert!(r.take_message().is_ok());
        let wait = r.take_message().unwrap_err();
        assert!(
            wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(r.take_recipient().is_ok());
        assert!(r.take_recipient().is_err());
    }

    #[test]
    fn auth_failures_lock_an_address_and_prune_forgets_it() {
        let l = AuthThrottle::new(2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(!l.locked(ip));
        l.failed(ip);
        l.failed(ip);
        assert!(!l.locked(ip), "the quota itself is allowed");
        l.failed(ip);
        assert!(l.locked(ip));
        assert!(!l.locked(other));
        l.prune();
        assert!(l.locked(ip), "a live lock survives pruning");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lockout_ends_in_paused_time() {
        let l = AuthThrottle::new(1);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        l.failed(ip);
        l.failed(ip);
        assert!(l.locked(ip));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!l.locked(ip), "a minute later the address may try again");
        // governor forgets a key once its state is as good as new (one more period).
        tokio::time::advance(Duration::from_secs(60)).await;
        l.prune();
        assert_eq!(l.tracked_addresses(), 0, "and nothing of it is kept");
    }

    #[test]
    fn a_renewed_throttle_keeps_todays_lockouts() {
        let l = Arc::new(AuthThrottle::new(1));
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        l.failed(ip);
        l.failed(ip);
        assert!(Arc::ptr_eq(&l, &l.renewed(1)), "same quota, same throttle");
        let next = l.renewed(5);
        assert_eq!(next.per_minute(), 5);
        assert!(next.locked(ip));
    }
}
