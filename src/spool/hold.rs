//! Messages the log has made durable whose files are not written yet.
//!
//! A small message acknowledged through the write-ahead log (`wal`) needs its
//! files only if it stays: most are delivered within a second, and writing two
//! files per message and unlinking them again costs more than all the rest of
//! spooling it (on ext4 each create searches the inode bitmap past inodes
//! that were just freed; measured in the spool benchmark: the rounds' file
//! writes took 3.3 ms of a 4.1 ms median round). So the entry waits here:
//! delivery reads it from memory, and it is written out as files (without a
//! sync: the log still covers it) when it is still queued after `WRITE_AFTER`,
//! when its delivery is deferred or dead, or before its log segment retires
//! (which then syncs the files). An operator's `postern queue` sees an entry
//! once it is written out.
//!
//! Each entry has a lock of its own, so writing it out and dropping it after
//! its delivery never cross: either the files are written whole before the
//! delivery removes them, or they are never written.

use std::fs;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use super::store::{Layout, Place, Record};

/// How long a queued entry stays in memory only.
pub const WRITE_AFTER: Duration = Duration::from_secs(1);

/// One held entry: its record and message, as the log has them.
pub struct Held {
    pub record: Record,
    pub json: Arc<[u8]>,
    pub eml: Arc<[u8]>,
    pub since: tokio::time::Instant,
}

type Slot = Arc<Mutex<Option<Held>>>;

/// The held entries of one spool.
#[derive(Default)]
pub struct Hold {
    map: DashMap<String, Slot>,
}

fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Option<Held>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hold {
    pub fn insert(&self, id: &str, held: Held) {
        self.map
            .insert(id.to_owned(), Arc::new(Mutex::new(Some(held))));
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn slot(&self, id: &str) -> Option<Slot> {
        self.map.get(id).map(|s| s.value().clone())
    }

    /// The record and message of a held entry, for its delivery.
    pub fn snapshot(&self, id: &str) -> Option<(Record, Arc<[u8]>)> {
        let slot = self.slot(id)?;
        let held = lock(&slot);
        held.as_ref().map(|h| (h.record.clone(), h.eml.clone()))
    }

    /// Lets go of an entry without writing it (delivered, or never
    /// acknowledged). Returns whether it was still held: if so, it has no
    /// files; if not, its files are written whole.
    pub fn discard(&self, id: &str) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        let was = lock(&slot).take().is_some();
        self.map.remove(id);
        was
    }

    /// Writes a held entry's files into the queue (message first, record
    /// last, each through `tmp/`; no sync) and lets go of it. Nothing to do
    /// if it is not held.
    ///
    /// # Errors
    /// Disk errors: the entry stays held then.
    pub fn write_out(&self, layout: &Layout, id: &str) -> io::Result<()> {
        let Some(slot) = self.slot(id) else {
            return Ok(());
        };
        let mut held = lock(&slot);
        let Some(h) = held.as_ref() else {
            return Ok(());
        };
        for (ext, bytes, to) in [
            ("eml", &h.eml, layout.eml(Place::Queue, id)),
            ("json", &h.json, layout.json(Place::Queue, id)),
        ] {
            let tmp = layout.tmp().join(format!("{id}.held.{ext}"));
            let written = fs::File::create(&tmp)
                .and_then(|mut f| f.write_all(bytes))
                .and_then(|()| fs::rename(&tmp, &to));
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                let _ = fs::remove_file(layout.eml(Place::Queue, id));
                return Err(e);
            }
        }
        *held = None;
        drop(held);
        self.map.remove(id);
        Ok(())
    }

    /// Entries held since before `now - age`.
    pub fn older_than(&self, age: Duration) -> Vec<String> {
        let now = tokio::time::Instant::now();
        self.map
            .iter()
            .filter(|e| {
                lock(e.value())
                    .as_ref()
                    .is_some_and(|h| now.duration_since(h.since) >= age)
            })
            .map(|e| e.key().clone())
            .collect()
    }

    /// Writes out every entry held longer than `WRITE_AFTER`; returns how many.
    pub fn write_out_old(&self, layout: &Layout) -> usize {
        let mut n = 0;
        for id in self.older_than(WRITE_AFTER) {
            match self.write_out(layout, &id) {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::warn!(id, error = %e, "spool: cannot write a held message's files yet")
                }
            }
        }
        n
    }
}
