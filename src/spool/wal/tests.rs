use super::*;
use crate::spool::store::{Place, sample_record};

fn fresh() -> (tempfile::TempDir, Layout, Wal) {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(d.path());
    l.create().unwrap();
    let (mut w, old) = Wal::open(&l, Default::default()).unwrap();
    assert!(old.is_empty());
    w.checkpoint(HashSet::new()).unwrap();
    (d, l, w)
}

fn json(id: &str, eml: &[u8]) -> Vec<u8> {
    let mut r = sample_record(id);
    r.size = eml.len() as u64;
    r.crc32 = crc32fast::hash(eml);
    serde_json::to_vec(&r).unwrap()
}

fn put(id: &str, eml: &[u8]) -> Entry {
    Entry::Put {
        id: id.into(),
        json: json(id, eml),
        eml: eml.to_vec(),
    }
}

#[test]
fn records_read_back_in_order_across_a_reopen() {
    let (_d, l, mut w) = fresh();
    let (ja, jb) = (json("a", b"one"), json("b", b"two"));
    w.append(&[("a", &ja, b"one"), ("b", &jb, b"two")], &[])
        .unwrap();
    w.append(&[], &["a"]).unwrap();
    drop(w);
    let (_, entries) = Wal::open(&l, Default::default()).unwrap();
    assert_eq!(
        entries,
        vec![
            put("a", b"one"),
            put("b", b"two"),
            Entry::Gone { id: "a".into() }
        ]
    );
}

#[test]
fn a_torn_tail_ends_the_log_and_what_came_before_it_stays() {
    let (_d, l, mut w) = fresh();
    let ja = json("a", b"one");
    w.append(&[("a", &ja, b"one")], &[]).unwrap();
    let tail = w.pos;
    let jb = json("b", b"two");
    w.append(&[("b", &jb, b"two")], &[]).unwrap();
    let seg = l.wal().join(w.active.to_string());
    drop(w);
    // The second round's last byte never reached the disk.
    let f = File::options().write(true).open(&seg).unwrap();
    let last = tail + put_len("b", &jb, b"two") - 1;
    f.write_all_at(b"X", last).unwrap();
    let (_, entries) = Wal::open(&l, Default::default()).unwrap();
    assert_eq!(entries, vec![put("a", b"one")]);
}

#[test]
fn what_an_earlier_use_of_a_segment_left_never_reads_as_a_record() {
    let (_d, l, mut w) = fresh();
    let ja = json("a", b"one");
    let jb = json("b", b"two");
    w.append(&[("a", &ja, b"one"), ("b", &jb, b"two")], &[])
        .unwrap();
    // Two switches: back on the same segment, two generations on.
    w.rotate().unwrap();
    w.rotate().unwrap();
    w.append(&[("a", &ja, b"one")], &[]).unwrap();
    drop(w);
    // "b" still sits on disk right after the new "a", from the old generation.
    let (_, entries) = Wal::open(&l, Default::default()).unwrap();
    assert_eq!(entries, vec![put("a", b"one")]);
}

#[test]
fn a_checkpoint_empties_the_log_and_clears_tombstones() {
    let (_d, l, mut w) = fresh();
    let ja = json("a", b"one");
    w.append(&[("a", &ja, b"one")], &[]).unwrap();
    fs::write(l.gone().join("a"), "").unwrap();
    w.checkpoint(HashSet::new()).unwrap();
    assert_eq!(fs::read_dir(l.gone()).unwrap().count(), 0);
    drop(w);
    let (_, entries) = Wal::open(&l, Default::default()).unwrap();
    assert!(entries.is_empty());
    assert_eq!(
        fs::metadata(l.wal().join("0")).unwrap().len(),
        SEGMENT_BYTES
    );
}

#[test]
fn replay_restores_lost_files_and_removes_gone_ones() {
    let d = tempfile::tempdir().unwrap();
    let l = Layout::new(d.path());
    l.create().unwrap();
    // "lost": nothing of it reached the disk.
    // "torn": its record did, its message only in part.
    fs::write(l.json(Place::Queue, "torn"), json("torn", b"hello")).unwrap();
    fs::write(l.eml(Place::Queue, "torn"), b"he").unwrap();
    // "whole": both files are there; replay leaves them (its record may be newer).
    let mut newer = sample_record("whole");
    newer.size = 2;
    newer.crc32 = crc32fast::hash(b"ok");
    newer.attempts = 3;
    fs::write(
        l.json(Place::Queue, "whole"),
        serde_json::to_vec(&newer).unwrap(),
    )
    .unwrap();
    fs::write(l.eml(Place::Queue, "whole"), b"ok").unwrap();
    // "dead": dead-lettered, its message lost on the way.
    fs::write(l.json(Place::Dead, "dead"), json("dead", b"rip")).unwrap();
    // "sent": delivered; its files were still in the queue at the crash.
    fs::write(l.json(Place::Queue, "sent"), json("sent", b"x")).unwrap();
    fs::write(l.eml(Place::Queue, "sent"), b"x").unwrap();
    // "deleted": `postern queue delete` removed it and left a tombstone.
    fs::write(l.gone().join("deleted"), "").unwrap();
    let entries = vec![
        put("lost", b"lost body"),
        put("torn", b"hello"),
        put("whole", b"ok"),
        put("dead", b"rip"),
        put("sent", b"x"),
        put("deleted", b"del"),
        Entry::Gone { id: "sent".into() },
    ];
    let done = replay(&l, entries).unwrap();
    assert_eq!(done.restored, 3);
    let mut live: Vec<_> = done.live.into_iter().collect();
    live.sort();
    assert_eq!(live, vec!["dead", "lost", "torn", "whole"]);
    assert_eq!(fs::read(l.eml(Place::Queue, "lost")).unwrap(), b"lost body");
    assert!(l.read_record(Place::Queue, "lost").is_ok());
    assert_eq!(fs::read(l.eml(Place::Queue, "torn")).unwrap(), b"hello");
    assert_eq!(l.read_record(Place::Queue, "whole").unwrap().attempts, 3);
    assert_eq!(fs::read(l.eml(Place::Dead, "dead")).unwrap(), b"rip");
    assert!(!l.json(Place::Queue, "dead").exists());
    assert!(!l.json(Place::Queue, "sent").exists());
    assert!(!l.eml(Place::Queue, "sent").exists());
    assert!(!l.json(Place::Queue, "deleted").exists());
    // Recovery after the replay keeps all of it.
    l.recover().unwrap();
    assert_eq!(l.ids(Place::Queue).unwrap(), vec!["lost", "torn", "whole"]);
    assert_eq!(l.ids(Place::Dead).unwrap(), vec!["dead"]);
}

#[test]
fn a_full_segment_is_retired_once_its_entries_files_are_synced() {
    let (_d, l, mut w) = fresh();
    let ja = json("a", b"one");
    w.append(&[("a", &ja, b"one")], &[]).unwrap();
    fs::write(l.gone().join("x"), "").unwrap();
    w.rotate().unwrap();
    let jb = json("b", b"two");
    w.append(&[("b", &jb, b"two")], &[]).unwrap();
    // A tombstone made after the switch waits for the next retirement.
    fs::write(l.gone().join("y"), "").unwrap();
    drop(w);
    // The first segment is retired: only the second one's record replays.
    let (w, entries) = Wal::open(&l, Default::default()).unwrap();
    assert_eq!(entries, vec![put("b", b"two")]);
    assert!(!l.gone().join("x").exists());
    assert!(l.gone().join("y").exists());
    drop(w);
}
