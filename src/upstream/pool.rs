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
//! # Concurrency
//! `permits` is shared with every checked-out `Client` (an owned permit each);
//! `idle` and `learned` are short-held locks, never held across an await.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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
}

impl Pool {
    pub fn new(
        dial: Arc<Dial>,
        enabled: bool,
        max: u32,
        wait: Duration,
        health_check: Duration,
    ) -> Pool {
        Pool {
            dial,
            enabled,
            wait,
            health_check,
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            learned: RwLock::new(None),
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

    /// Opens and authenticates a new connection, learning its capabilities.
    async fn connect(&self) -> Result<Client, UpstreamError> {
        let c = Client::connect(self.dial.clone()).await?;
        self.learn(c.caps());
        Ok(c)
    }

    /// A connection for one transaction: an idle one if a fresh one is there,
    /// else a new one, within `max_connections`; waits up to `pool_wait`.
    ///
    /// # Errors
    /// `PoolTimeout` when every connection stayed busy, or what connecting reports.
    pub async fn checkout(&self) -> Result<Client, UpstreamError> {
        let permit: OwnedSemaphorePermit =
            match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                // Counted as a limit hit where it is refused (`Refusal::limit`).
                _ => return Err(UpstreamError::PoolTimeout),
            };
        loop {
            let candidate = self.idle().pop();
            let Some(mut c) = candidate else { break };
            self.idle_gauge().dec();
            if c.is_stale() {
                tokio::spawn(c.quit());
                continue;
            }
            c.set_permit(permit);
            return Ok(c);
        }
        let mut c = self.connect().await?;
        c.set_permit(permit);
        Ok(c)
    }

    /// Takes a connection back after a transaction. It is kept only when the
    /// pool is on and the connection is clean; otherwise it says QUIT.
    pub fn checkin(&self, mut client: Client) {
        drop(client.take_permit());
        if !self.enabled || self.retired.load(Ordering::Acquire) || client.is_stale() {
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
        let permit = dead.take_permit();
        drop(dead);
        let mut fresh = self.connect().await?;
        if let Some(p) = permit {
            fresh.set_permit(p);
        }
        fresh.queue_raw(&batch);
        fresh.flush_commands().await?;
        Ok(fresh)
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
                idle.drain(..).partition(Client::is_stale);
            *idle = fresh;
            stale
        };
        self.idle_gauge().sub(stale.len() as i64);
        for c in stale {
            tokio::spawn(c.quit());
        }
    }

    /// Connects once (EHLO, AUTH), learns the capabilities and says QUIT.
    ///
    /// # Errors
    /// What connecting reports.
    pub async fn probe(&self) -> Result<(), UpstreamError> {
        self.connect().await?.quit().await;
        Ok(())
    }

    /// Keeps the pool tidy and probes the credentials, until it is retired or dropped.
    pub async fn maintain(pool: std::sync::Weak<Pool>) {
        let (tick, health) = match pool.upgrade() {
            Some(p) => (
                (p.dial.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
                p.health_check,
            ),
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
            since_probe += tick;
            if !health.is_zero() && since_probe >= health {
                since_probe = Duration::ZERO;
                // The probe is a connection too: only when one is free under the cap.
                let Ok(_slot) = p.permits.clone().try_acquire_owned() else {
                    continue;
                };
                if let Err(e) = p.probe().await {
                    tracing::warn!(upstream = %p.dial.name, error = %e, "upstream health check failed");
                }
            }
        }
    }
}
