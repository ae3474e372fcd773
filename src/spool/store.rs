//! The spool on disk: one directory per state, two files per message.
//!
//! ```text
//! dir/lock            held by the running daemon (one `postern run` per spool)
//! dir/tmp/            files being written; cleared at start
//! dir/queue/<id>.eml  the message, exactly as it goes upstream (immutable)
//! dir/queue/<id>.json the envelope and the delivery state (replaced whole)
//! dir/dead/<id>.*     dead letters, the same pair, with a reason per recipient
//! dir/control/<id>    notices from `postern queue` for the running daemon
//! dir/done/, dir/trash/ delivered entries' files, unlinked in the background
//! dir/wal/0, dir/wal/1  the write-ahead log of small messages (see `wal`)
//! dir/gone/<id>       tombstones of deleted entries, until the next checkpoint
//! ```
//!
//! The `.json` is the commit point of an entry: it is renamed into place last,
//! after both files' contents are on disk (or, for a small message, in the
//! log, which brings back what a crash lost of them), and removed first when an entry
//! leaves. So an `.eml` without its `.json` was never acknowledged (or is
//! already gone) and recovery removes it; a `.json` whose `.eml` sits in the
//! other state directory is a move that a crash interrupted, and recovery
//! finishes or undoes it (see `recover`). This relies on the file system
//! keeping renames in order across a crash, as ext4's and xfs's journals do.
//!
//! Durable changes go through the group committer (`commit`); small
//! messages are made durable by its log (`wal`) rather than by their files.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The states a stored entry can be in, by directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Queue,
    Dead,
}

impl Place {
    pub fn dir_name(self) -> &'static str {
        match self {
            Place::Queue => "queue",
            Place::Dead => "dead",
        }
    }
}

/// A recipient's delivery state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    Pending,
    Done,
    Dead,
}

/// One recipient of a spooled message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rcpt {
    pub address: String,
    pub status: RcptStatus,
    /// The last reply (or failure) for this recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// DSN `NOTIFY=` of the device's RCPT (upper-cased), sent on when the
    /// provider offers DSN. Absent in entries spooled before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// DSN `ORCPT=` of the device's RCPT (`addr-type;xtext`, as validated at RCPT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

/// The `.json` of an entry: envelope and delivery state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub upstream: String,
    pub user: String,
    /// The envelope sender sent upstream (after `rewrite_sender`); "" is the null sender.
    pub mail_from: String,
    pub client_mail_from: String,
    pub received_at_ms: u64,
    /// Bytes of the `.eml`.
    pub size: u64,
    /// CRC-32 of the `.eml`, checked before each delivery.
    pub crc32: u32,
    pub smtputf8: bool,
    /// "7bit" or "8bitmime".
    pub body: String,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub recipients: Vec<Rcpt>,
    /// A notice postern wrote itself (a dead-letter notice): never noticed again.
    #[serde(default)]
    pub notice: bool,
    /// DSN `RET=` of the device's MAIL ("FULL" or "HDRS"), sent on when the
    /// provider offers DSN. Absent in entries spooled before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<String>,
    /// DSN `ENVID=` of the device's MAIL (xtext, as validated at MAIL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
}

impl Record {
    pub fn pending(&self) -> impl Iterator<Item = &Rcpt> {
        self.recipients
            .iter()
            .filter(|r| r.status == RcptStatus::Pending)
    }
}

/// Whether `id` could be an entry id (no path tricks from the command line).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh entry id: seconds, microseconds and 64 random bits.
pub fn new_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{:06}-{:016x}",
        now.as_secs(),
        now.subsec_micros(),
        crate::upstream::outbox::nonce()
    )
}

/// The paths of one spool directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub fn dir(&self, place: Place) -> PathBuf {
        self.root.join(place.dir_name())
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// The write-ahead log's segments (`wal`).
    pub fn wal(&self) -> PathBuf {
        self.root.join("wal")
    }
    /// Tombstones of entries `postern queue delete` removed (`wal`).
    pub fn gone(&self) -> PathBuf {
        self.root.join("gone")
    }
    pub fn control(&self) -> PathBuf {
        self.root.join("control")
    }
    /// Where a delivered entry's files go in the commit round (a rename: no
    /// blocks freed, no orphan list), to be unlinked later by `sweep`.
    pub fn done(&self) -> PathBuf {
        self.root.join("done")
    }
    /// Where `sweep` moves the files of `done/` before unlinking them.
    pub fn trash(&self) -> PathBuf {
        self.root.join("trash")
    }
    pub fn eml(&self, place: Place, id: &str) -> PathBuf {
        self.dir(place).join(format!("{id}.eml"))
    }
    pub fn json(&self, place: Place, id: &str) -> PathBuf {
        self.dir(place).join(format!("{id}.json"))
    }

    /// Creates the directories.
    ///
    /// # Errors
    /// If one cannot be created.
    pub fn create(&self) -> io::Result<()> {
        for d in [
            self.dir(Place::Queue),
            self.dir(Place::Dead),
            self.tmp(),
            self.control(),
            self.done(),
            self.trash(),
            self.wal(),
            self.gone(),
        ] {
            fs::create_dir_all(d)?;
        }
        Ok(())
    }

    /// Unlinks the files of delivered entries (`done/`). Each is first
    /// renamed into `trash/` and unlinked there, so an unlink that waits on
    /// the file system (freeing blocks, the orphan list: shared with every
    /// other writer of the disk) holds no lock the commit rounds need.
    /// Nothing here needs a sync: what a crash leaves is removed at start.
    /// Returns how many files went.
    pub fn sweep(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.done()) else {
            return 0;
        };
        for e in entries.flatten() {
            let _ = fs::rename(e.path(), self.trash().join(e.file_name()));
        }
        let Ok(entries) = fs::read_dir(self.trash()) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Reads an entry's record.
    ///
    /// # Errors
    /// Not found, unreadable, or not a record.
    pub fn read_record(&self, place: Place, id: &str) -> io::Result<Record> {
        let bytes = fs::read(self.json(place, id))?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes `record` to a new temporary file (not yet synced).
    ///
    /// # Errors
    /// Disk errors.
    pub fn write_tmp_record(&self, record: &Record) -> io::Result<(File, PathBuf)> {
        let path = self.tmp().join(format!(
            "{}.{:08x}.json",
            record.id,
            (crate::upstream::outbox::nonce() as u32)
        ));
        let mut f = File::options().write(true).create_new(true).open(&path)?;
        let mut text = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        text.push(b'\n');
        if let Err(e) = f.write_all(&text) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok((f, path))
    }

    /// Ids of the entries in `place` (those with a `.json`).
    ///
    /// # Errors
    /// If the directory cannot be read.
    pub fn ids(&self, place: Place) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(self.dir(place))? {
            let name = e?.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json"))
                && valid_id(id)
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Leaves the spool consistent after a crash: clears `tmp/`, finishes or
    /// undoes interrupted moves, removes what was never committed. Returns how
    /// many half-written files were discarded.
    ///
    /// # Errors
    /// Disk errors.
    pub fn recover(&self) -> io::Result<usize> {
        self.create()?;
        let mut discarded = 0;
        for e in fs::read_dir(self.tmp())? {
            fs::remove_file(e?.path())?;
            discarded += 1;
        }
        // Delivered entries' leftovers: gone already as far as the queue knows.
        for d in [self.done(), self.trash()] {
            for e in fs::read_dir(d)? {
                fs::remove_file(e?.path())?;
            }
        }
        for place in [Place::Queue, Place::Dead] {
            let other = match place {
                Place::Queue => Place::Dead,
                Place::Dead => Place::Queue,
            };
            for id in self.ids(place)? {
                if self.eml(place, &id).exists() {
                    continue;
                }
                let other_json = self.json(other, &id).exists();
                let other_eml = self.eml(other, &id).exists();
                if other_eml && !other_json {
                    // A move was cut after the message went and before its record followed.
                    fs::rename(self.eml(other, &id), self.eml(place, &id))?;
                } else {
                    // Left behind by a finished move or a delete.
                    fs::remove_file(self.json(place, &id))?;
                }
            }
        }
        for place in [Place::Queue, Place::Dead] {
            for e in fs::read_dir(self.dir(place))? {
                let path = e?.path();
                let Some(id) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".eml"))
                else {
                    continue;
                };
                if !self.json(place, id).exists() {
                    fs::remove_file(&path)?;
                    discarded += 1;
                }
            }
        }
        for d in [self.dir(Place::Queue), self.dir(Place::Dead)] {
            sync_dir(&d)?;
        }
        Ok(discarded)
    }
}

/// fsync of a directory, so the names in it are durable.
///
/// # Errors
/// Disk errors.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether an I/O error means the disk (or a quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

/// A record for the unit tests.
#[cfg(test)]
pub(super) fn sample_record(id: &str) -> Record {
    Record {
        id: id.to_owned(),
        upstream: "up".into(),
        user: "u".into(),
        mail_from: "a@b".into(),
        client_mail_from: "a@b".into(),
        received_at_ms: 0,
        size: 3,
        crc32: 0,
        smtputf8: false,
        body: "7bit".into(),
        attempts: 0,
        next_attempt_ms: 0,
        last_error: None,
        recipients: vec![],
        notice: false,
        ret: None,
        envid: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::sample_record as record;

    #[test]
    fn recovery_discards_uncommitted_and_repairs_interrupted_moves() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        l.create().unwrap();
        let put = |p: &Path, s: &str| fs::write(p, s).unwrap();
        let json = |id: &str| serde_json::to_string(&record(id)).unwrap();
        // Committed, in the queue.
        put(&l.eml(Place::Queue, "ok"), "abc");
        put(&l.json(Place::Queue, "ok"), &json("ok"));
        // Crashed before its record: never acknowledged.
        put(&l.eml(Place::Queue, "half"), "ab");
        put(&l.tmp().join("x.json"), "{");
        // A dead-letter move cut after the message moved: undone.
        put(&l.eml(Place::Dead, "moving"), "abc");
        put(&l.json(Place::Queue, "moving"), &json("moving"));
        // A move cut after the record followed: finished.
        put(&l.eml(Place::Dead, "moved"), "abc");
        put(&l.json(Place::Dead, "moved"), &json("moved"));
        put(&l.json(Place::Queue, "moved"), &json("moved"));
        // A delete cut after the record went.
        put(&l.eml(Place::Queue, "deleted"), "abc");
        // A delivered entry's files not swept yet.
        put(&l.done().join("sent.json"), &json("sent"));
        put(&l.trash().join("sent.eml"), "abc");
        assert_eq!(l.recover().unwrap(), 3);
        assert_eq!(fs::read_dir(l.done()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(l.trash()).unwrap().count(), 0);
        assert_eq!(l.ids(Place::Queue).unwrap(), vec!["moving", "ok"]);
        assert_eq!(l.ids(Place::Dead).unwrap(), vec!["moved"]);
        assert!(l.eml(Place::Queue, "moving").exists());
        assert!(!l.eml(Place::Queue, "half").exists());
        assert!(!l.eml(Place::Queue, "deleted").exists());
        assert_eq!(fs::read_dir(l.tmp()).unwrap().count(), 0);
    }

    #[test]
    fn an_entry_spooled_before_dsn_parameters_were_kept_still_loads() {
        let old = r#"{"id":"x","upstream":"up","user":"u","mail_from":"a@b","client_mail_from":"a@b",
            "received_at_ms":0,"size":3,"crc32":0,"smtputf8":false,"body":"7bit","attempts":0,
            "next_attempt_ms":0,"recipients":[{"address":"c@d","status":"pending"}]}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert_eq!((r.ret, r.envid), (None, None));
        assert_eq!(
            (
                r.recipients[0].notify.clone(),
                r.recipients[0].orcpt.clone()
            ),
            (None, None)
        );
        // And a record without them is written without them.
        let text = serde_json::to_string(&record("y")).unwrap();
        assert!(!text.contains("ret") && !text.contains("envid"), "{text}");
    }

    #[test]
    fn sweep_unlinks_what_delivery_moved_to_done() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        l.create().unwrap();
        fs::write(l.done().join("a.json"), "{}").unwrap();
        fs::write(l.done().join("a.eml"), "x").unwrap();
        assert_eq!(l.sweep(), 2);
        assert_eq!(fs::read_dir(l.done()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(l.trash()).unwrap().count(), 0);
    }

    #[test]
    fn ids_from_the_command_line_cannot_leave_the_spool() {
        assert!(valid_id(&new_id()));
        for bad in ["", "../x", "a/b", "a.json", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
