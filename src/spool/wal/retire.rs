//! Retiring a segment: its entries made durable as files, then its header
//! marked, so a replay no longer needs it.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::{State, header};
use crate::spool::hold::Hold;
use crate::spool::store::{self, Layout, Place};

/// What a retirement that failed leaves to do again.
pub(super) struct Retire {
    pub(super) error: io::Error,
    pub(super) segment: usize,
    pub(super) generation: u64,
    pub(super) live: HashSet<String>,
    pub(super) tombstones: Vec<PathBuf>,
}

/// Writes out the held entries of `live`, syncs the files of all of them (in
/// parallel) and the spool's directories, so that nothing the log says of
/// them is needed any more.
pub(super) fn sync_entries(layout: &Layout, hold: &Hold, live: &HashSet<String>) -> io::Result<()> {
    for id in live {
        hold.write_out(layout, id)?;
    }
    let ids: Vec<&String> = live.iter().collect();
    for chunk in ids.chunks(64) {
        std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|id| {
                    s.spawn(move || -> io::Result<()> {
                        for place in [Place::Queue, Place::Dead] {
                            for path in [layout.eml(place, id), layout.json(place, id)] {
                                match File::open(&path) {
                                    Ok(f) => f.sync_data()?,
                                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                                    Err(e) => return Err(e),
                                }
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("sync panicked")))
            })
        })?;
    }
    for dir in [
        layout.dir(Place::Queue),
        layout.dir(Place::Dead),
        layout.done(),
    ] {
        store::sync_dir(&dir)?;
    }
    Ok(())
}

/// Retires a segment: its entries' files synced, then its header marked.
pub(super) fn retire(
    layout: &Layout,
    hold: &Hold,
    file: &File,
    segment: usize,
    generation: u64,
    live: HashSet<String>,
    tombstones: Vec<PathBuf>,
) -> Result<(), Retire> {
    let done = sync_entries(layout, hold, &live).and_then(|()| {
        file.write_all_at(&header(generation, State::Retired), 0)?;
        file.sync_data()
    });
    match done {
        Ok(()) => {
            for t in tombstones {
                let _ = fs::remove_file(t);
            }
            Ok(())
        }
        Err(error) => Err(Retire {
            error,
            segment,
            generation,
            live,
            tombstones,
        }),
    }
}
