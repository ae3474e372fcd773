//! Checking connections out and back in. The pool is the only place that
//! opens connections and moves permits: a session checks a connection out at
//! MAIL, gives it back when it has no transaction open (so one quiet device
//! never holds a provider slot), and asks the pool to `replace` a kept
//! connection that turned out dead.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{Group, Pool, Purpose, Slot};
use crate::upstream::UpstreamError;
use crate::upstream::client::Client;

/// Counts a session in `upstream_pool_waiters` while it waits.
struct Waiting(prometheus::IntGauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Pool {
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
    pub fn set_failover(&self, upstreams: Vec<std::sync::Weak<crate::upstream::Upstream>>) {
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
    pub(super) async fn connect(
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
        let waiters = self.gauges.waiters.clone();
        waiters.inc();
        let waiting = Waiting(waiters);
        let started = Instant::now();
        let got = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await;
        drop(waiting);
        self.gauges.wait.observe(started.elapsed().as_secs_f64());
        match got {
            Ok(Ok(p)) => Ok(Slot::new(p, &self.gauges.in_use)),
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
            Ok(p) => Slot::new(p, &self.gauges.in_use),
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
}
