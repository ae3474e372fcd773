//! The outbox upstream: each accepted message becomes `<id>.eml` plus an
//! envelope sidecar `<id>.json` in one directory. Both are written to temporary
//! names, fsynced, then renamed (sidecar first), and the directory is fsynced,
//! so a reader that sees `<id>.eml` always finds a whole message and its
//! envelope. The client hears 250 only after that.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// An outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// The envelope written beside each message.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub mail_from: &'a str,
    pub rcpt_to: &'a [String],
    pub client_mail_from: &'a str,
    pub received_at: u64,
    pub size: u64,
    pub smtputf8: bool,
    pub body: &'a str,
}

/// A message being written.
pub struct Spool {
    dir: PathBuf,
    id: String,
    tmp: PathBuf,
    file: BufWriter<File>,
}

impl Outbox {
    /// Creates the directory if needed.
    ///
    /// # Errors
    /// If it cannot be created.
    pub fn open(dir: &Path) -> io::Result<Outbox> {
        fs::create_dir_all(dir)?;
        Ok(Outbox {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a message with a fresh id.
    ///
    /// # Errors
    /// If the temporary file cannot be created.
    pub fn begin(&self) -> io::Result<Spool> {
        self.begin_as(&new_id())
    }

    /// Starts a message under `id` (postern's message id for the transaction,
    /// from `new_id`), so the file and the log line carry the same id.
    ///
    /// # Errors
    /// If the temporary file cannot be created (one with that id exists).
    pub fn begin_as(&self, id: &str) -> io::Result<Spool> {
        let id = id.to_owned();
        let tmp = self.dir.join(format!(".{id}.eml.tmp"));
        let file = File::options().write(true).create_new(true).open(&tmp)?;
        Ok(Spool {
            dir: self.dir.clone(),
            id,
            tmp,
            file: BufWriter::with_capacity(64 * 1024, file),
        })
    }
}

impl Spool {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends message bytes (already unstuffed).
    ///
    /// # Errors
    /// Disk errors.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Makes the message durable: fsync both files, rename sidecar then message, fsync the directory.
    ///
    /// # Errors
    /// Disk errors; the temporary files are removed.
    pub fn commit(mut self, envelope: &Envelope<'_>) -> io::Result<String> {
        let result = self.commit_inner(envelope);
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_file(self.dir.join(format!(".{}.json.tmp", self.id)));
        }
        result.map(|()| self.id.clone())
    }

    fn commit_inner(&mut self, envelope: &Envelope<'_>) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        let json_tmp = self.dir.join(format!(".{}.json.tmp", self.id));
        let mut json = File::options()
            .write(true)
            .create_new(true)
            .open(&json_tmp)?;
        serde_json::to_writer_pretty(&mut json, envelope).map_err(io::Error::other)?;
        json.write_all(b"\n")?;
        json.sync_all()?;
        fs::rename(&json_tmp, self.dir.join(format!("{}.json", self.id)))?;
        fs::rename(&self.tmp, self.dir.join(format!("{}.eml", self.id)))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Drops the message.
    pub fn abort(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// A fresh message id: seconds, microseconds and 64 random bits
/// (`1795382246-765026-f4777a0caa791525`); safe in a file name.
pub fn new_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{:06}-{:016x}",
        now.as_secs(),
        now.subsec_micros(),
        nonce()
    )
}

/// 64 bits, different on every call in this process and unpredictable from
/// one process to the next: a counter from a random start (drawn from the
/// OS once per process), through splitmix64's finalizer, a bijection, so two
/// calls never give the same value. One `getrandom` per process, not one per
/// message (it was a system call per message). Should the OS's source fail,
/// the process id and the clock seed it (and `begin_as` creates its file
/// with `create_new`, so a clash is an error, never an overwrite).
pub(crate) fn nonce() -> u64 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        getrandom::u64().unwrap_or_else(|_| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (u64::from(std::process::id()) << 32) ^ nanos
        })
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    splitmix64(seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

/// splitmix64's output function (Steele, Lea and Flood, 2014): invertible, so
/// distinct inputs give distinct outputs.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seconds since the epoch, for envelopes.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_do_not_repeat_and_spread_over_all_64_bits() {
        let n = 200_000;
        let values: std::collections::HashSet<u64> = (0..n).map(|_| nonce()).collect();
        assert_eq!(values.len(), n);
        // Every bit is set in some values and clear in others: not a counter.
        let (or, and) = values
            .iter()
            .fold((0u64, u64::MAX), |(o, a), v| (o | v, a & v));
        assert_eq!((or, and), (u64::MAX, 0));
        // Consecutive values differ in about half their bits.
        let a = nonce();
        let b = nonce();
        assert!((a ^ b).count_ones() > 8, "{a:016x} {b:016x}");
    }

    #[test]
    fn commit_leaves_eml_and_json_and_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let mut spool = outbox.begin().unwrap();
        spool.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        let rcpts = vec!["a@b.c".to_owned()];
        let id = spool
            .commit(&Envelope {
                id: "",
                user: "u",
                mail_from: "s@x",
                rcpt_to: &rcpts,
                client_mail_from: "s@x",
                received_at: 0,
                size: 20,
                smtputf8: false,
                body: "7bit",
            })
            .unwrap();
        let eml = fs::read(dir.path().join(format!("{id}.eml"))).unwrap();
        assert_eq!(eml, b"Subject: x\r\n\r\nbody\r\n");
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(format!("{id}.json"))).unwrap())
                .unwrap();
        assert_eq!(json["rcpt_to"][0], "a@b.c");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn abort_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let spool = outbox.begin().unwrap();
        spool.abort();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
