//! Recovery: torn tails are cut to exactly the records fully written, and any
//! other damage is an error naming the file and byte offset.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use cairn_wal::inspect::inspect;
use cairn_wal::record::RecordRef;
use cairn_wal::segment::{SegmentHeader, segment_file_name};
use cairn_wal::{BackendChoice, Wal, WalError};
use common::*;

const SEG: u64 = 8192;

backend_tests!(
    truncating_the_last_segment_at_every_offset_recovers_exactly_the_whole_records,
    zeroing_the_tail_of_the_last_segment_at_every_offset_recovers_exactly_the_whole_records,
    flipping_any_byte_of_an_earlier_segment_is_an_error_naming_file_and_offset,
    corruption_followed_by_a_later_batch_in_the_last_segment_is_an_error_not_a_cut,
    a_missing_middle_segment_is_an_error,
    an_index_gap_on_disk_is_an_error_naming_file_and_offset,
    leftover_temp_files_and_an_empty_last_segment_are_cleaned_up,
);

/// The last segment's frames as (offset, payload end, frame end), from the
/// inspector.
#[allow(clippy::type_complexity)]
fn last_segment_frames(dir: &Path) -> (std::path::PathBuf, Vec<(u64, u64, u64)>, u64) {
    let ins = inspect(dir).unwrap();
    let last = ins.segments.last().unwrap();
    let frames = last
        .records
        .iter()
        .map(|r| {
            let size = r.size.unwrap();
            (
                r.offset,
                r.offset + 16 + size,
                r.offset + (16 + size).div_ceil(8) * 8,
            )
        })
        .collect();
    (last.path.clone(), frames, last.end)
}

fn check_cut_tail(backend: BackendChoice, zero_instead_of_truncate: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let built = build_log(&pristine, backend, SEG, 3);
    let last_seq = built.durable.segment;
    let (last_path, frames, end) = last_segment_frames(&pristine);
    assert_eq!(end, built.durable.offset);
    let last_name = last_path.file_name().unwrap().to_owned();
    let pristine_bytes = fs::read(&last_path).unwrap();
    // Every byte offset within the last six records, through the end of data.
    let region_start = frames[frames.len() - 6].0;
    for cut in region_start..=end {
        let dir = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&pristine, &dir);
        let seg = dir.join(&last_name);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        if zero_instead_of_truncate {
            f.write_all_at(&vec![0u8; (end - cut) as usize], cut)
                .unwrap();
        } else {
            f.set_len(cut).unwrap();
        }
        drop(f);

        // Truncation needs the whole frame; zeroing leaves a record intact when
        // none of its bytes at or after the cut was non-zero (padding, or the
        // high bytes of a small number).
        let intact = |frame_end: u64| {
            frame_end <= cut
                || (zero_instead_of_truncate
                    && pristine_bytes[cut as usize..frame_end as usize]
                        .iter()
                        .all(|&b| b == 0))
        };
        let expected = built.model_by(|_, s, e| s < last_seq || intact(e));
        let valid_end = frames
            .iter()
            .take_while(|&&(_, _, e)| intact(e))
            .last()
            .map_or(64, |&(_, _, e)| e);
        let garbage = pristine_bytes[valid_end.min(cut) as usize..cut as usize]
            .iter()
            .any(|&b| b != 0);
        let wal =
            Wal::open(&dir, opts(backend, SEG)).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let torn = wal.recovery_report().torn_tail.clone();
        assert_eq!(
            torn.is_some(),
            garbage,
            "cut at {cut}: torn tail reported: {torn:?}"
        );
        if let Some(t) = torn {
            assert_eq!(t.offset, valid_end, "cut at {cut}: torn tail offset");
        }
        let got = wal.read_from(1).unwrap();
        assert_eq!(
            got.entries,
            expected.from(1),
            "entries after a cut at {cut}"
        );
        assert_eq!(
            got.hard_state, expected.hard_state,
            "hard state after a cut at {cut}"
        );
        assert_eq!(got.metadata, expected.metadata);
        assert_eq!(wal.last_index(), expected.last);

        // The repaired log takes new records and keeps them.
        let next = expected.last + 1;
        wal.append(vec![entry(next, 3, 50)]).unwrap();
        drop(wal);
        let wal = Wal::open(&dir, opts(backend, SEG)).unwrap();
        assert!(
            wal.recovery_report().torn_tail.is_none(),
            "cut at {cut}: second open still torn"
        );
        let mut want = expected.from(1);
        want.push(cairn_wal::Entry {
            index: next,
            term: 3,
            data: payload(next, 3, 50),
        });
        assert_eq!(
            wal.read_from(1).unwrap().entries,
            want,
            "after appending past a cut at {cut}"
        );
        drop(wal);
        fs::remove_dir_all(&dir).unwrap();
    }
}

fn truncating_the_last_segment_at_every_offset_recovers_exactly_the_whole_records(
    backend: BackendChoice,
) {
    check_cut_tail(backend, false);
}

fn zeroing_the_tail_of_the_last_segment_at_every_offset_recovers_exactly_the_whole_records(
    backend: BackendChoice,
) {
    check_cut_tail(backend, true);
}

fn flipping_any_byte_of_an_earlier_segment_is_an_error_naming_file_and_offset(
    backend: BackendChoice,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let built = build_log(&dir, backend, SEG, 3);
    let ins = inspect(&dir).unwrap();
    assert!(ins.verdict.is_sound());
    for seg in &ins.segments[..ins.segments.len() - 1] {
        let offsets: Vec<u64> = seg.records.iter().map(|r| r.offset).collect();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg.path)
            .unwrap();
        let name = seg.path.file_name().unwrap().to_str().unwrap().to_owned();
        for i in 0..seg.file_size {
            let expected = if i < 64 {
                0
            } else if i < seg.end {
                offsets.iter().rev().copied().find(|&o| o <= i).unwrap()
            } else if i < seg.end + 16 {
                seg.end // where the next frame header would be
            } else {
                i
            };
            let mut b = [0u8];
            file.read_exact_at(&mut b, i).unwrap();
            file.write_all_at(&[b[0] ^ 0xff], i).unwrap();
            let err = match Wal::open(&dir, opts(backend, SEG)) {
                Ok(_) => panic!("flipping byte {i} of {name} went unnoticed"),
                Err(e) => e,
            };
            match &err {
                WalError::Corrupt { path, offset, .. } => {
                    assert_eq!(path, &seg.path, "byte {i}: {err}");
                    assert_eq!(*offset, expected, "byte {i}: {err}");
                }
                other => panic!("flipping byte {i} of {name}: unexpected error {other}"),
            }
            let msg = err.to_string();
            assert!(
                msg.contains(&name) && msg.contains(&format!("byte offset {expected}")),
                "{msg}"
            );
            file.write_all_at(&b, i).unwrap();
        }
    }
    // Restored byte for byte, the log opens and holds everything.
    let wal = Wal::open(&dir, opts(backend, SEG)).unwrap();
    assert_eq!(
        wal.read_from(1).unwrap().entries,
        built.model(|_, _| true).from(1)
    );
}

fn corruption_followed_by_a_later_batch_in_the_last_segment_is_an_error_not_a_cut(
    backend: BackendChoice,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let built = build_log(&dir, backend, SEG, 2);
    let ins = inspect(&dir).unwrap();
    let last = ins.segments.last().unwrap();
    let last_batch = last.records.last().unwrap().batch.unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&last.path)
        .unwrap();
    for rec in &last.records {
        // Damage the middle of the record's payload.
        let at = rec.offset + 20;
        let mut b = [0u8];
        file.read_exact_at(&mut b, at).unwrap();
        file.write_all_at(&[b[0] ^ 0x55], at).unwrap();
        let copy = tmp.path().join(format!("copy-{}", rec.offset));
        copy_dir(&dir, &copy);
        file.write_all_at(&b, at).unwrap();
        let opened = Wal::open(&copy, opts(backend, SEG));
        if rec.batch == Some(last_batch) {
            // Damage in the final batch cannot be told from a torn write.
            let wal = opened.unwrap();
            let t = wal.recovery_report().torn_tail.clone().unwrap();
            assert_eq!(t.offset, rec.offset);
            let keep = rec.offset;
            let seq = built.durable.segment;
            let expected = built.model(|s, e| s < seq || e <= keep);
            assert_eq!(wal.read_from(1).unwrap().entries, expected.from(1));
        } else {
            match opened {
                Err(WalError::Corrupt {
                    path,
                    offset,
                    reason,
                }) => {
                    assert_eq!(path, copy.join(last.path.file_name().unwrap()));
                    assert_eq!(offset, rec.offset);
                    assert!(reason.contains("acknowledged"), "{reason}");
                }
                Err(e) => panic!("record at {}: unexpected error {e}", rec.offset),
                Ok(_) => panic!(
                    "damage to acknowledged record at {} was cut off",
                    rec.offset
                ),
            }
        }
        fs::remove_dir_all(&copy).unwrap();
    }
}

fn a_missing_middle_segment_is_an_error(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let built = build_log(&dir, backend, SEG, 4);
    fs::remove_file(&built.segments[1]).unwrap();
    match Wal::open(&dir, opts(backend, SEG)) {
        Err(WalError::MissingSegment {
            path,
            expected,
            found,
        }) => {
            assert_eq!(path, built.segments[2]);
            assert_eq!((expected, found), (1, 2));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a missing segment went unnoticed"),
    }
}

fn an_index_gap_on_disk_is_an_error_naming_file_and_offset(backend: BackendChoice) {
    // Written by hand: entries 1, 2, 4.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    fs::create_dir_all(&dir).unwrap();
    let header = SegmentHeader {
        seq: 0,
        first_index: 1,
        prev_end: 0,
        batch: 0,
        segment_size: SEG,
    };
    let mut buf = header.encode().to_vec();
    RecordRef::Metadata(b"m").encode_into(0, &mut buf);
    entry(1, 1, 8).as_ref().encode_into(0, &mut buf);
    entry(2, 1, 8).as_ref().encode_into(0, &mut buf);
    let gap_at = buf.len() as u64;
    entry(4, 1, 8).as_ref().encode_into(0, &mut buf);
    buf.resize(SEG as usize, 0);
    let path = dir.join(segment_file_name(0, 1));
    fs::write(&path, &buf).unwrap();
    match Wal::open(&dir, opts(backend, SEG)) {
        Err(e @ WalError::Gap { .. }) => {
            let WalError::Gap {
                path: p,
                offset,
                expected,
                found,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(p, &path);
            assert_eq!((*offset, *expected, *found), (gap_at, 3, 4));
            assert!(e.to_string().contains(&format!("byte offset {gap_at}")));
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("an index gap went unnoticed"),
    }
}

fn leftover_temp_files_and_an_empty_last_segment_are_cleaned_up(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let built = build_log(&dir, backend, SEG, 2);
    let d = built.durable;
    // A crash while preparing a segment, and one right after installing the
    // next segment, before its first batch was written. (The planted temp file
    // has a name the new log's own preparation thread does not use first.)
    fs::write(dir.join("7.tmp"), vec![0u8; 100]).unwrap();
    let header = SegmentHeader {
        seq: d.segment + 1,
        first_index: d.last_index + 1,
        prev_end: d.offset,
        batch: d.batch + 1,
        segment_size: SEG,
    };
    let mut seg = header.encode().to_vec();
    seg.resize(SEG as usize, 0);
    let empty = dir.join(segment_file_name(header.seq, header.first_index));
    fs::write(&empty, &seg).unwrap();

    let wal = Wal::open(&dir, opts(backend, SEG)).unwrap();
    let r = wal.recovery_report();
    assert_eq!(r.removed_temp_files, vec![dir.join("7.tmp")]);
    assert_eq!(r.removed_empty_segment.as_deref(), Some(empty.as_path()));
    assert!(!dir.join("7.tmp").exists() && !empty.exists());
    let model = built.model(|_, _| true);
    assert_eq!(wal.read_from(1).unwrap().entries, model.from(1));
    // Appending continues the log, rotating again when needed.
    for i in 1..=100 {
        wal.append(vec![entry(model.last + i, 3, 100)]).unwrap();
    }
    drop(wal);
    let wal = Wal::open(&dir, opts(backend, SEG)).unwrap();
    assert_eq!(wal.last_index(), model.last + 100);
    assert!(inspect(&dir).unwrap().verdict.is_sound());
}
