//! Connection slots held across replicas: a `Lease` is one member of a
//! Redis sorted set, renewed by `renew_loop` every third of `lease_ttl`. A
//! lease that cannot be renewed (Redis gone, or the member expired) is marked
//! lost; whoever holds it ends what uses it at the next safe point (a
//! provider connection after its transaction). `Hold` is a slot taken either
//! way: a lease, or — when Redis did not answer and `on_redis_error =
//! "local"` — a local guard within the divided limit. A lease dropped is
//! given back with the next decision sent (`decide`), or alone after a few ms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{Cluster, LeaseVerdict};

/// What the renewal knows of one lease.
pub(super) struct Held {
    pub(super) key: String,
    pub(super) member: String,
    lost: AtomicBool,
}

/// One slot held in Redis; dropping it gives the slot back.
pub struct Lease {
    cluster: Arc<Cluster>,
    id: u64,
    held: Arc<Held>,
}

impl Lease {
    pub(super) fn new(cluster: &Arc<Cluster>, id: u64, key: String, member: String) -> Lease {
        let held = Arc::new(Held {
            key,
            member,
            lost: AtomicBool::new(false),
        });
        cluster
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, held.clone());
        Lease {
            cluster: cluster.clone(),
            id,
            held,
        }
    }

    /// Whether a renewal failed: the slot may be someone else's by now.
    pub fn is_lost(&self) -> bool {
        self.held.lost.load(Ordering::Acquire)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.cluster
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        if self.is_lost() || !self.cluster.may_ask() {
            return;
        }
        // Given back with the next decision, or alone within a few ms; a
        // release that does not arrive is freed by the TTL.
        self.cluster
            .give(super::decide::Giving::Release(self.held.clone()));
    }
}

/// A slot taken with Redis's agreement or, in a fallback, within this
/// replica's share.
pub enum Hold {
    Shared(Lease),
    Local {
        _guard: Box<dyn std::any::Any + Send + Sync>,
        cluster: Arc<Cluster>,
    },
}

impl Hold {
    /// Whether what this slot allows should end after the current
    /// transaction: a lease that was lost, or a local slot now that Redis is
    /// back (so the shared count is whole again).
    pub fn should_end(&self) -> bool {
        match self {
            Hold::Shared(l) => l.is_lost(),
            Hold::Local { cluster, .. } => cluster.is_up(),
        }
    }
}

/// Why a shared slot could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapError {
    /// Every slot stayed held for the whole wait.
    Full,
    /// Redis did not answer and `on_redis_error = "refuse"`.
    Refused,
}

/// One upstream's `max_connections`, shared by every replica (and by every
/// account's pool of that upstream).
pub struct SharedCap {
    cluster: Arc<Cluster>,
    upstream: String,
    max: u32,
    /// The fallback: this replica's share of `max`.
    local: Arc<Semaphore>,
}

impl SharedCap {
    pub fn new(cluster: &Arc<Cluster>, upstream: &str, max: u32) -> Arc<SharedCap> {
        Arc::new(SharedCap {
            cluster: cluster.clone(),
            upstream: upstream.to_owned(),
            max: max.max(1),
            local: Arc::new(Semaphore::new(cluster.share_of(max) as usize)),
        })
    }

    /// Whether another holder waits for a slot: then one idle connection of
    /// this replica should close (its lease going back to the pool of slots).
    pub async fn wanted(&self) -> bool {
        self.cluster
            .slot_wanted(&["lease", "upstream", &self.upstream])
            .await
    }

    /// A slot for one provider connection, waiting up to `wait` while every
    /// slot is held elsewhere.
    ///
    /// # Errors
    /// `Full` after the wait; `Refused` when Redis did not answer and the
    /// configuration says refuse.
    pub async fn take(&self, wait: Duration) -> Result<Hold, CapError> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            match self
                .cluster
                .try_lease(&["lease", "upstream", &self.upstream], self.max)
                .await
            {
                LeaseVerdict::Granted(l) => return Ok(Hold::Shared(l)),
                LeaseVerdict::Full => {
                    if Instant::now() + pause > deadline {
                        return Err(CapError::Full);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                LeaseVerdict::Unavailable => {
                    if self.cluster.refuses() {
                        return Err(CapError::Refused);
                    }
                    self.cluster.fell_back("upstream_connections");
                    let left = deadline.saturating_duration_since(Instant::now());
                    let permit =
                        tokio::time::timeout(left, self.local.clone().acquire_owned()).await;
                    return match permit {
                        Ok(Ok(p)) => Ok(Hold::Local {
                            _guard: Box::new(p),
                            cluster: self.cluster.clone(),
                        }),
                        _ => Err(CapError::Full),
                    };
                }
            }
        }
    }
}

impl Cluster {
    /// At shutdown, once sessions and pools are closed: gives back every
    /// lease this replica still holds (whatever holds one is about to go;
    /// marked lost, its own drop sends nothing more) with what is queued,
    /// so the other replicas have the slots now rather than after the TTL.
    pub async fn give_all_back(self: &Arc<Self>) {
        let held: Vec<Arc<Held>> = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in held {
            if !h.lost.swap(true, Ordering::AcqRel) {
                self.give(super::decide::Giving::Release(h));
            }
        }
        self.flush().await;
    }

    /// Renews every live lease in one round trip (per 500); marks lost those
    /// Redis no longer holds, or all of them when Redis does not answer.
    async fn renew_all(&self) {
        let held: Vec<Arc<Held>> = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|h| !h.lost.load(Ordering::Acquire))
            .cloned()
            .collect();
        let ttl = u64::try_from(self.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        for chunk in held.chunks(500) {
            let mut call = self.scripts.renew.prepare_invoke();
            for h in chunk {
                call.key(&h.key);
            }
            for h in chunk {
                call.arg(&h.member);
            }
            call.arg(ttl);
            let mut conn = self.conn.clone();
            let renewed = self.ask(call.invoke_async::<Vec<u32>>(&mut conn)).await;
            for (i, h) in chunk.iter().enumerate() {
                let ok = renewed.as_ref().is_some_and(|r| r.get(i) == Some(&1));
                if !ok && !h.lost.swap(true, Ordering::AcqRel) {
                    self.metrics.leases_lost.inc();
                }
            }
        }
    }
}

/// Renews this replica's leases until the cluster is dropped.
pub(super) async fn renew_loop(cluster: Weak<Cluster>) {
    loop {
        let every = match cluster.upgrade() {
            Some(c) => c.lease_ttl / 3,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(c) = cluster.upgrade() else { return };
        c.renew_all().await;
    }
}
