//! The warm connection pool of one SMTP upstream: at most `max_connections`
//! connections (idle or in use, counted by a semaphore whose permit each
//! `Client` carries), idle ones kept for reuse until `idle_timeout` so the
//! provider's own idle cut never hits one postern is about to use, and a
//! periodic EHLO+AUTH+QUIT probe of the credentials.
//!
//! A client session checks a connection out at MAIL and gives it back when it
//! has no transaction open, so one quiet device never holds a provider slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::client::Client;
use super::{Upstream, UpstreamError};

/// Pool settings and state, one per SMTP upstream.
pub struct Pool {
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
}

impl Pool {
    pub fn new(enabled: bool, max: u32, wait: Duration, health_check: Duration) -> Pool {
        Pool {
            enabled,
            wait,
            health_check,
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Upstream {
    /// A connection for one transaction: an idle one if a fresh one is there,
    /// else a new one, within `max_connections`; waits up to `pool_wait`.
    ///
    /// # Errors
    /// `PoolTimeout` when every connection stayed busy, or what connecting reports.
    pub async fn checkout(self: &Arc<Self>) -> Result<Client, UpstreamError> {
        let permit: OwnedSemaphorePermit =
            match tokio::time::timeout(self.pool.wait, self.pool.permits.clone().acquire_owned())
                .await
            {
                Ok(Ok(p)) => p,
                _ => {
                    self.metrics
                        .limit_hits
                        .with_label_values(&["upstream_connections"])
                        .inc();
                    return Err(UpstreamError::PoolTimeout);
                }
            };
        loop {
            let candidate = self.pool.idle().pop();
            let Some(mut c) = candidate else { break };
            self.idle_gauge().dec();
            if c.is_stale() {
                tokio::spawn(c.quit());
                continue;
            }
            c.set_permit(permit);
            return Ok(c);
        }
        let mut c = Client::connect(self.clone()).await?;
        c.set_permit(permit);
        Ok(c)
    }

    /// Takes a connection back after a transaction. It is kept only when the
    /// pool is on and the connection is clean; otherwise it says QUIT.
    pub fn checkin(&self, mut client: Client) {
        drop(client.take_permit());
        if !self.pool.enabled || self.pool.retired.load(Ordering::Acquire) || client.is_stale() {
            tokio::spawn(client.quit());
            return;
        }
        self.idle_gauge().inc();
        self.pool.idle().push(client);
    }

    /// Connections waiting in the pool now.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle().len()
    }

    /// After a reload replaced this upstream: close what is idle, keep nothing more.
    pub fn retire(&self) {
        self.pool.retired.store(true, Ordering::Release);
        let idle: Vec<Client> = std::mem::take(&mut *self.pool.idle());
        self.idle_gauge().sub(idle.len() as i64);
        for c in idle {
            tokio::spawn(c.quit());
        }
    }

    /// At shutdown: retire the pool and say QUIT on every idle connection, waiting
    /// a little for the goodbyes.
    pub async fn close_pool(&self) {
        self.pool.retired.store(true, Ordering::Release);
        let idle: Vec<Client> = std::mem::take(&mut *self.pool.idle());
        self.idle_gauge().sub(idle.len() as i64);
        let quits = idle.into_iter().map(Client::quit);
        let _ = tokio::time::timeout(Duration::from_secs(5), futures_join_all(quits)).await;
    }

    fn idle_gauge(&self) -> prometheus::IntGauge {
        self.metrics
            .upstream_connections_idle
            .with_label_values(&[&self.name])
    }

    /// Closes idle connections before the provider's idle cut would.
    fn close_stale(&self) {
        let stale: Vec<Client> = {
            let mut idle = self.pool.idle();
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
}

/// Keeps one upstream's pool tidy and probes its credentials, until the upstream
/// is retired or dropped.
pub async fn maintain(upstream: Weak<Upstream>) {
    let (tick, health) = match upstream.upgrade() {
        Some(u) => (
            (u.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
            u.pool.health_check,
        ),
        None => return,
    };
    let mut since_probe = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let Some(u) = upstream.upgrade() else { return };
        if u.pool.retired.load(Ordering::Acquire) {
            return;
        }
        u.close_stale();
        since_probe += tick;
        if !health.is_zero() && since_probe >= health {
            since_probe = Duration::ZERO;
            // The probe is a connection too: only when one is free under the cap.
            let Ok(_slot) = u.pool.permits.clone().try_acquire_owned() else {
                continue;
            };
            if let Err(e) = u.probe().await {
                tracing::warn!(upstream = %u.name, error = %e, "upstream health check failed");
            }
        }
    }
}

/// Runs futures to completion together (a tiny `join_all` without another crate).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}
