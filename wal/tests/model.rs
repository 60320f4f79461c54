//! Model-based property test: random appends, replacements, snapshots, state
//! records, releases and reopens, checked against a simple in-memory model.

mod common;

use cairn_wal::{BackendChoice, HardState, Record, SnapshotMarker, Wal, WalOptions};
use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// `n` entries after the last one, or replacing from `back` entries back.
    Append {
        n: u8,
        back: Option<u8>,
        size: u16,
        new_term: bool,
    },
    HardState {
        vote: u8,
    },
    Metadata {
        len: u8,
    },
    /// A snapshot marker `ahead` entries past the last index (may be behind it).
    Snapshot {
        ahead: i8,
    },
    Release,
    Reopen,
    Read {
        back: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..5, prop::option::weighted(0.3, 1u8..8), 0u16..700, any::<bool>())
            .prop_map(|(n, back, size, new_term)| Op::Append { n, back, size, new_term }),
        2 => any::<u8>().prop_map(|vote| Op::HardState { vote }),
        1 => (0u8..200).prop_map(|len| Op::Metadata { len }),
        1 => (-5i8..30).prop_map(|ahead| Op::Snapshot { ahead }),
        1 => Just(Op::Release),
        2 => Just(Op::Reopen),
        2 => any::<u8>().prop_map(|back| Op::Read { back }),
    ]
}

struct Run {
    model: Model,
    term: u64,
    /// Entries at or below the latest snapshot are never replaced (raft never
    /// replaces committed entries).
    floor: u64,
    /// After a release, only reads from beyond the snapshot are meaningful.
    read_floor: u64,
}

fn check(wal: &Wal, run: &Run, from: u64) {
    let from = from.max(run.read_floor).max(1);
    let got = wal.read_from(from).unwrap();
    assert_eq!(got.entries, run.model.from(from), "entries from {from}");
    assert_eq!(got.hard_state, run.model.hard_state);
    assert_eq!(got.metadata, run.model.metadata);
    assert_eq!(got.snapshot.map(|s| (s.index, s.term)), run.model.snapshot);
    assert_eq!(wal.last_index(), run.model.last);
}

fn run_ops(backend: BackendChoice, ops: Vec<Op>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let o = WalOptions {
        min_segments: 2,
        ..opts(backend, 4096)
    };
    let mut wal = Wal::create(&dir, o.clone(), b"meta").unwrap();
    assert_eq!(wal.backend(), expected_kind(backend));
    let mut run = Run {
        model: Model {
            metadata: Some(b"meta".to_vec()),
            ..Model::default()
        },
        term: 1,
        floor: 0,
        read_floor: 1,
    };
    for op in ops {
        let records: Vec<Record> = match op {
            Op::Append {
                n,
                back,
                size,
                new_term,
            } => {
                if new_term {
                    run.term += 1;
                }
                let last = run.model.last;
                let start = match back {
                    Some(b) => (last + 1).saturating_sub(b as u64).max(run.floor + 1),
                    None => last + 1,
                };
                (start..start + n as u64)
                    .map(|i| entry(i, run.term, size as usize))
                    .collect()
            }
            Op::HardState { vote } => vec![Record::HardState(HardState {
                term: run.term,
                vote: vote as u64,
                commit: run.floor,
            })],
            Op::Metadata { len } => vec![Record::Metadata(vec![len; len as usize])],
            Op::Snapshot { ahead } => {
                let index = (run.model.last as i64 + ahead as i64).max(1) as u64;
                let index = index.max(run.floor);
                run.floor = index;
                vec![Record::Snapshot(SnapshotMarker {
                    index,
                    term: run.term,
                    data: vec![1, 2, 3],
                })]
            }
            Op::Release => {
                if let Some((snap, _)) = run.model.snapshot {
                    let before = wal.segments().len();
                    wal.release(snap).unwrap();
                    assert!(wal.segments().len() >= before.min(2));
                    run.read_floor = run.read_floor.max(snap + 1);
                }
                continue;
            }
            Op::Reopen => {
                drop(wal);
                wal = Wal::open(&dir, o.clone()).unwrap();
                assert!(wal.recovery_report().torn_tail.is_none());
                check(&wal, &run, 1);
                continue;
            }
            Op::Read { back } => {
                check(&wal, &run, run.model.last.saturating_sub(back as u64));
                continue;
            }
        };
        for r in &records {
            run.model.apply(&r.as_ref());
        }
        wal.append(records).unwrap();
        assert_eq!(wal.last_index(), run.model.last);
    }
    drop(wal);
    let wal = Wal::open(&dir, o).unwrap();
    check(&wal, &run, 1);
    assert!(
        cairn_wal::inspect::inspect(&dir)
            .unwrap()
            .verdict
            .is_sound()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn io_uring_log_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run_ops(BackendChoice::IoUring, ops);
    }

    #[test]
    fn pwrite_log_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        run_ops(BackendChoice::Pwrite, ops);
    }
}
