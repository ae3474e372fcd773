//! Concurrent sessions into the spool share disk syncs (group commit). In a
//! binary of its own: it runs in real time on two threads, and its twenty
//! password checks would hold the process-wide verifier's permits that the
//! paused-time spool tests wait for.

mod support;

use support::memory_upstream::MemoryUpstream;
use support::spool::*;
use support::transcript::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_share_disk_syncs() {
    let up = MemoryUpstream::default();
    up.set_down(true);
    // No delivery workers: only the sessions' commits count.
    let s = std::sync::Arc::new(Server::build(
        &config("", "delivery = \"spool\""),
        up.connector(),
    ));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = logged_in_unlocked(&s).await;
            let mut ids = Vec::new();
            for j in 0..5 {
                ids.push(queued_id(
                    &send(&mut t, &["a@example.net"], &format!("{i}-{j}")).await,
                ));
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    assert_eq!(ids.len(), 100);
    let spool = s.state.shared.policy().spool.clone().unwrap();
    let rounds = spool.commit_rounds();
    // Every message durable, in fewer disk syncs than messages; none lost
    // when they are written out as files (after a second in the queue).
    assert!(rounds < 100, "{rounds} rounds for 100 messages");
    spool.start_housekeeping();
    let queue = spool_dir(&s).join("queue");
    let deadline = std::time::Duration::from_secs(30);
    let waited = tokio::time::Instant::now();
    while count(&queue, ".json") < 100 && waited.elapsed() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(count(&queue, ".json"), 100);
    assert_eq!(spool.queued(), 100);
    eprintln!("100 messages from 20 sessions: {rounds} commit rounds");
}
