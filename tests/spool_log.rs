//! The spool's write-ahead log across a crash: a small message's files are
//! written without a sync of their own (the log's record is the durable
//! copy), so a crash can lose them after the 250; the next start brings them
//! back from the log, and never brings back what was delivered, deleted, or
//! never acknowledged. The crash is played by changing the files as a power
//! cut could have left them, then starting a new daemon on them.

mod support;

use std::path::Path;
use std::time::Duration;

use support::memory_upstream::MemoryUpstream;
use support::spool::*;
use support::transcript::Server;

const SPOOL: &str = "delivery = \"spool\"";

fn queued(s: &Server) -> usize {
    s.state.shared.policy().spool.as_ref().unwrap().queued()
}

/// How many delivered messages contain `text`.
fn delivered(up: &MemoryUpstream, text: &str) -> usize {
    up.messages()
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.data).contains(text))
        .count()
}

/// The log segment holding `needle`, and where.
fn find_in_log(spool: &Path, needle: &str) -> (std::path::PathBuf, usize) {
    for i in 0..2 {
        let path = spool.join(format!("wal/{i}"));
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
        {
            return (path, at);
        }
    }
    panic!("{needle} is not in the log");
}

#[tokio::test(start_paused = true)]
async fn acknowledged_messages_whose_files_a_crash_lost_come_back_and_are_delivered_once() {
    let up = MemoryUpstream::default();
    up.set_down(true);
    let first = server(&up, "", SPOOL);
    let mut t = logged_in(&first).await;
    let mut ids = Vec::new();
    for body in ["lost-body", "torn-body", "kept-body"] {
        ids.push(queued_id(&send(&mut t, &["you@example.net"], body).await));
    }
    t.cmd("QUIT", "221").await;
    let dir = spool_dir(&first);
    // What a power cut can leave of files written without a sync: the first
    // entry's files never reached the disk, the second's message only in part.
    std::fs::remove_file(dir.join(format!("queue/{}.json", ids[0]))).unwrap();
    std::fs::remove_file(dir.join(format!("queue/{}.eml", ids[0]))).unwrap();
    std::fs::write(dir.join(format!("queue/{}.eml", ids[1])), b"Subj").unwrap();
    up.set_down(false);
    let (second, files) = restart(first, &up, SPOOL).await;
    assert_eq!(queued(&second), 3);
    until(Duration::from_secs(300), || up.messages().len() == 3).await;
    // Long enough for any second delivery to have happened.
    tokio::time::sleep(Duration::from_secs(120)).await;
    for body in ["lost-body", "torn-body", "kept-body"] {
        assert_eq!(delivered(&up, body), 1, "{body}");
    }
    until(Duration::from_secs(5), || queued(&second) == 0).await;
    assert_eq!(count(&files.path().join("spool/queue"), ".json"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_delivered_message_whose_removal_a_crash_lost_is_not_delivered_again() {
    let up = MemoryUpstream::default();
    up.set_down(true);
    let first = server(&up, "", SPOOL);
    let mut t = logged_in(&first).await;
    let id = queued_id(&send(&mut t, &["you@example.net"], "once-only").await);
    t.cmd("QUIT", "221").await;
    let dir = spool_dir(&first);
    let kept: Vec<(std::path::PathBuf, Vec<u8>)> = ["json", "eml"]
        .iter()
        .map(|ext| {
            let p = dir.join(format!("queue/{id}.{ext}"));
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    up.set_down(false);
    until(Duration::from_secs(300), || {
        delivered(&up, "once-only") == 1
    })
    .await;
    until(Duration::from_secs(5), || !kept[0].0.exists()).await;
    // The removal's renames were not synced: after a power cut the files can
    // still be in the queue. The log's record of the delivery says otherwise.
    for (p, bytes) in &kept {
        std::fs::write(p, bytes).unwrap();
    }
    let (second, files) = restart(first, &up, SPOOL).await;
    assert_eq!(queued(&second), 0);
    assert!(!files.path().join(format!("spool/queue/{id}.json")).exists());
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(delivered(&up, "once-only"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_entry_and_an_unacknowledged_one_are_not_brought_back() {
    let up = MemoryUpstream::default();
    up.set_down(true);
    let first = server(&up, "", SPOOL);
    let mut t = logged_in(&first).await;
    let deleted = queued_id(&send(&mut t, &["you@example.net"], "deleted-body").await);
    let torn = queued_id(&send(&mut t, &["you@example.net"], "torn-round").await);
    t.cmd("QUIT", "221").await;
    queue(&first, &["delete", &deleted]).await.unwrap();
    let dir = spool_dir(&first);
    assert!(!dir.join(format!("queue/{deleted}.json")).exists());
    // The second message as if the crash came during its round: its record
    // is torn in the log and its files never reached the disk (its session
    // had no 250 then).
    let (segment, at) = find_in_log(&dir, &torn);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[at + torn.len() + 40] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    std::fs::remove_file(dir.join(format!("queue/{torn}.json"))).unwrap();
    std::fs::remove_file(dir.join(format!("queue/{torn}.eml"))).unwrap();
    up.set_down(false);
    let (second, files) = restart(first, &up, SPOOL).await;
    assert_eq!(queued(&second), 0);
    // The checkpoint after the replay cleared the tombstone.
    assert_eq!(count(&files.path().join("spool/gone"), ""), 0);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(up.messages().is_empty());
}
