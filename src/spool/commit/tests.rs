use super::*;
use crate::spool::store::{Layout, Place, sample_record as record};

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

/// Spools a small message through `c` as `Spool::commit` does; returns
/// whether the log took it.
async fn put(c: &Arc<Committer>, l: &Layout, id: &str, eml: &[u8]) -> io::Result<bool> {
    let files = [
        l.tmp().join(format!("{id}.eml")),
        l.tmp().join(format!("{id}.json")),
    ];
    c.submit(
        vec![],
        vec![],
        vec![
            Op::Rename(files[0].clone(), l.eml(Place::Queue, id)),
            Op::Rename(files[1].clone(), l.json(Place::Queue, id)),
        ],
        vec![l.dir(Place::Queue)],
        Some(Logged::Put {
            id: id.to_owned(),
            json: serde_json::to_vec(&record(id)).unwrap().into(),
            eml: eml.into(),
            files,
        }),
    )
    .await
}

fn open_log(l: &Layout) -> Wal {
    let (mut w, old) = Wal::open(l, Default::default()).unwrap();
    assert!(old.is_empty());
    w.checkpoint(std::collections::HashSet::new()).unwrap();
    w
}

/// Waits until the last round's thread lets go of the committer, then
/// drops it (and the log, which waits for a retirement as it goes).
async fn settle(c: Arc<Committer>) {
    while Arc::strong_count(&c) > 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn small_messages_and_removals_become_log_records_and_no_files() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(d.path());
    l.create().unwrap();
    let c = Arc::new(Committer::with_wal(open_log(&l)));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (c, l) = (c.clone(), l.clone());
            tokio::spawn(async move { put(&c, &l, &format!("m{i:02}"), b"abc").await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().unwrap(), "the log took it");
    }
    assert!(c.rounds() < 20, "{} rounds", c.rounds());
    // Held in memory: nothing in the queue directory, nothing left in tmp/.
    assert_eq!(std::fs::read_dir(l.dir(Place::Queue)).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(l.tmp()).unwrap().count(), 0);
    let took = c
        .submit(
            vec![],
            vec![],
            vec![],
            vec![l.dir(Place::Queue)],
            Some(Logged::Gone("m00".into())),
        )
        .await
        .unwrap();
    assert!(took);
    settle(c).await;
    let (_, entries) = Wal::open(&l, Default::default()).unwrap();
    let puts = entries
        .iter()
        .filter(|e| matches!(e, wal::Entry::Put { .. }))
        .count();
    assert_eq!(puts, 20);
    assert_eq!(entries.last(), Some(&wal::Entry::Gone { id: "m00".into() }));
    let Some(wal::Entry::Put { json, eml, .. }) = entries.first() else {
        panic!("{entries:?}");
    };
    assert_eq!(eml, b"abc");
    assert!(serde_json::from_slice::<crate::spool::store::Record>(json).is_ok());
}

#[tokio::test]
async fn a_message_larger_than_a_segment_syncs_its_files_instead() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(d.path());
    l.create().unwrap();
    let c = Arc::new(Committer::with_wal(open_log(&l)));
    let big = vec![b'x'; 9 << 20];
    assert!(!put(&c, &l, "big", &big).await.unwrap(), "not in the log");
    assert_eq!(std::fs::read(l.eml(Place::Queue, "big")).unwrap(), big);
    assert_eq!(l.read_record(Place::Queue, "big").unwrap(), record("big"));
    settle(c).await;
    let (_, entries) = Wal::open(&l, Default::default()).unwrap();
    assert!(entries.is_empty());
}

#[tokio::test]
async fn a_full_segment_is_switched_for_the_other() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(d.path());
    l.create().unwrap();
    let c = Arc::new(Committer::with_wal(open_log(&l)));
    let big = vec![b'x'; 200 * 1024];
    let mut n = 0;
    while c.checkpoints() == 1 {
        assert!(put(&c, &l, &format!("b{n:03}"), &big).await.unwrap());
        n += 1;
    }
    // 8 MiB of segment, 200 KiB each: the switch came with the 41st.
    assert_eq!(n, 41);
    settle(c).await;
    let (_, entries) = Wal::open(&l, Default::default()).unwrap();
    assert_eq!(entries.len(), 1, "only what came after the switch");
}
