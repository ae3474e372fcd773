//! Limits that span connections: per-user message and recipient rates
//! (governor), concurrent connections per user and per client address (counted
//! in a `DashMap`, released by a guard's `Drop`), and the brute-force throttle on
//! failed AUTH per client address, which is checked before any password hash is
//! computed.
//!
//! Address keys are the IPv4 address, or the /64 prefix of an IPv6 address (one
//! subscriber usually owns a whole /64). The maps are pruned by `prune`, which
//! the server runs every minute, so addresses an attacker chooses cannot grow
//! them without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

pub use crate::addr::ip_key;
use crate::config::Limits;

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// A user's message and recipient rates (one per user per policy; a reload
/// starts them afresh).
#[derive(Debug)]
pub struct UserRates {
    messages: DefaultDirectRateLimiter,
    recipients: DefaultDirectRateLimiter,
}

impl UserRates {
    pub fn new(limits: &Limits) -> UserRates {
        UserRates {
            messages: RateLimiter::direct(Quota::per_minute(nonzero(limits.messages_per_minute))),
            recipients: RateLimiter::direct(Quota::per_hour(nonzero(limits.recipients_per_hour))),
        }
    }

    /// Takes one message from the per-minute quota, or says how long to wait.
    pub fn take_message(&self) -> Result<(), Duration> {
        self.messages
            .check()
            .map_err(|nu| nu.wait_time_from(DefaultClock::default().now()))
    }

    /// Takes one recipient from the per-hour quota, or says how long to wait.
    pub fn take_recipient(&self) -> Result<(), Duration> {
        self.recipients
            .check()
            .map_err(|nu| nu.wait_time_from(DefaultClock::default().now()))
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

/// Limits kept across reloads: they count live connections and recent failures.
pub struct Limiters {
    pub connections_per_ip: Counter<IpAddr>,
    pub connections_per_user: Counter<Arc<str>>,
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Addresses refused AUTH until the instant given.
    locked: DashMap<IpAddr, Instant>,
}

impl Limiters {
    /// `auth_failures_per_minute` is the server-wide `[limits]` value (a per-user
    /// value cannot apply: the user is not known when AUTH fails).
    pub fn new(auth_failures_per_minute: u32) -> Limiters {
        Limiters {
            connections_per_ip: Counter::default(),
            connections_per_user: Counter::default(),
            auth_failures: RateLimiter::keyed(Quota::per_minute(nonzero(auth_failures_per_minute))),
            locked: DashMap::new(),
        }
    }

    /// Whether AUTH from `ip` is refused for now (too many recent failures).
    pub fn auth_locked(&self, ip: IpAddr) -> bool {
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
    pub fn auth_failed(&self, ip: IpAddr) {
        let key = ip_key(ip);
        if let Err(not_until) = self.auth_failures.check_key(&key) {
            let wait = not_until.wait_time_from(self.auth_failures.clock().now());
            self.locked
                .insert(key, Instant::now() + wait.max(Duration::from_secs(1)));
        }
    }

    /// Drops state that no longer matters. Run every minute or so.
    pub fn prune(&self) {
        self.auth_failures.retain_recent();
        self.auth_failures.shrink_to_fit();
        let now = Instant::now();
        self.locked.retain(|_, until| *until > now);
    }

    /// Entries held, for tests and debugging.
    pub fn tracked_addresses(&self) -> usize {
        self.auth_failures.len() + self.locked.len()
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
        let r = UserRates::new(&limits);
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
        let l = Limiters::new(2);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(!l.auth_locked(ip));
        l.auth_failed(ip);
        l.auth_failed(ip);
        assert!(!l.auth_locked(ip), "the quota itself is allowed");
        l.auth_failed(ip);
        assert!(l.auth_locked(ip));
        assert!(!l.auth_locked(other));
        l.prune();
        assert!(l.auth_locked(ip), "a live lock survives pruning");
    }
}
