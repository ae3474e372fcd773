//! `postern queue list|show|retry|delete|dead|requeue`: the spool seen and
//! changed from outside the daemon, safely while `postern run` runs.
//!
//! Every change takes the entry's file lock (the one a delivery attempt
//! holds), makes its change with the same ordered, synced steps the daemon
//! uses (so a crash in between is repaired by recovery), then leaves a notice
//! in `control/` that the running daemon reads within a second. Reading
//! (`list`, `show`, `dead`) takes no lock: records are replaced whole by
//! rename, so a reader sees the old or the new one.

use std::fs::File;
use std::io::Write;
use std::time::Duration;

use clap::Subcommand;

use super::commit::{Committer, Op};
use super::store::{self, Layout, Place, RcptStatus, Record};
use super::wall_ms;

/// The queue commands.
#[derive(Subcommand, Debug, Clone)]
pub enum QueueCmd {
    /// Messages waiting for delivery.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One message: its envelope, delivery state and content.
    Show { id: String },
    /// Deliver these messages now (or every queued one with --all).
    Retry {
        ids: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Remove messages from the queue or the dead letters.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Dead letters, with the reason for each recipient.
    Dead {
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in the queue (their failed recipients are tried again).
    Requeue {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Runs a queue command on the spool of `config`.
///
/// # Errors
/// No `[spool]` in the config, or what `run` reports.
pub fn for_config(
    config: &crate::config::Config,
    cmd: QueueCmd,
    out: &mut dyn Write,
) -> Result<(), String> {
    let Some(spool) = &config.spool else {
        return Err(format!("{}: no [spool] section", config.source));
    };
    run(spool.dir.get_ref(), cmd, out)
}

/// How long a command waits for an entry a delivery attempt holds.
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// Runs a queue command on the spool in `dir`, writing to `out`.
///
/// # Errors
/// A message for the operator: unknown id, an unreadable spool, a disk error.
pub fn run(dir: &std::path::Path, cmd: QueueCmd, out: &mut dyn Write) -> Result<(), String> {
    let layout = Layout::new(dir);
    if !layout.dir(Place::Queue).is_dir() {
        return Err(format!(
            "{} is not a spool (no queue/ directory); has postern run with this [spool] yet?",
            dir.display()
        ));
    }
    let w = |e: std::io::Error| e.to_string();
    match cmd {
        QueueCmd::List { json } => list(&layout, Place::Queue, json, out).map_err(w),
        QueueCmd::Dead { json } => list(&layout, Place::Dead, json, out).map_err(w),
        QueueCmd::Show { id } => show(&layout, &id, out),
        QueueCmd::Retry { ids, all } => {
            let ids = if all {
                layout.ids(Place::Queue).map_err(w)?
            } else if ids.is_empty() {
                return Err("name the messages to retry, or --all".into());
            } else {
                ids
            };
            for id in ids {
                change(&layout, &id, Place::Queue, retry)?;
                writeln!(out, "{id}: will be tried now").map_err(w)?;
            }
            Ok(())
        }
        QueueCmd::Delete { ids } => {
            for id in ids {
                let place = find(&layout, &id)?;
                change(&layout, &id, place, |l, r| delete(l, place, &r.id))?;
                writeln!(out, "{id}: deleted").map_err(w)?;
            }
            Ok(())
        }
        QueueCmd::Requeue { ids } => {
            for id in ids {
                change(&layout, &id, Place::Dead, requeue)?;
                writeln!(out, "{id}: back in the queue").map_err(w)?;
            }
            Ok(())
        }
    }
}

fn find(layout: &Layout, id: &str) -> Result<Place, String> {
    if !store::valid_id(id) {
        return Err(format!("{id:?} is not a message id"));
    }
    [Place::Queue, Place::Dead]
        .into_iter()
        .find(|p| layout.json(*p, id).exists())
        .ok_or_else(|| format!("{id}: no such message in the queue or the dead letters"))
}

/// Locks entry `id` in `place`, re-reads its record, applies `f`, tells the daemon.
fn change(
    layout: &Layout,
    id: &str,
    place: Place,
    f: impl FnOnce(&Layout, Record) -> std::io::Result<()>,
) -> Result<(), String> {
    if !store::valid_id(id) {
        return Err(format!("{id:?} is not a message id"));
    }
    let missing = || {
        format!(
            "{id}: no such message in {}",
            match place {
                Place::Queue => "the queue",
                Place::Dead => "the dead letters",
            }
        )
    };
    let file = File::open(layout.eml(place, id)).map_err(|_| missing())?;
    let pause = Duration::from_millis(50);
    let mut tries = LOCK_WAIT.as_millis() / pause.as_millis();
    while file.try_lock().is_err() {
        if tries == 0 {
            return Err(format!("{id}: being delivered right now; try again"));
        }
        tries -= 1;
        std::thread::sleep(pause);
    }
    // Under the lock: the entry may have moved or gone while we waited.
    let record = layout.read_record(place, id).map_err(|_| missing())?;
    f(layout, record).map_err(|e| format!("{id}: {e}"))?;
    let _ = File::create(layout.control().join(id));
    Ok(())
}

fn retry(layout: &Layout, mut r: Record) -> std::io::Result<()> {
    r.next_attempt_ms = 0;
    replace_record(layout, Place::Queue, &r)
}

fn delete(layout: &Layout, place: Place, id: &str) -> std::io::Result<()> {
    // The daemon's log may still hold the entry; a tombstone keeps a replay
    // after a crash from bringing it back (the next checkpoint removes it).
    std::fs::create_dir_all(layout.gone())?;
    File::create(layout.gone().join(id))?.sync_all()?;
    store::sync_dir(&layout.gone())?;
    Committer::commit_blocking(
        vec![],
        vec![
            Op::Remove(layout.json(place, id)),
            Op::Remove(layout.eml(place, id)),
        ],
        vec![layout.dir(place)],
    )
}

fn requeue(layout: &Layout, mut r: Record) -> std::io::Result<()> {
    for rcpt in &mut r.recipients {
        if rcpt.status == RcptStatus::Dead {
            rcpt.status = RcptStatus::Pending;
        }
    }
    // max_age counts again from now, or the message would die at once.
    let now = wall_ms();
    r.received_at_ms = now;
    r.next_attempt_ms = now;
    r.attempts = 0;
    let (f, tmp) = layout.write_tmp_record(&r)?;
    Committer::commit_blocking(
        vec![f],
        vec![
            Op::Rename(
                layout.eml(Place::Dead, &r.id),
                layout.eml(Place::Queue, &r.id),
            ),
            Op::Rename(tmp, layout.json(Place::Queue, &r.id)),
            Op::Remove(layout.json(Place::Dead, &r.id)),
        ],
        vec![layout.dir(Place::Dead), layout.dir(Place::Queue)],
    )
}

fn replace_record(layout: &Layout, place: Place, r: &Record) -> std::io::Result<()> {
    let (f, tmp) = layout.write_tmp_record(r)?;
    Committer::commit_blocking(
        vec![f],
        vec![Op::Rename(tmp, layout.json(place, &r.id))],
        vec![layout.dir(place)],
    )
}

fn list(layout: &Layout, place: Place, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let records: Vec<Record> = layout
        .ids(place)?
        .iter()
        .filter_map(|id| layout.read_record(place, id).ok())
        .collect();
    if json {
        serde_json::to_writer_pretty(&mut *out, &records).map_err(std::io::Error::other)?;
        return writeln!(out);
    }
    let now = wall_ms();
    if records.is_empty() {
        return writeln!(
            out,
            "{}",
            match place {
                Place::Queue => "queue is empty",
                Place::Dead => "no dead letters",
            }
        );
    }
    for r in &records {
        let age = now.saturating_sub(r.received_at_ms) / 1000;
        let pending = r.pending().count();
        match place {
            Place::Queue => {
                let next = r.next_attempt_ms.saturating_sub(now) / 1000;
                writeln!(
                    out,
                    "{id}  {up}  {size} B  age {age}s  {pending}/{n} pending  attempts {a}  next in {next}s  {err}",
                    id = r.id,
                    up = r.upstream,
                    size = r.size,
                    n = r.recipients.len(),
                    a = r.attempts,
                    err = r.last_error.as_deref().unwrap_or(""),
                )?;
            }
            Place::Dead => {
                writeln!(
                    out,
                    "{id}  {up}  {size} B  age {age}s  from {from}",
                    id = r.id,
                    up = r.upstream,
                    size = r.size,
                    from = r.client_mail_from,
                )?;
                for rc in r
                    .recipients
                    .iter()
                    .filter(|rc| rc.status == RcptStatus::Dead)
                {
                    writeln!(
                        out,
                        "    {}: {}",
                        rc.address,
                        rc.reply.as_deref().unwrap_or("")
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn show(layout: &Layout, id: &str, out: &mut dyn Write) -> Result<(), String> {
    let place = find(layout, id)?;
    let record = layout
        .read_record(place, id)
        .map_err(|e| format!("{id}: {e}"))?;
    let content = std::fs::read(layout.eml(place, id)).map_err(|e| format!("{id}: {e}"))?;
    let w = |e: std::io::Error| e.to_string();
    writeln!(
        out,
        "{} ({})",
        id,
        match place {
            Place::Queue => "queued",
            Place::Dead => "dead letter",
        }
    )
    .map_err(w)?;
    serde_json::to_writer_pretty(&mut *out, &record).map_err(|e| e.to_string())?;
    writeln!(out, "\n").map_err(w)?;
    out.write_all(&content).map_err(w)?;
    Ok(())
}
