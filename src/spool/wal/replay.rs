//! Replay: what the log held, applied to the spool's files at start.

use std::collections::HashSet;
use std::fs;
use std::io;

use super::Entry;
use crate::spool::store::{self, Layout, Place, Record};

/// Applies what the log held to the spool's files, before `Layout::recover`:
/// an entry put and not gone gets back whatever of its files a crash lost
/// (synced by the checkpoint that follows); a gone entry's files go.
///
/// # Errors
/// Disk errors.
pub fn replay(layout: &Layout, entries: Vec<Entry>) -> io::Result<Replayed> {
    let gone: HashSet<String> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Gone { id } => Some(id.clone()),
            Entry::Put { .. } => None,
        })
        .collect();
    let mut out = Replayed::default();
    for e in entries {
        let Entry::Put { id, json, eml } = e else {
            continue;
        };
        if gone.contains(&id) || !store::valid_id(&id) || layout.gone().join(&id).exists() {
            continue;
        }
        // Where its record is now (a dead letter moves it), if it is whole.
        let found = [Place::Queue, Place::Dead]
            .into_iter()
            .find_map(|p| layout.read_record(p, &id).ok().map(|r| (p, r)));
        let mut lost = false;
        let (place, record) = match found {
            Some(f) => f,
            None => {
                let Ok(record) = serde_json::from_slice::<Record>(&json) else {
                    continue;
                };
                write_fresh(layout, &layout.json(Place::Queue, &id), &json)?;
                lost = true;
                (Place::Queue, record)
            }
        };
        let path = layout.eml(place, &id);
        let whole = fs::read(&path)
            .is_ok_and(|b| b.len() as u64 == record.size && crc32fast::hash(&b) == record.crc32);
        if !whole {
            write_fresh(layout, &path, &eml)?;
            lost = true;
        }
        out.restored += usize::from(lost);
        out.live.insert(id);
    }
    for id in &gone {
        if !store::valid_id(id) {
            continue;
        }
        for p in [layout.json(Place::Queue, id), layout.eml(Place::Queue, id)] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Entries that got back a file a crash lost.
    pub restored: usize,
    /// Every entry the log held that is still in the spool: the checkpoint
    /// after the replay syncs their files.
    pub live: HashSet<String>,
}

/// Writes a file whole through a temporary name (the checkpoint syncs it).
fn write_fresh(layout: &Layout, path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = layout.tmp().join("replay");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}
