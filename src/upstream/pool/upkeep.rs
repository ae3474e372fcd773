//! The pool's upkeep: idle connections closed before the provider's idle cut
//! (and, with `[cluster]`, given up when another replica waits for a slot),
//! the periodic probe of the credentials, and retiring the pool at a reload
//! or shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Pool, Purpose, Slot};
use crate::upstream::UpstreamError;
use crate::upstream::client::Client;

impl Pool {
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
        let _slot = Slot::new(permit, &self.gauges.in_use);
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
