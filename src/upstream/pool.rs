//! The warm connection pool of one SMTP upstream: at most `max_connections`
//! connections (idle or in use, counted by a semaphore whose permit each
//! `Client` carries), idle ones kept for reuse until `idle_timeout` so the
//! provider's own idle cut never hits one postern is about to use, and a
//! periodic EHLO+AUTH+QUIT probe of the credentials.
//!
//! The pool is the only place that opens connections and moves permits: a
//! session checks a connection out at MAIL, gives it back when it has no
//! transaction open (so one quiet device never holds a provider slot), and asks
//! the pool to `replace` a kept connection that turned out dead.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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
    fn new(permit: OwnedSemaphorePermit, dial: &Dial) -> Slot {
        let in_use = dial
            .metrics
            .upstream_pool_in_use
            .with_label_values(&[&dial.name]);
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

/// Counts a session in `upstream_pool_waiters` while it waits.
struct Waiting(prometheus::IntGauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
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

    /// A connection for one of `user`'s transactions: first the user's share
    /// (so one device cannot hold every provider slot), then `checkout`. Both
    /// waits together are bounded by `pool_wait`.
    ///
    /// # Errors
    /// `UserShareFull` when the user's share stayed full, `PoolTimeout` when
    /// the pool did; what connecting reports.
    pub async fn checkout_for(&self, user: &str) -> Result<Client, UpstreamError> {
        if self.fair_share >= self.max {
            return self.checkout().await;
        }
        let sem = self
            .per_user
            .entry(Arc::from(user))
            .or_insert_with(|| Arc::new(Semaphore::new(self.fair_share as usize)))
            .clone();
        let mine = match tokio::time::timeout(self.wait, sem.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                // Counted once, by whoever answers the device (see `refusal`).
                tracing::info!(upstream = %self.dial.name, user, share = self.fair_share, "user holds its share of upstream connections");
                return Err(UpstreamError::UserShareFull);
            }
        };
        let mut c = self.checkout().await?;
        c.set_user_permit(mine);
        Ok(c)
    }

    /// Sets the upstreams tried in order when this pool cannot set up a
    /// connection (`fallback = [...]`); once, when the policy is built.
    pub fn set_failover(&self, upstreams: Vec<std::sync::Weak<super::Upstream>>) {
        let _ = self.failover.set(upstreams);
    }

    /// A connection of this pool or, when setting one up fails (connect, TLS,
    /// greeting, EHLO, AUTH, token), of each `fallback` upstream in order
    /// (the account of `sender` there, if it has accounts). A full pool
    /// (`PoolTimeout`, `UserShareFull`) is not a failure: no failover then. With `user`, the
    /// user's share of each pool applies (`checkout_for`).
    ///
    /// # Errors
    /// The first pool's error when every one failed.
    pub async fn checkout_failover(
        self: &Arc<Pool>,
        sender: &str,
        user: Option<&str>,
    ) -> Result<(Arc<Pool>, Client), UpstreamError> {
        let first = match self.checkout_user(user).await {
            Ok(c) => return Ok((self.clone(), c)),
            Err(e @ (UpstreamError::PoolTimeout | UpstreamError::UserShareFull)) => return Err(e),
            Err(e) => e,
        };
        let Some(list) = self.failover.get() else {
            return Err(first);
        };
        for up in list.iter().filter_map(std::sync::Weak::upgrade) {
            let Some(pool) = up.pool_for(sender) else {
                continue;
            };
            let to = &pool.dial.name;
            match pool.checkout_user(user).await {
                Ok(c) => {
                    tracing::warn!(upstream = %self.dial.name, fallback = %to, error = %first, "upstream unavailable; failing over");
                    self.dial
                        .metrics
                        .upstream_failovers
                        .with_label_values(&[&self.dial.name, to])
                        .inc();
                    return Ok((pool.clone(), c));
                }
                Err(e) => {
                    tracing::warn!(upstream = %self.dial.name, fallback = %to, error = %e, "fallback upstream unavailable too");
                }
            }
        }
        Err(first)
    }

    async fn checkout_user(&self, user: Option<&str>) -> Result<Client, UpstreamError> {
        match user {
            Some(u) => self.checkout_for(u).await,
            None => self.checkout().await,
        }
    }

    pub fn dial(&self) -> &Arc<Dial> {
        &self.dial
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn idle_gauge(&self) -> prometheus::IntGauge {
        self.dial
            .metrics
            .upstream_connections_idle
            .with_label_values(&[&self.dial.name])
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

    /// The one place a provider connection takes its share of the cap across
    /// replicas (every new connection — traffic, replacement, probe — is
    /// opened by `connect`, so nothing else needs to know): a lease held for
    /// the connection's whole life, idle time included, since an idle
    /// connection is open at the provider too. Without `[cluster]`, nothing.
    ///
    /// # Errors
    /// `PoolTimeout` when every shared slot stayed held for `wait`;
    /// `SharedLimits` when Redis did not answer and `on_redis_error = "refuse"`.
    async fn hold(&self, wait: Duration) -> Result<Option<crate::cluster::Hold>, UpstreamError> {
        let Some(cap) = self.shared.get() else {
            return Ok(None);
        };
        match cap.take(wait).await {
            Ok(h) => Ok(Some(h)),
            Err(crate::cluster::CapError::Full) => {
                // Our own other accounts' idle connections count too: free one
                // for the next try (traffic only; a probe simply skips).
                if let Some(group) = &self.group
                    && !wait.is_zero()
                {
                    group.evict_one(self);
                }
                Err(UpstreamError::PoolTimeout)
            }
            Err(crate::cluster::CapError::Refused) => Err(UpstreamError::SharedLimits),
        }
    }

    /// Opens and authenticates a new connection, learning its capabilities.
    /// `carried`: the shared slot of the connection it replaces.
    async fn connect(
        &self,
        purpose: Purpose,
        carried: Option<crate::cluster::Hold>,
    ) -> Result<Client, UpstreamError> {
        let hold = match carried {
            Some(h) => Some(h),
            None => {
                let wait = match purpose {
                    Purpose::Traffic => self.wait,
                    Purpose::Probe => Duration::ZERO,
                };
                self.hold(wait).await?
            }
        };
        let result = Client::connect(self.dial.clone(), purpose).await;
        self.record_setup(result.as_ref().map(|_| ()));
        let mut c = result?;
        c.set_hold(hold);
        self.learn(c.caps());
        Ok(c)
    }

    /// Waits up to `pool_wait` for a slot, counted as a waiter and timed.
    async fn acquire(&self) -> Result<Slot, UpstreamError> {
        let m = &self.dial.metrics;
        let name = &*self.dial.name;
        let waiters = m.upstream_pool_waiters.with_label_values(&[name]);
        waiters.inc();
        let waiting = Waiting(waiters);
        let started = Instant::now();
        let got = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
        drop(waiting);
        m.upstream_pool_wait_duration
            .with_label_values(&[name])
            .observe(started.elapsed().as_secs_f64());
        match got {
            Ok(Ok(p)) => Ok(Slot::new(p, &self.dial)),
            _ => Err(UpstreamError::PoolTimeout),
        }
    }

    /// A connection for one transaction: an idle one if a fresh one is there,
    /// else a new one, within `max_connections`; waits up to `pool_wait`.
    ///
    /// # Errors
    /// `PoolTimeout` when every connection stayed busy, or what connecting reports.
    pub async fn checkout(&self) -> Result<Client, UpstreamError> {
        if let Some(group) = &self.group {
            return self.checkout_in_group(group).await;
        }
        // Counted as a limit hit where it is refused (`Refusal::limit`), with the user.
        let permit = self.acquire().await?;
        loop {
            let candidate = self.idle().pop();
            let Some(mut c) = candidate else { break };
            self.idle_gauge().dec();
            if c.is_stale() || c.must_close() {
                tokio::spawn(c.quit());
                continue;
            }
            if c.is_closing().await {
                tracing::debug!(upstream = %self.dial.name, "idle connection closed by the provider; not reused");
                continue;
            }
            c.set_permit(permit);
            return Ok(c);
        }
        let mut c = self.connect(Purpose::Traffic, None).await?;
        c.set_permit(permit);
        Ok(c)
    }

    /// `checkout` for an account's pool: its own idle connection (which holds
    /// its slot), else a slot — taken from another account's idle connection
    /// when all are in use — and a new connection.
    async fn checkout_in_group(&self, group: &Group) -> Result<Client, UpstreamError> {
        loop {
            let candidate = self.idle().pop();
            let Some(mut c) = candidate else { break };
            self.idle_gauge().dec();
            if c.is_stale() || c.must_close() {
                tokio::spawn(c.quit());
                continue;
            }
            if c.is_closing().await {
                // Dropped: its slot is free again.
                tracing::debug!(upstream = %self.dial.name, "idle connection closed by the provider; not reused");
                continue;
            }
            return Ok(c);
        }
        let slot = match self.permits.clone().try_acquire_owned() {
            Ok(p) => Slot::new(p, &self.dial),
            Err(_) => {
                group.evict_one(self);
                self.acquire().await?
            }
        };
        let mut c = self.connect(Purpose::Traffic, None).await?;
        c.set_permit(slot);
        Ok(c)
    }

    /// Takes a connection back after a transaction. It is kept only when the
    /// pool is on and the connection is clean; otherwise it says QUIT. In an
    /// account group, a kept connection keeps its slot.
    pub fn checkin(&self, mut client: Client) {
        if self.group.is_none() {
            drop(client.take_permit());
        }
        if !self.enabled
            || self.retired.load(Ordering::Acquire)
            || client.is_stale()
            || client.must_close()
        {
            tokio::spawn(client.quit());
            return;
        }
        self.idle_gauge().inc();
        self.idle().push(client);
    }

    /// A kept connection died before answering its last batch: opens a new one
    /// in the same slot (the permit moves over) and sends it that batch again.
    ///
    /// # Errors
    /// What connecting or sending reports; the slot is freed then.
    pub async fn replace(&self, mut dead: Client) -> Result<Client, UpstreamError> {
        let batch = dead.take_last_batch();
        let mine = dead.take_user_permit();
        let permit = dead.take_permit();
        let hold = dead.take_hold();
        drop(dead);
        let mut fresh = self.connect(Purpose::Traffic, hold).await?;
        if let Some(p) = permit {
            fresh.set_permit(p);
        }
        if let Some(p) = mine {
            fresh.set_user_permit(p);
        }
        fresh.queue_raw(&batch);
        fresh.flush_commands().await?;
        Ok(fresh)
    }

    /// Whether a reload replaced this upstream (its delivery loop ends).
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Connections waiting in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.idle().len()
    }

    /// After a reload replaced this upstream: close what is idle, keep nothing more.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        for c in self.take_idle() {
            tokio::spawn(c.quit());
        }
    }

    /// At shutdown: retire the pool and say QUIT on every idle connection, waiting
    /// a little for the goodbyes.
    pub async fn close(&self) {
        self.retired.store(true, Ordering::Release);
        let mut set = tokio::task::JoinSet::new();
        for c in self.take_idle() {
            set.spawn(c.quit());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while set.join_next().await.is_some() {}
        })
        .await;
    }

    fn take_idle(&self) -> Vec<Client> {
        let idle: Vec<Client> = std::mem::take(&mut *self.idle());
        self.idle_gauge().sub(idle.len() as i64);
        idle
    }

    /// Closes idle connections before the provider's idle cut would.
    fn close_stale(&self) {
        let stale: Vec<Client> = {
            let mut idle = self.idle();
            let (stale, fresh): (Vec<Client>, Vec<Client>) =
                idle.drain(..).partition(|c| c.is_stale() || c.must_close());
            *idle = fresh;
            stale
        };
        self.idle_gauge().sub(stale.len() as i64);
        for c in stale {
            tokio::spawn(c.quit());
        }
    }

    /// Health probe: connects once (EHLO, AUTH), learns the capabilities and
    /// says QUIT, in a slot of the pool, so a probe never takes the upstream
    /// over `max_connections`. `Ok(false)`: every slot was busy, no probe
    /// (the traffic shows the upstream's health then).
    ///
    /// # Errors
    /// What connecting reports.
    pub async fn probe(&self) -> Result<bool, UpstreamError> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Ok(false);
        };
        let _slot = Slot::new(permit, &self.dial);
        // An idle connection holds no slot but is open at the provider: close
        // one to make room, so idle + in use + the probe stay within the cap.
        // (In an account group idle connections hold their slots already.)
        let idle = if self.group.is_none() {
            self.idle().pop()
        } else {
            None
        };
        if let Some(c) = idle {
            self.idle_gauge().dec();
            c.quit().await;
        }
        match self.connect(Purpose::Probe, None).await {
            Ok(c) => c.quit().await,
            // Every shared slot is held by traffic somewhere: no probe now.
            Err(UpstreamError::PoolTimeout | UpstreamError::SharedLimits) => return Ok(false),
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// With `[cluster]`: when another replica waits for one of the shared
    /// slots, closes this pool's oldest idle connection (which holds one).
    async fn yield_idle(&self) {
        let Some(cap) = self.shared.get() else { return };
        if self.idle().is_empty() || !cap.wanted().await {
            return;
        }
        let oldest = {
            let mut idle = self.idle();
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        if let Some(c) = oldest {
            self.idle_gauge().dec();
            tracing::debug!(upstream = %self.dial.name, "another replica waits for a connection slot; closing an idle one");
            tokio::spawn(c.quit());
        }
    }

    /// Keeps the pool tidy and probes the credentials, until it is retired or
    /// dropped. With `[cluster]` it ticks at least every 250 ms, so a slot
    /// another replica waits for is given up quickly.
    pub async fn maintain(pool: std::sync::Weak<Pool>) {
        let (tick, health) = match pool.upgrade() {
            Some(p) => {
                let mut tick = (p.dial.idle_timeout / 4)
                    .clamp(Duration::from_millis(100), Duration::from_secs(5));
                if p.shared.get().is_some() {
                    tick = tick.min(Duration::from_millis(250));
                }
                (tick, p.health_check)
            }
            None => return,
        };
        let mut since_probe = Duration::ZERO;
        loop {
            tokio::time::sleep(tick).await;
            let Some(p) = pool.upgrade() else { return };
            if p.retired.load(Ordering::Acquire) {
                return;
            }
            p.close_stale();
            p.yield_idle().await;
            since_probe += tick;
            if !health.is_zero() && since_probe >= health {
                since_probe = Duration::ZERO;
                // The probe is a connection too: only when one is free under the cap.
                if let Err(e) = p.probe().await {
                    tracing::warn!(upstream = %p.dial.name, error = %e, "upstream health check failed");
                }
            }
        }
    }
}
