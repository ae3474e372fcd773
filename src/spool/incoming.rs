//! A message on its way into the spool: its bytes as the session unstuffs
//! them (`Incoming`), its envelope (`NewMessage`), and the commit that makes
//! it durable and queues it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::commit::{Logged, Op};
use super::store::{self, Place, Rcpt, RcptStatus, Record};
use super::{Spool, SpoolError, hold};
use crate::smtp::command::{RcptParams, Ret};

/// Message bytes kept in memory before a file is opened for them: a small
/// message goes to the committer's round in memory (a log record, or files
/// the round writes), never to a file from the session's async thread (where
/// a file create can wait behind a journal commit and stall every session on
/// that thread).
const IN_MEMORY: usize = 256 * 1024;

/// A message being written to the spool.
pub struct Incoming {
    id: String,
    tmp: PathBuf,
    /// The bytes not written to `file` yet (all of them for a small message).
    buf: Vec<u8>,
    file: Option<BufWriter<File>>,
    crc: crc32fast::Hasher,
    size: u64,
    failed: Option<io::ErrorKind>,
}

impl Incoming {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends message bytes (already unstuffed).
    ///
    /// # Errors
    /// Disk errors (`Full` when the disk is).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        if let Some(kind) = self.failed {
            return Err(SpoolError::from_io(io::Error::from(kind)));
        }
        self.crc.update(bytes);
        self.size += bytes.len() as u64;
        if self.file.is_none() && self.buf.len() + bytes.len() <= IN_MEMORY {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        let r = (|| {
            if self.file.is_none() {
                let f = File::options()
                    .write(true)
                    .create_new(true)
                    .open(&self.tmp)?;
                // Kept at once, so an abort removes it even if this write fails.
                let w = self.file.insert(BufWriter::with_capacity(64 * 1024, f));
                w.write_all(&std::mem::take(&mut self.buf))?;
            }
            match self.file.as_mut() {
                Some(w) => w.write_all(bytes),
                None => Ok(()),
            }
        })();
        r.map_err(|e| {
            self.failed = Some(e.kind());
            SpoolError::from_io(e)
        })
    }

    /// Drops the message: nothing of it stays on disk.
    pub fn abort(self) {
        if self.file.is_some() {
            drop(self.file);
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The envelope of a message to spool.
pub struct NewMessage<'a> {
    pub upstream: &'a str,
    pub user: &'a str,
    pub mail_from: &'a str,
    pub client_mail_from: &'a str,
    pub recipients: &'a [String],
    pub smtputf8: bool,
    /// "7bit" or "8bitmime".
    pub body: &'a str,
    pub notice: bool,
    /// The DSN parameters of MAIL (`RET`, `ENVID`), kept for the delivery.
    pub ret: Option<Ret>,
    pub envid: Option<&'a str>,
    /// The DSN parameters of each RCPT that had any, by address (the first
    /// match counts for an address given twice).
    pub rcpt_dsn: &'a [(String, RcptParams)],
    /// Expected to be delivered at once: its files are written only if it
    /// is still queued after `hold::WRITE_AFTER` (otherwise right after its
    /// commit; see `hold`).
    pub hold: bool,
}

impl Spool {
    /// Starts a message with a fresh id.
    ///
    /// # Errors
    /// `Full` over `max_size` or on a full disk; other disk errors.
    pub fn begin(&self) -> Result<Incoming, SpoolError> {
        if self.is_full(0) {
            return Err(SpoolError::Full);
        }
        let id = store::new_id();
        let tmp = self.layout.tmp().join(format!("{id}.eml"));
        Ok(Incoming {
            id,
            tmp,
            buf: Vec::new(),
            file: None,
            crc: crc32fast::Hasher::new(),
            size: 0,
            failed: None,
        })
    }

    /// Makes a message durable (content and envelope synced, with whatever
    /// else is being committed now) and queues it for delivery. Returns its id.
    ///
    /// # Errors
    /// `Full` over `max_size` or on a full disk; other disk errors. Nothing of
    /// the message stays on disk then.
    pub async fn commit(
        &self,
        incoming: Incoming,
        m: &NewMessage<'_>,
    ) -> Result<String, SpoolError> {
        if self.is_full(incoming.size) {
            incoming.abort();
            return Err(SpoolError::Full);
        }
        let Incoming {
            id,
            tmp,
            buf,
            file,
            crc,
            size,
            failed,
        } = incoming;
        let cleanup = |paths: &[&Path]| {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        };
        if let Some(kind) = failed {
            cleanup(&[&tmp]);
            return Err(SpoolError::from_io(io::Error::from(kind)));
        }
        // A large message is in its file already (flushed here); a small one
        // goes to the round in memory.
        let mut sync = Vec::new();
        let mut small = None;
        match file {
            Some(mut w) => {
                let flushed = w.write_all(&buf).and_then(|()| w.flush());
                match (flushed, w.into_inner()) {
                    (Ok(()), Ok(f)) => sync.push(f),
                    (Err(e), _) => {
                        cleanup(&[&tmp]);
                        return Err(SpoolError::from_io(e));
                    }
                    (_, Err(e)) => {
                        cleanup(&[&tmp]);
                        return Err(SpoolError::from_io(e.into_error()));
                    }
                }
            }
            None => small = Some(Arc::<[u8]>::from(buf)),
        }
        let now = self.clock.now_ms();
        let record = Record {
            id: id.clone(),
            upstream: m.upstream.to_owned(),
            user: m.user.to_owned(),
            mail_from: m.mail_from.to_owned(),
            client_mail_from: m.client_mail_from.to_owned(),
            received_at_ms: now,
            size,
            crc32: crc.finalize(),
            smtputf8: m.smtputf8,
            body: m.body.to_owned(),
            attempts: 0,
            next_attempt_ms: now,
            last_error: None,
            recipients: m
                .recipients
                .iter()
                .map(|a| {
                    let dsn = m.rcpt_dsn.iter().find(|(r, _)| r == a).map(|(_, p)| p);
                    Rcpt {
                        address: a.clone(),
                        status: RcptStatus::Pending,
                        reply: None,
                        notify: dsn.and_then(|p| p.notify.clone()),
                        orcpt: dsn.and_then(|p| p.orcpt.clone()),
                    }
                })
                .collect(),
            notice: m.notice,
            ret: m.ret.map(|r| {
                match r {
                    Ret::Full => "FULL",
                    Ret::Hdrs => "HDRS",
                }
                .to_owned()
            }),
            envid: m.envid.map(str::to_owned),
        };
        let json_tmp = self.layout.tmp().join(format!(
            "{id}.{:08x}.json",
            (crate::upstream::outbox::nonce() as u32)
        ));
        let mut json = match serde_json::to_vec_pretty(&record) {
            Ok(j) => j,
            Err(e) => {
                cleanup(&[&tmp]);
                return Err(SpoolError::Io(io::Error::other(e)));
            }
        };
        json.push(b'\n');
        let eml = self.layout.eml(Place::Queue, &id);
        let json_path = self.layout.json(Place::Queue, &id);
        let ops = vec![
            Op::Rename(tmp.clone(), eml.clone()),
            Op::Rename(json_tmp.clone(), json_path.clone()),
        ];
        let dirs = vec![self.layout.dir(Place::Queue)];
        let r = match &small {
            // A small message can be a log record, held in memory after it.
            Some(content) => {
                let json: Arc<[u8]> = json.into();
                let logged = Logged::Put {
                    id: id.clone(),
                    json: json.clone(),
                    eml: content.clone(),
                    files: [tmp.clone(), json_tmp.clone()],
                };
                let r = self
                    .committer
                    .submit(Vec::new(), sync, ops, dirs, Some(logged))
                    .await;
                if let Ok(true) = r {
                    self.hold.insert(
                        &id,
                        hold::Held {
                            record: record.clone(),
                            json,
                            eml: content.clone(),
                            since: tokio::time::Instant::now(),
                        },
                    );
                    if !m.hold {
                        // Off the async thread: a create can wait on the journal.
                        let (held, layout, id) =
                            (self.hold.clone(), self.layout.clone(), id.clone());
                        let written =
                            tokio::task::spawn_blocking(move || held.write_out(&layout, &id)).await;
                        if let Ok(Err(e)) = written {
                            // The log has it; the housekeeping tries again.
                            tracing::warn!(error = %e, "spool: cannot write a message's files yet");
                        }
                    }
                }
                r.map(|_| ())
            }
            None => self
                .committer
                .submit(vec![(json_tmp.clone(), json)], sync, ops, dirs, None)
                .await
                .map(|_| ()),
        };
        if let Err(e) = r {
            // Not acknowledged: take back whatever got in (record first).
            cleanup(&[&json_path, &eml, &json_tmp, &tmp]);
            return Err(SpoolError::from_io(e));
        }
        self.insert(&record);
        Ok(id)
    }
}
