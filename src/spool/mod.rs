//! The durable spool: messages acknowledged with `250 Queued as <id>` once
//! their content and envelope are on disk (`store`, group-committed by
//! `commit`, small messages through the write-ahead log `wal`), an index
//! of what waits for which upstream, and the delivery workers (`deliver`)
//! that drain it through the upstream's pool.
//!
//! One `Spool` per spool directory and process: it is kept across reloads
//! (a reload with the same `dir` reuses it), and `dir/lock` keeps a second
//! `postern run` away from the same directory. The queue commands (`cli`)
//! work on the files under each entry's lock and tell the daemon through
//! `dir/control/`.
//!
//! # Time
//! Due times are wall-clock milliseconds on disk. The running spool reads the
//! wall clock once and advances it with tokio's clock, so backoff and expiry
//! run in paused time in tests exactly as they do in production.
//!
//! # Concurrency
//! `index` is a short-held lock, never held across an await or a disk sync.
//! An entry being delivered is out of the due set, so two workers never take
//! the same entry; the queue commands take the entry's file lock.

pub mod cli;
pub mod commit;
pub mod deliver;
pub mod hold;
mod incoming;
pub mod metrics;
pub mod store;
pub mod wal;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::SpoolSettings;
use commit::Committer;
pub use incoming::{Incoming, NewMessage};
pub use metrics::SpoolMetrics;
use store::{Layout, Place, Record};

/// Why a message could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `max_size` reached, or the disk is full: 452 4.3.1.
    #[error("spool full")]
    Full,
    #[error("spool I/O error: {0}")]
    Io(#[from] io::Error),
}

impl SpoolError {
    fn from_io(e: io::Error) -> SpoolError {
        if store::is_disk_full(&e) {
            SpoolError::Full
        } else {
            SpoolError::Io(e)
        }
    }
}

/// Wall-clock milliseconds advanced by tokio's clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall0_ms: u64,
    t0: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            wall0_ms: wall_ms(),
            t0: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.wall0_ms + self.t0.elapsed().as_millis() as u64
    }

    /// The tokio instant at which the clock reads `ms`.
    pub fn instant_at(&self, ms: u64) -> tokio::time::Instant {
        self.t0 + Duration::from_millis(ms.saturating_sub(self.wall0_ms))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Milliseconds since the epoch.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the index knows of a queued entry.
#[derive(Clone, Debug)]
struct Meta {
    upstream: Arc<str>,
    size: u64,
    received_ms: u64,
    next_ms: u64,
    attempts: u32,
    /// Taken by a worker: not in `due`.
    busy: bool,
}

#[derive(Default)]
struct Index {
    queued: HashMap<String, Meta>,
    /// Per upstream: (due time, id) of the entries no worker holds.
    due: HashMap<Arc<str>, BTreeSet<(u64, String)>>,
    dead: HashMap<String, Arc<str>>,
    bytes: u64,
}

/// The spool of one directory.
pub struct Spool {
    pub layout: Layout,
    pub settings: SpoolSettings,
    committer: Arc<Committer>,
    /// Small messages in the log whose files are not written yet.
    hold: Arc<hold::Hold>,
    pub clock: Clock,
    index: Mutex<Index>,
    /// Bumped whenever something becomes due; workers watch it.
    wake: watch::Sender<u64>,
    pub metrics: SpoolMetrics,
    housekeeping: AtomicBool,
    /// Held while the spool is open: one daemon per directory.
    _lock: File,
}

impl Spool {
    /// Opens (creating it if needed) and recovers the spool: clears what was
    /// half-written, repairs interrupted moves and loads the index.
    ///
    /// # Errors
    /// Disk errors, or another process holding the spool.
    pub fn open(settings: &SpoolSettings, metrics: SpoolMetrics) -> io::Result<Spool> {
        let layout = Layout::new(&settings.dir);
        layout.create()?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(settings.dir.join("lock"))?;
        if lock.try_lock().is_err() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "spool {} is in use by another postern",
                    settings.dir.display()
                ),
            ));
        }
        let started = tokio::time::Instant::now();
        let had_log = (0..2).any(|i| layout.wal().join(i.to_string()).exists());
        let held = Arc::new(hold::Hold::default());
        let (log, entries) = match wal::Wal::open(&layout, held.clone()) {
            Ok((log, entries)) => (Some(log), entries),
            Err(e) if !had_log => {
                tracing::warn!(
                    dir = %settings.dir.display(),
                    error = %e,
                    "spool: no room for the write-ahead log; every message syncs its own files"
                );
                (None, Vec::new())
            }
            Err(e) => return Err(e),
        };
        let logged = entries.len();
        let replayed = wal::replay(&layout, entries)?;
        let restored = replayed.restored;
        let discarded = layout.recover()?;
        let committer = match log {
            Some(mut log) => {
                // What the log held is in the files now: make them durable, empty it.
                log.checkpoint(replayed.live)?;
                Committer::with_wal(log)
            }
            None => Committer::new(),
        };
        let spool = Spool {
            layout,
            settings: settings.clone(),
            committer: Arc::new(committer),
            hold: held,
            clock: Clock::new(),
            index: Mutex::new(Index::default()),
            wake: watch::channel(0).0,
            metrics,
            housekeeping: AtomicBool::new(false),
            _lock: lock,
        };
        let mut loaded = 0;
        for id in spool.layout.ids(Place::Queue)? {
            match spool.layout.read_record(Place::Queue, &id) {
                Ok(r) => {
                    spool.insert(&r);
                    loaded += 1;
                }
                Err(e) => {
                    tracing::error!(id = %id, error = %e, "spool: unreadable entry left in place")
                }
            }
        }
        let mut dead = 0;
        for id in spool.layout.ids(Place::Dead)? {
            if let Ok(r) = spool.layout.read_record(Place::Dead, &id) {
                spool.insert_dead(&id, &r.upstream);
                dead += 1;
            }
        }
        tracing::info!(
            dir = %settings.dir.display(),
            queued = loaded,
            dead,
            discarded,
            logged,
            restored,
            ms = started.elapsed().as_millis() as u64,
            "spool recovered"
        );
        Ok(spool)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauge(&self, upstream: &str, state: &str) -> prometheus::IntGauge {
        self.metrics.messages.with_label_values(&[upstream, state])
    }

    fn state_word(attempts: u32) -> &'static str {
        if attempts == 0 { "queued" } else { "deferred" }
    }

    /// Adds (or refreshes) a queued entry from its record.
    fn insert(&self, r: &Record) {
        let upstream: Arc<str> = Arc::from(r.upstream.as_str());
        let mut ix = self.index();
        if let Some(old) = ix.queued.remove(&r.id) {
            self.gauge(&old.upstream, Spool::state_word(old.attempts))
                .dec();
            ix.bytes -= old.size;
            if let Some(set) = ix.due.get_mut(&old.upstream) {
                set.remove(&(old.next_ms, r.id.clone()));
            }
        }
        if let Some(up) = ix.dead.remove(&r.id) {
            self.gauge(&up, "dead").dec();
        }
        self.gauge(&upstream, Spool::state_word(r.attempts)).inc();
        ix.bytes += r.size;
        ix.due
            .entry(upstream.clone())
            .or_default()
            .insert((r.next_attempt_ms, r.id.clone()));
        ix.queued.insert(
            r.id.clone(),
            Meta {
                upstream,
                size: r.size,
                received_ms: r.received_at_ms,
                next_ms: r.next_attempt_ms,
                attempts: r.attempts,
                busy: false,
            },
        );
        self.metrics.bytes.set(ix.bytes as i64);
        drop(ix);
        self.wake.send_modify(|n| *n += 1);
    }

    fn insert_dead(&self, id: &str, upstream: &str) {
        let up: Arc<str> = Arc::from(upstream);
        self.gauge(&up, "dead").inc();
        self.index().dead.insert(id.to_owned(), up);
    }

    /// Takes an entry out of the index (delivered, deleted or dead).
    fn forget(&self, id: &str) {
        let mut ix = self.index();
        if let Some(m) = ix.queued.remove(id) {
            self.gauge(&m.upstream, Spool::state_word(m.attempts)).dec();
            ix.bytes -= m.size;
            if let Some(set) = ix.due.get_mut(&m.upstream) {
                set.remove(&(m.next_ms, id.to_owned()));
            }
        }
        if let Some(up) = ix.dead.remove(id) {
            self.gauge(&up, "dead").dec();
        }
        self.metrics.bytes.set(ix.bytes as i64);
    }

    /// Group-commit rounds so far (one disk sync each, however many messages).
    pub fn commit_rounds(&self) -> u64 {
        self.committer.rounds()
    }

    /// Message bytes waiting now.
    pub fn queued_bytes(&self) -> u64 {
        self.index().bytes
    }

    /// Whether a new message of `size` bytes would go over `max_size`.
    pub fn is_full(&self, size: u64) -> bool {
        self.queued_bytes().saturating_add(size) > self.settings.max_size
    }

    /// Entries queued now (delivering ones included).
    pub fn queued(&self) -> usize {
        self.index().queued.len()
    }

    /// Entries in `dead/`.
    pub fn dead(&self) -> usize {
        self.index().dead.len()
    }

    /// The next entry of `upstream` due by `now_ms`, taken out of the due set.
    pub fn take_due(&self, upstream: &str, now_ms: u64) -> Option<String> {
        let mut ix = self.index();
        let set = ix.due.get_mut(upstream)?;
        let first = set.first().filter(|(t, _)| *t <= now_ms)?.clone();
        set.remove(&first);
        if let Some(m) = ix.queued.get_mut(&first.1) {
            m.busy = true;
        }
        Some(first.1)
    }

    /// When the next entry of `upstream` is due, if any waits.
    pub fn next_due(&self, upstream: &str) -> Option<u64> {
        self.index()
            .due
            .get(upstream)
            .and_then(|s| s.first().map(|(t, _)| *t))
    }

    /// Puts an entry a worker held back in the due set at `next_ms`.
    fn release(&self, id: &str, next_ms: u64, attempts: u32) {
        let mut ix = self.index();
        let Some(m) = ix.queued.get_mut(id) else {
            return;
        };
        let old_state = Spool::state_word(m.attempts);
        m.next_ms = next_ms;
        m.attempts = attempts;
        m.busy = false;
        let up = m.upstream.clone();
        ix.due
            .entry(up.clone())
            .or_default()
            .insert((next_ms, id.to_owned()));
        drop(ix);
        let new_state = Spool::state_word(attempts);
        if old_state != new_state {
            self.gauge(&up, old_state).dec();
            self.gauge(&up, new_state).inc();
        }
        self.wake.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever something becomes due.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Re-reads one entry from disk after a queue command changed it.
    pub fn refresh(&self, id: &str) {
        if !store::valid_id(id) {
            return;
        }
        let busy = self.index().queued.get(id).is_some_and(|m| m.busy);
        if busy {
            // Its worker re-reads the record when it is done.
            return;
        }
        match self.layout.read_record(Place::Queue, id) {
            Ok(r) => self.insert(&r),
            Err(_) => {
                self.forget(id);
                if let Ok(r) = self.layout.read_record(Place::Dead, id) {
                    self.insert_dead(id, &r.upstream);
                }
            }
        }
    }

    /// Applies the notices the queue commands left in `control/`.
    pub fn process_control(&self) {
        let Ok(entries) = std::fs::read_dir(self.layout.control()) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if let Some(id) = path.file_name().and_then(|n| n.to_str()) {
                let id = id.split('.').next().unwrap_or_default().to_owned();
                self.refresh(&id);
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Sets `postern_spool_oldest_seconds` for every upstream that has had mail.
    fn publish_oldest(&self) {
        let now = self.clock.now_ms();
        let ix = self.index();
        let mut oldest: HashMap<Arc<str>, u64> = HashMap::new();
        for m in ix.queued.values() {
            let e = oldest.entry(m.upstream.clone()).or_insert(m.received_ms);
            *e = (*e).min(m.received_ms);
        }
        let names: Vec<Arc<str>> = ix.due.keys().cloned().collect();
        drop(ix);
        for up in names {
            let age = oldest.get(&up).map_or(0, |t| now.saturating_sub(*t) / 1000);
            self.metrics
                .oldest
                .with_label_values(&[&up])
                .set(age as i64);
        }
    }

    /// Starts the spool's own upkeep once: queue-command notices and the age
    /// gauge, every second, until the spool is dropped.
    pub fn start_housekeeping(self: &Arc<Spool>) {
        if self.housekeeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Spool> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(s) = weak.upgrade() else { return };
                s.process_control();
                s.publish_oldest();
                let (layout, held) = (s.layout.clone(), s.hold.clone());
                drop(s);
                let _ = tokio::task::spawn_blocking(move || {
                    held.write_out_old(&layout);
                    layout.sweep()
                })
                .await;
            }
        });
    }
}
