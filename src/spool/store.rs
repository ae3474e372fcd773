//! The spool on disk: one directory per state, two files per message, and the
//! group committer that makes writes durable together.
//!
//! ```text
//! dir/lock            held by the running daemon (one `postern run` per spool)
//! dir/tmp/            files being written; cleared at start
//! dir/queue/<id>.eml  the message, exactly as it goes upstream (immutable)
//! dir/queue/<id>.json the envelope and the delivery state (replaced whole)
//! dir/dead/<id>.*     dead letters, the same pair, with a reason per recipient
//! dir/control/<id>    notices from `postern queue` for the running daemon
//! dir/done/, dir/trash/ delivered entries' files, unlinked in the background
//! ```
//!
//! The `.json` is the commit point of an entry: it is renamed into place last,
//! after both files' contents are on disk, and removed first when an entry
//! leaves. So an `.eml` without its `.json` was never acknowledged (or is
//! already gone) and recovery removes it; a `.json` whose `.eml` sits in the
//! other state directory is a move that a crash interrupted, and recovery
//! finishes or undoes it (see `recover`). This relies on the file system
//! keeping renames in order across a crash, as ext4's and xfs's journals do.
//!
//! # Group commit
//! Every durable change goes through the `Committer`. A round takes every
//! change queued since the last one, syncs all their files' data at once (in
//! parallel: the file system folds concurrent syncs into one journal commit),
//! performs their renames and removals, and syncs each directory touched once.
//! A session waiting for its 250 therefore shares its disk sync with every
//! other session that finished at the same time. Measured on this machine's
//! ext4 (2 KB messages): a sync per message in series 8–10 ms each; batches of
//! 20 with parallel data syncs and one directory sync 0.3–0.6 ms each; one
//! append-only log with one sync per batch 0.2–0.3 ms each.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// One step of a durable change, done by the committer in order.
#[derive(Debug)]
pub enum Op {
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
    /// Out of its directory into `done/` (a rename; no error if it is gone
    /// already): a removal that leaves the unlink to `Layout::sweep`.
    Discard(PathBuf, PathBuf),
}

/// A durable change: sync these files' data, then do `ops`, then sync `dirs`.
pub struct Job {
    /// Files to create, fill and sync in the round (small messages never touch
    /// the disk on an async thread).
    pub write: Vec<(PathBuf, Vec<u8>)>,
    pub sync: Vec<File>,
    pub ops: Vec<Op>,
    pub dirs: Vec<PathBuf>,
    pub done: tokio::sync::oneshot::Sender<io::Result<()>>,
}

/// The group committer. A change is queued; if no round is running, the
/// caller starts one on a blocking thread, which takes every change queued
/// so far, and again until none is left. So changes that arrive while a round
/// syncs go together in the next round.
#[derive(Default)]
pub struct Committer {
    /// Changes waiting, and whether a round is running.
    state: Mutex<(Vec<Job>, bool)>,
    rounds: AtomicU64,
}

/// Most file syncs run at once in one round.
const PARALLEL_SYNCS: usize = 64;

impl Committer {
    pub fn new() -> Committer {
        Committer::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (Vec<Job>, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rounds run so far (each one disk sync per directory touched).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Makes a change durable, together with whatever else is waiting.
    ///
    /// # Errors
    /// The first disk error of the change (its later steps are not done).
    pub async fn commit(
        self: &Arc<Self>,
        sync: Vec<File>,
        ops: Vec<Op>,
        dirs: Vec<PathBuf>,
    ) -> io::Result<()> {
        self.commit_writes(Vec::new(), sync, ops, dirs).await
    }

    /// As `commit`, creating and filling the files of `write` in the round first.
    ///
    /// # Errors
    /// As `commit`.
    pub async fn commit_writes(
        self: &Arc<Self>,
        write: Vec<(PathBuf, Vec<u8>)>,
        sync: Vec<File>,
        ops: Vec<Op>,
        dirs: Vec<PathBuf>,
    ) -> io::Result<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut st = self.state();
            st.0.push(Job {
                write,
                sync,
                ops,
                dirs,
                done,
            });
            !std::mem::replace(&mut st.1, true)
        };
        if start {
            let me = self.clone();
            // A blocking task (not a thread of our own): tokio's paused test
            // clock does not jump ahead while one runs.
            tokio::task::spawn_blocking(move || {
                loop {
                    let batch = {
                        let mut st = me.state();
                        if st.0.is_empty() {
                            st.1 = false;
                            return;
                        }
                        std::mem::take(&mut st.0)
                    };
                    me.rounds.fetch_add(1, Ordering::Relaxed);
                    commit_round(batch);
                }
            });
        }
        rx.await
            .map_err(|_| io::Error::other("spool commit was lost"))?
    }

    /// As `commit`, for a caller that is not async (the queue commands).
    ///
    /// # Errors
    /// As `commit`.
    pub fn commit_blocking(sync: Vec<File>, ops: Vec<Op>, dirs: Vec<PathBuf>) -> io::Result<()> {
        let (done, mut rx) = tokio::sync::oneshot::channel();
        commit_round(vec![Job {
            write: Vec::new(),
            sync,
            ops,
            dirs,
            done,
        }]);
        rx.try_recv().map_err(|_| io::Error::other("commit lost"))?
    }
}

/// One file of a round: synced as it is, or created, filled and synced.
enum Unit<'a> {
    Sync(&'a File),
    Write(&'a Path, &'a [u8]),
}

impl Unit<'_> {
    fn run(&self) -> io::Result<()> {
        match self {
            Unit::Sync(f) => f.sync_data(),
            Unit::Write(p, bytes) => {
                let mut f = File::options().write(true).create_new(true).open(p)?;
                f.write_all(bytes)?;
                f.sync_data()
            }
        }
    }
}

/// One round: every file's data synced (in parallel), then each job's steps in
/// order, then each touched directory synced once.
fn commit_round(batch: Vec<Job>) {
    let t0 = tokio::time::Instant::now();
    let mut results: Vec<io::Result<()>> = Vec::with_capacity(batch.len());
    let files: Vec<(usize, Unit<'_>)> = batch
        .iter()
        .enumerate()
        .flat_map(|(i, j)| {
            j.write
                .iter()
                .map(move |(p, b)| (i, Unit::Write(p, b)))
                .chain(j.sync.iter().map(move |f| (i, Unit::Sync(f))))
        })
        .collect();
    let mut sync_failed: Vec<Option<io::Error>> = (0..batch.len()).map(|_| None).collect();
    for chunk in files.chunks(PARALLEL_SYNCS) {
        let outcomes: Vec<(usize, io::Result<()>)> = if chunk.len() == 1 {
            vec![(chunk[0].0, chunk[0].1.run())]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(i, u)| (*i, s.spawn(move || u.run())))
                    .collect();
                handles
                    .into_iter()
                    .map(|(i, h)| {
                        (
                            i,
                            h.join()
                                .unwrap_or_else(|_| Err(io::Error::other("sync panicked"))),
                        )
                    })
                    .collect()
            })
        };
        for (i, r) in outcomes {
            if let Err(e) = r {
                sync_failed[i].get_or_insert(e);
            }
        }
    }
    let t1 = t0.elapsed();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (job, failed) in batch.iter().zip(sync_failed) {
        let r = match failed {
            Some(e) => Err(e),
            None => job.ops.iter().try_for_each(|op| match op {
                Op::Rename(a, b) => fs::rename(a, b),
                Op::Remove(p) => match fs::remove_file(p) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                },
                Op::Discard(a, b) => match fs::rename(a, b) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    other => other,
                },
            }),
        };
        if r.is_ok() {
            for d in &job.dirs {
                if !dirs.contains(d) {
                    dirs.push(d.clone());
                }
            }
        }
        results.push(r);
    }
    let t2 = t0.elapsed();
    let dir_result: Option<io::Error> = dirs.iter().find_map(|d| sync_dir(d).err());
    // Where a round's time goes (`RUST_LOG=postern::spool=trace`): the data
    // syncs wait for the file system's journal commit, the steps for its locks.
    tracing::trace!(
        jobs = batch.len(),
        files = files.len(),
        data_us = t1.as_micros() as u64,
        steps_us = (t2 - t1).as_micros() as u64,
        total_us = t0.elapsed().as_micros() as u64,
        "spool commit round"
    );
    for (job, r) in batch.into_iter().zip(results) {
        let r = match (&dir_result, r) {
            (Some(e), Ok(())) => Err(io::Error::new(e.kind(), e.to_string())),
            (_, r) => r,
        };
        let _ = job.done.send(r);
    }
}

/// Whether an I/O error means the disk (or a quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
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

    #[tokio::test]
    async fn a_commit_round_renames_after_syncing() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        l.create().unwrap();
        let c = Arc::new(Committer::new());
        let (f, tmp) = l.write_tmp_record(&record("r1")).unwrap();
        c.commit(
            vec![f],
            vec![Op::Rename(tmp, l.json(Place::Queue, "r1"))],
            vec![l.dir(Place::Queue)],
        )
        .await
        .unwrap();
        assert_eq!(l.read_record(Place::Queue, "r1").unwrap(), record("r1"));
        // A failing step is reported and the rest of that change is not done.
        let r = c
            .commit(
                vec![],
                vec![
                    Op::Rename(l.tmp().join("missing"), l.json(Place::Queue, "r2")),
                    Op::Remove(l.json(Place::Queue, "r1")),
                ],
                vec![],
            )
            .await;
        assert!(r.is_err());
        assert!(l.json(Place::Queue, "r1").exists());
    }
}
