//! Where password checks run: a bounded number at once (`[server]
//! auth_workers`) on the blocking threads, with at most `[server] auth_queue`
//! more waiting their turn. An AUTH that finds the queue full is not checked
//! at all: the session answers `454 4.7.0` (RFC 4954, "Temporary
//! authentication failure") and the client may try again later. So a flood
//! of AUTHs, however many connections it opens and whatever names it tries,
//! holds at most `auth_workers` threads of argon2 and `auth_workers +
//! auth_queue` sessions waiting, and sessions that already authenticated keep
//! the rest of the machine (docs/architecture.md, "The AUTH queue").
//!
//! Admission happens before anything about the user name is known to the
//! pool: a known and an unknown user are admitted, queued and refused alike.
//!
//! # Concurrency
//! `admitted` counts running and waiting checks with atomics only. A check's
//! permit and its place are held by the blocking closure itself, so a session
//! that goes away while its check runs (a dropped future) does not free the
//! place early: the bound holds for threads, not just for sessions. The
//! scratch list is a short-held `std` lock taken on the blocking thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;
use tokio::sync::Semaphore;

use crate::password::{PasswordHash, Scratch};
use crate::secret::SecretString;

/// How long, at least, a session holds back the 454 of an AUTH the full
/// queue refused; `busy_delay` adds up to as much again.
pub const BUSY_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// `BUSY_DELAY` plus a random part of up to `BUSY_DELAY` (spread, so a flood
/// refused at one moment does not all come back at the next one).
pub fn busy_delay() -> std::time::Duration {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let random = std::collections::hash_map::RandomState::new().hash_one(nanos);
    BUSY_DELAY + BUSY_DELAY.mul_f64((random % 1024) as f64 / 1024.0)
}

/// How the pool is sized: `[server] auth_workers` (0 = one fewer than the
/// cores, at least one) and `[server] auth_queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    pub workers: usize,
    pub queue: usize,
}

impl PoolSize {
    /// The configured sizes, `workers = 0` resolved against this machine.
    pub fn new(workers: u32, queue: u32) -> PoolSize {
        let workers = if workers == 0 {
            crate::config::one_fewer_than(crate::config::cores())
        } else {
            workers as usize
        };
        PoolSize {
            workers,
            queue: queue as usize,
        }
    }
}

/// The queue was full: the check was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The bounded pool of password checks; see the module comment.
pub struct CheckPool {
    size: PoolSize,
    permits: Arc<Semaphore>,
    /// Checks running or waiting for a permit.
    admitted: AtomicUsize,
    /// argon2 working memory, one per worker at most (`password::Scratch`).
    scratch: Mutex<Vec<Scratch>>,
}

/// A place in the pool (running or waiting); given back when dropped.
pub struct Place {
    pool: Arc<CheckPool>,
    /// `postern_auth_checks_queued`, which counts the place while it is held.
    gauge: IntGauge,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.pool.admitted.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

impl CheckPool {
    pub fn new(size: PoolSize) -> Arc<CheckPool> {
        Arc::new(CheckPool {
            size,
            permits: Arc::new(Semaphore::new(size.workers)),
            admitted: AtomicUsize::new(0),
            scratch: Mutex::new(Vec::new()),
        })
    }

    pub fn size(&self) -> PoolSize {
        self.size
    }

    /// Checks running or waiting now.
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Takes a place, or `Busy` when `workers + queue` checks are already
    /// running or waiting.
    pub fn admit(self: &Arc<Self>, gauge: &IntGauge) -> Result<Place, Busy> {
        let limit = self.size.workers + self.size.queue;
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Busy)?;
        gauge.inc();
        Ok(Place {
            pool: self.clone(),
            gauge: gauge.clone(),
        })
    }

    /// Checks `password` against `hash` when a worker is free (`false` if the
    /// pool is closed or the check panicked). The place is held until the
    /// check has finished, even if the caller stops waiting.
    pub async fn check(&self, place: Place, hash: PasswordHash, password: SecretString) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let pool = place.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut scratch = pool.take_scratch();
            let ok = hash.verify_with(password.expose(), &mut scratch);
            pool.give_scratch(scratch);
            drop((permit, place));
            ok
        })
        .await
        .unwrap_or(false)
    }

    fn take_scratch(&self) -> Scratch {
        self.scratch
            .lock()
            .map(|mut free| free.pop().unwrap_or_default())
            .unwrap_or_default()
    }

    fn give_scratch(&self, scratch: Scratch) {
        if let Ok(mut free) = self.scratch.lock()
            && free.len() < self.size.workers
        {
            free.push(scratch);
        }
    }
}

#[cfg(test)]
mod tests;
