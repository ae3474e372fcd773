//! The warm connection pool of one SMTP upstream: at most `max_connections`
//! connections (idle or in use, counted by a semaphore whose permit each
//! `Client` carries), idle ones kept for reuse until `idle_timeout` so the
//! provider's own idle cut never hits one postern is about to use, and a
//! periodic EHLO+AUTH+QUIT probe of the credentials (`upkeep`). Checking a
//! connection out and back in: `checkout`.
//!
//! With `[[upstream.account]]`, each account has its own pool (its own
//! credentials and idle list) in a `Group` that shares one semaphore of the
//! upstream's `max_connections`: there an idle connection keeps its slot, so
//! the cap counts every live connection of every account (and
//! `upstream_pool_connections_in_use` counts idle ones too), and a pool that
//! needs a slot while all are taken closes another account's idle connection
//! to free one.
//!
//! # Concurrency
//! `permits` is shared with every checked-out `Client` (an owned permit each);
//! `idle` and `learned` are short-held locks, never held across an await.

mod checkout;
mod upkeep;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::client::Client;
use super::dial::Dial;
use super::{Capabilities, UpstreamError};

/// Pool settings and state, one per SMTP upstream.
pub struct Pool {
    dial: Arc<Dial>,
    /// Keep connections between transactions (`pool = true`).
    pub enabled: bool,
    /// How long a client waits for a free connection (`pool_wait`).
    pub wait: Duration,
    /// How often the credentials are probed (`health_check_interval`; zero = never).
    pub health_check: Duration,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Client>>,
    /// Set when a reload replaced this upstream: nothing goes back in.
    retired: AtomicBool,
    /// What the upstream offered at its last EHLO.
    learned: RwLock<Option<Capabilities>>,
    /// `max_upstream_connections_per_user`: connections one user's sessions may hold at once.
    pub fair_share: u32,
    /// `max_connections`: with a share as large, the pool's own cap is the bound.
    max: u32,
    per_user: dashmap::DashMap<Arc<str>, Arc<Semaphore>>,
    /// What the last connection set-up (probe or traffic) showed.
    health: Mutex<Health>,
    /// The accounts' pools sharing `permits`, when this is one of them.
    group: Option<Arc<Group>>,
    /// `fallback = [...]`: upstreams tried in order when this one cannot be set up.
    failover: std::sync::OnceLock<Vec<std::sync::Weak<super::Upstream>>>,
    /// The upstream's `max_recipients` and `max_message_size`.
    limits: Limits,
    /// With `[cluster]`: `max_connections` shared with the other replicas.
    shared: OnceLock<Arc<crate::cluster::SharedCap>>,
    gauges: Gauges,
}

/// The pool's metric series, looked up once: `with_label_values` hashes its
/// labels at each call, and a message's checkout and checkin made five.
struct Gauges {
    idle: prometheus::IntGauge,
    in_use: prometheus::IntGauge,
    waiters: prometheus::IntGauge,
    wait: prometheus::Histogram,
}

impl Gauges {
    fn of(dial: &Dial) -> Gauges {
        let m = &dial.metrics;
        let name = [&*dial.name];
        Gauges {
            idle: m.upstream_connections_idle.with_label_values(&name),
            in_use: m.upstream_pool_in_use.with_label_values(&name),
            waiters: m.upstream_pool_waiters.with_label_values(&name),
            wait: m.upstream_pool_wait_duration.with_label_values(&name),
        }
    }
}

/// The pool settings every account of an upstream shares.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub enabled: bool,
    pub wait: Duration,
    pub health_check: Duration,
    /// `max_upstream_connections_per_user`, per account's pool.
    pub fair_share: u32,
    /// The upstream's own caps, for a transaction that fails over to it.
    pub limits: Limits,
}

/// An upstream's `max_recipients` and `max_message_size`, known to its pools
/// so that a transaction failing over to it keeps to them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_recipients: Option<u32>,
    pub max_message_size: Option<u64>,
}

/// The pools of one upstream's accounts: one cap for all of them.
pub struct Group {
    max: u32,
    permits: Arc<Semaphore>,
    pools: Mutex<Vec<std::sync::Weak<Pool>>>,
}

impl Group {
    pub fn new(max: u32) -> Arc<Group> {
        Arc::new(Group {
            max: max.max(1),
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            pools: Mutex::new(Vec::new()),
        })
    }

    /// Closes one idle connection of another account than `except`, freeing
    /// its slot once its QUIT is done. Whether there was one.
    fn evict_one(&self, except: &Pool) -> bool {
        let pools: Vec<Arc<Pool>> = self
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for p in pools
            .iter()
            .filter(|p| !std::ptr::eq(Arc::as_ptr(p), except))
        {
            let oldest = {
                let mut idle = p.idle();
                (!idle.is_empty()).then(|| idle.remove(0))
            };
            if let Some(c) = oldest {
                p.idle_gauge().dec();
                tokio::spawn(c.quit());
                return true;
            }
        }
        false
    }
}

/// What the last connection set-up of an upstream showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not tried yet.
    Unknown,
    Up,
    /// The last set-up failed, and why (never a password).
    Down(String),
}

/// Why a connection is opened: traffic is counted in the traffic families,
/// a health probe only in `postern_upstream_health_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Traffic,
    Probe,
}

/// One of the pool's `max_connections` slots, held by a checked-out
/// connection or a probe; counted in `upstream_pool_connections_in_use`.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_use: prometheus::IntGauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, in_use: &prometheus::IntGauge) -> Slot {
        let in_use = in_use.clone();
        in_use.inc();
        Slot {
            _permit: permit,
            in_use,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_use.dec();
    }
}

impl Pool {
    pub fn new(
        dial: Arc<Dial>,
        enabled: bool,
        max: u32,
        wait: Duration,
        health_check: Duration,
    ) -> Pool {
        dial.metrics
            .upstream_pool_max
            .with_label_values(&[&dial.name])
            .set(i64::from(max.max(1)));
        Pool {
            gauges: Gauges::of(&dial),
            dial,
            enabled,
            wait,
            health_check,
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            learned: RwLock::new(None),
            fair_share: max.max(1),
            max: max.max(1),
            per_user: dashmap::DashMap::new(),
            health: Mutex::new(Health::Unknown),
            group: None,
            failover: std::sync::OnceLock::new(),
            limits: Limits::default(),
            shared: OnceLock::new(),
        }
    }

    /// One account's pool in `group`, sharing its cap.
    pub fn in_group(dial: Arc<Dial>, s: &Settings, group: &Arc<Group>) -> Arc<Pool> {
        dial.metrics
            .upstream_pool_max
            .with_label_values(&[&dial.name])
            .set(i64::from(group.max));
        let pool = Arc::new(Pool {
            gauges: Gauges::of(&dial),
            dial,
            enabled: s.enabled,
            wait: s.wait,
            health_check: s.health_check,
            permits: group.permits.clone(),
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            learned: RwLock::new(None),
            fair_share: s.fair_share.max(1),
            max: group.max,
            per_user: dashmap::DashMap::new(),
            health: Mutex::new(Health::Unknown),
            group: Some(group.clone()),
            failover: std::sync::OnceLock::new(),
            limits: s.limits,
            shared: OnceLock::new(),
        });
        group
            .pools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&pool));
        pool
    }

    /// What the last connection set-up showed.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After a reload: until its own first set-up, this pool reports what the
    /// pool it replaces last saw (so a reload never makes a down upstream look ready).
    pub fn inherit_health(&self, previous: &Pool) {
        let h = previous.health();
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = h;
    }

    /// Records a set-up outcome: `upstream_up`, the last AUTH success, `health`.
    /// A full pool says nothing about the upstream and is not recorded.
    fn record_setup(&self, result: Result<(), &UpstreamError>) {
        let m = &self.dial.metrics;
        let name = &*self.dial.name;
        let health = match result {
            Ok(()) => {
                m.upstream_last_auth_success
                    .with_label_values(&[name])
                    .set(crate::metrics::unix_now());
                Health::Up
            }
            Err(UpstreamError::PoolTimeout | UpstreamError::SharedLimits) => return,
            Err(e) => Health::Down(e.to_string()),
        };
        m.upstream_up
            .with_label_values(&[name])
            .set(i64::from(health == Health::Up));
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = health;
    }

    /// Sets the upstream's `max_recipients` and `max_message_size`.
    pub fn with_limits(mut self, limits: Limits) -> Pool {
        self.limits = limits;
        self
    }

    /// The most recipients one transaction may have here (`max_recipients`).
    pub fn max_recipients(&self) -> Option<u32> {
        self.limits.max_recipients
    }

    /// The largest message this upstream takes: its `max_message_size`, or
    /// the SIZE it advertised when smaller.
    pub fn max_message_size(&self) -> Option<u64> {
        let advertised = self.capabilities().and_then(|c| c.size).filter(|&n| n > 0);
        [self.limits.max_message_size, advertised]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sets `max_upstream_connections_per_user` (at least 1).
    pub fn with_fair_share(mut self, share: u32) -> Pool {
        self.fair_share = share.max(1);
        self
    }

    pub fn dial(&self) -> &Arc<Dial> {
        &self.dial
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn idle_gauge(&self) -> &prometheus::IntGauge {
        &self.gauges.idle
    }

    /// Records what the upstream offered, for the EHLO postern gives its clients.
    pub fn learn(&self, caps: &Capabilities) {
        if let Ok(mut l) = self.learned.write() {
            *l = Some(caps.clone());
        }
    }

    /// What the upstream is known to offer, if it was reached yet.
    pub fn capabilities(&self) -> Option<Capabilities> {
        self.learned.read().ok().and_then(|l| l.clone())
    }

    /// With `[cluster]`: the upstream's `max_connections` counts every
    /// replica's connections (set once, when the policy is built).
    pub fn share_cap(&self, cap: Arc<crate::cluster::SharedCap>) {
        let _ = self.shared.set(cap);
    }
}
