//! What the raft node needs: suffix replacement that survives crashes, reads
//! from an index with the latest state, segment rotation and release.

mod common;

use std::fs;
use std::process::Command;

use cairn_wal::inspect::inspect;
use cairn_wal::segment::parse_segment_file_name;
use cairn_wal::{BackendChoice, Record, SnapshotMarker, Wal, WalError, WalOptions};
use common::*;

backend_tests!(
    replacing_a_suffix_then_crashing_returns_the_new_suffix_after_reopen,
    read_from_returns_entries_from_an_index_and_the_latest_state,
    segments_are_named_by_sequence_and_first_index_and_preallocated,
    segments_covered_by_a_snapshot_are_released_keeping_the_minimum,
    state_survives_the_release_of_the_segments_that_first_held_it,
    appends_that_skip_an_index_or_do_not_fit_are_rejected_and_change_nothing,
    a_second_open_of_the_same_directory_is_refused,
    create_refuses_a_directory_that_already_holds_a_log,
);

const CHILD_ENV: &str = "CAIRN_WAL_TEST_CRASH_DIR";

/// A child process writes entries 1..=50 (term 1), replaces 31.. with 31..=40
/// of term 2, is told each append is durable, and dies by `abort` without any
/// clean shutdown. The reopened log must hold 1..=30 of term 1 and 31..=40 of
/// term 2 — never the old 41..=50.
fn replacing_a_suffix_then_crashing_returns_the_new_suffix_after_reopen(backend: BackendChoice) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let wal = Wal::create(&dir, opts(backend, 16 << 10), b"m").unwrap();
        for i in 1..=50 {
            wal.append(vec![entry(i, 1, 300)]).unwrap();
        }
        wal.append(vec![hard_state(1, 1, 30)]).unwrap();
        let new: Vec<Record> = (31..=40).map(|i| entry(i, 2, 200)).collect();
        wal.append(new).unwrap();
        wal.append(vec![hard_state(2, 2, 35)]).unwrap();
        std::process::abort();
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let name = format!(
        "{}::replacing_a_suffix_then_crashing_returns_the_new_suffix_after_reopen",
        module_for(backend)
    );
    let status = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .status()
        .unwrap();
    assert!(!status.success(), "the child must have crashed");
    let wal = Wal::open(&dir, opts(backend, 16 << 10)).unwrap();
    let got = wal.read_from(1).unwrap();
    let want: Vec<_> = (1..=30)
        .map(|i| (i, 1, payload(i, 1, 300)))
        .chain((31..=40).map(|i| (i, 2, payload(i, 2, 200))))
        .collect();
    let have: Vec<_> = got
        .entries
        .iter()
        .map(|e| (e.index, e.term, e.data.clone()))
        .collect();
    assert_eq!(have, want);
    assert_eq!(got.hard_state.unwrap().commit, 35);
    assert_eq!(wal.last_index(), 40);
    // The replacement crossed segment boundaries: the old suffix is still on disk
    // in an earlier segment, and must stay invisible there too.
    assert!(wal.segments().len() > 1);
    assert_eq!(wal.read_from(41).unwrap().entries, vec![]);
}

fn read_from_returns_entries_from_an_index_and_the_latest_state(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::create(&dir, opts(backend, 8192), b"meta-1").unwrap();
    for i in 1..=100 {
        wal.append(vec![entry(i, 1, 100)]).unwrap();
    }
    wal.append(vec![
        hard_state(1, 3, 90),
        Record::Metadata(b"meta-2".to_vec()),
    ])
    .unwrap();
    // A snapshot installed far past the log: the log moves on from there.
    let snap = SnapshotMarker {
        index: 500,
        term: 4,
        data: b"conf".to_vec(),
    };
    wal.append(vec![Record::Snapshot(snap.clone())]).unwrap();
    for i in 501..=510 {
        wal.append(vec![entry(i, 4, 100)]).unwrap();
    }
    let got = wal.read_from(505).unwrap();
    assert_eq!(
        got.entries.iter().map(|e| e.index).collect::<Vec<_>>(),
        (505..=510).collect::<Vec<_>>()
    );
    assert_eq!(got.hard_state.unwrap().commit, 90);
    assert_eq!(got.metadata.as_deref(), Some(&b"meta-2"[..]));
    assert_eq!(got.snapshot.as_ref(), Some(&snap));
    // Entries before the snapshot are gone from the log's point of view.
    let all = wal.read_from(1).unwrap();
    assert_eq!(all.entries.first().unwrap().index, 501);
    drop(wal);
    let wal = Wal::open(&dir, opts(backend, 8192)).unwrap();
    let got = wal.read_from(505).unwrap();
    assert_eq!(got.entries.len(), 6);
    assert_eq!(got.snapshot, Some(snap));
    assert_eq!(wal.last_index(), 510);
}

fn segments_are_named_by_sequence_and_first_index_and_preallocated(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::create(&dir, opts(backend, 8192), b"m").unwrap();
    for i in 1..=200 {
        wal.append(vec![entry(i, 1, 150)]).unwrap();
    }
    let segs = wal.segments();
    assert!(segs.len() >= 5);
    let ins = inspect(&dir).unwrap();
    for (k, s) in ins.segments.iter().enumerate() {
        let name = s.path.file_name().unwrap().to_str().unwrap();
        let (seq, first) = parse_segment_file_name(name).unwrap();
        assert_eq!(seq, k as u64);
        assert_eq!(s.file_size, 8192, "{name} is preallocated");
        // The first entry in a segment is the one its name promises.
        let first_entry = s
            .records
            .iter()
            .find_map(|r| r.index.filter(|_| r.term.is_some()));
        if k > 0 {
            assert_eq!(first_entry, Some(first), "{name}");
        } else {
            assert_eq!(first, 1);
        }
        assert_eq!(name.len(), "0000000000000000-0000000000000000.wal".len());
    }
    let m = wal.metrics();
    assert_eq!(m.segments_created as usize, segs.len() - 1);
    // No temporary file is left in place beyond the one being prepared.
    let temps = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".tmp")
        })
        .count();
    assert!(temps <= 1);
    drop(wal);
    assert!(inspect(&dir).unwrap().verdict.is_sound());
}

fn segments_covered_by_a_snapshot_are_released_keeping_the_minimum(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let o = WalOptions {
        min_segments: 3,
        ..opts(backend, 8192)
    };
    let wal = Wal::create(&dir, o.clone(), b"m").unwrap();
    for i in 1..=400 {
        wal.append(vec![entry(i, 1, 150)]).unwrap();
    }
    let before = wal.segments();
    assert!(before.len() >= 8);
    let firsts: Vec<u64> = before
        .iter()
        .map(|p| {
            parse_segment_file_name(p.file_name().unwrap().to_str().unwrap())
                .unwrap()
                .1
        })
        .collect();
    // A snapshot at the last index of segment 2 releases segments 0..=2 only.
    let snap_index = firsts[3] - 1;
    wal.append(vec![Record::Snapshot(SnapshotMarker {
        index: snap_index,
        term: 1,
        data: vec![],
    })])
    .unwrap();
    assert_eq!(wal.release(snap_index).unwrap(), 3);
    assert_eq!(wal.segments(), before[3..].to_vec());
    assert!(!before[2].exists() && before[3].exists());
    // One below the next boundary releases nothing more.
    assert_eq!(wal.release(firsts[4] - 2).unwrap(), 0);
    // Everything covered, but the minimum is kept.
    let n = wal.segments().len();
    assert_eq!(wal.release(400).unwrap(), n - 3);
    assert_eq!(wal.segments().len(), 3);
    assert_eq!(wal.metrics().segments_released as usize, n);
    let after = wal.read_from(snap_index + 1).unwrap();
    assert_eq!(after.entries.last().unwrap().index, 400);
    drop(wal);
    let wal = Wal::open(&dir, o).unwrap();
    let entries = wal.read_from(firsts[firsts.len() - 3]).unwrap().entries;
    assert_eq!(entries.first().unwrap().index, firsts[firsts.len() - 3]);
    assert_eq!(entries.last().unwrap().index, 400);
}

fn state_survives_the_release_of_the_segments_that_first_held_it(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let o = WalOptions {
        min_segments: 1,
        ..opts(backend, 8192)
    };
    let wal = Wal::create(&dir, o.clone(), b"cluster-7").unwrap();
    wal.append(vec![hard_state(5, 2, 0)]).unwrap();
    for i in 1..=300 {
        wal.append(vec![entry(i, 5, 150)]).unwrap();
    }
    let snap = SnapshotMarker {
        index: 280,
        term: 5,
        data: b"voters=1,2,3".to_vec(),
    };
    wal.append(vec![Record::Snapshot(snap.clone())]).unwrap();
    for i in 301..=400 {
        wal.append(vec![entry(i, 5, 150)]).unwrap();
    }
    let released = wal.release(400).unwrap();
    assert_eq!(wal.segments().len(), 1);
    assert!(released >= 5);
    drop(wal);
    let wal = Wal::open(&dir, o).unwrap();
    let got = wal.read_from(1).unwrap();
    assert_eq!(got.metadata.as_deref(), Some(&b"cluster-7"[..]));
    assert_eq!(got.hard_state.unwrap().term, 5);
    assert_eq!(got.hard_state.unwrap().vote, 2);
    assert_eq!(got.snapshot, Some(snap));
    assert_eq!(got.entries.last().unwrap().index, 400);
}

fn appends_that_skip_an_index_or_do_not_fit_are_rejected_and_change_nothing(
    backend: BackendChoice,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::create(&dir, opts(backend, 8192), b"m").unwrap();
    wal.append(vec![entry(1, 1, 10), entry(2, 1, 10)]).unwrap();
    match wal.append(vec![entry(3, 1, 10), entry(5, 1, 10)]) {
        Err(WalError::IndexGap { last: 3, found: 5 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        wal.append(vec![entry(0, 1, 10)]),
        Err(WalError::ZeroIndex)
    ));
    match wal.append(vec![entry(3, 1, 9000)]) {
        Err(WalError::RecordTooLarge {
            segment_size: 8192, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // None of the rejected submissions left a trace; the log goes on at 3.
    assert_eq!(wal.last_index(), 2);
    wal.append(vec![entry(3, 1, 10)]).unwrap();
    // The largest record that fits is accepted.
    let big = 8192 - 64 - 24 /* metadata "m" */ - 16 - 16;
    wal.append(vec![Record::entry(4, 1, vec![7u8; big])])
        .unwrap();
    drop(wal);
    let wal = Wal::open(&dir, opts(backend, 8192)).unwrap();
    assert_eq!(indexes(&wal, 1), vec![1, 2, 3, 4]);
}

fn a_second_open_of_the_same_directory_is_refused(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::create(&dir, opts(backend, 8192), b"m").unwrap();
    let quick = WalOptions {
        lock_timeout: std::time::Duration::from_millis(50),
        ..opts(backend, 8192)
    };
    let t = std::time::Instant::now();
    assert!(matches!(Wal::open(&dir, quick), Err(WalError::Locked(_))));
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(50),
        "it waited for the holder"
    );
    drop(wal);
    Wal::open(&dir, opts(backend, 8192)).unwrap();
}

fn create_refuses_a_directory_that_already_holds_a_log(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    drop(Wal::create(&dir, opts(backend, 8192), b"m").unwrap());
    assert!(matches!(
        Wal::create(&dir, opts(backend, 8192), b"m"),
        Err(WalError::AlreadyExists(_))
    ));
    assert!(matches!(
        Wal::open(tmp.path().join("none"), opts(backend, 8192)),
        Err(WalError::NotFound(_))
    ));
    // An empty directory is fine to create in.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    drop(Wal::create(&empty, opts(backend, 8192), b"m").unwrap());
    assert!(Wal::exists(&empty));
}
