//! Group commit: many concurrent appenders, one write and one fdatasync per
//! batch, nothing acknowledged before it is durable.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use cairn_wal::{AppendInfo, BackendChoice, Record, Wal, WalError, WalOptions};
use common::*;

backend_tests!(
    sixty_four_thread_appenders_find_every_acknowledged_record_in_order_after_reopen,
    sixty_four_async_appenders_find_every_acknowledged_record_in_order_after_reopen,
    threads_and_tasks_appending_together_share_batches,
    batches_respect_the_record_and_byte_limits,
    a_failed_write_poisons_the_log_and_acknowledges_nothing_after_it,
    a_dropped_ticket_is_still_written_in_order,
);

const APPENDERS: u64 = 64;
const PER_APPENDER: u64 = 60;

/// The payload says who wrote it and its sequence number.
fn tagged(appender: u64, seq: u64) -> Vec<u8> {
    let mut p = format!("appender={appender} seq={seq};").into_bytes();
    p.resize(200, b'.');
    p
}

fn parse(data: &[u8]) -> (u64, u64) {
    let s = std::str::from_utf8(data).unwrap();
    let s = s.trim_end_matches('.').trim_end_matches(';');
    let (a, q) = s.split_once(' ').unwrap();
    (
        a.strip_prefix("appender=").unwrap().parse().unwrap(),
        q.strip_prefix("seq=").unwrap().parse().unwrap(),
    )
}

/// Index allocation and submission happen under one lock, so index order is
/// submission order; waiting happens outside it, concurrently.
struct Appender {
    wal: Wal,
    next: Mutex<u64>,
}

impl Appender {
    fn submit(&self, appender: u64, seq: u64) -> (u64, cairn_wal::Ticket) {
        let mut next = self.next.lock().unwrap();
        let index = *next;
        let t = self
            .wal
            .submit(vec![Record::entry(index, 1, tagged(appender, seq))])
            .unwrap();
        *next += 1;
        (index, t)
    }
}

/// Reopens the log and checks that every acknowledged (index, appender, seq) is
/// there, that indexes are contiguous, and that each appender's records appear
/// in the order it wrote them.
fn check_after_reopen(dir: &std::path::Path, backend: BackendChoice, acked: &[(u64, u64, u64)]) {
    let wal = Wal::open(dir, opts(backend, 1 << 20)).unwrap();
    let entries = wal.read_from(1).unwrap().entries;
    assert_eq!(entries.len(), acked.len());
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.index, i as u64 + 1, "indexes are contiguous");
    }
    for &(index, appender, seq) in acked {
        let e = &entries[index as usize - 1];
        assert_eq!(parse(&e.data), (appender, seq), "record at index {index}");
    }
    let mut last_seq = vec![None::<u64>; APPENDERS as usize];
    for e in &entries {
        let (a, s) = parse(&e.data);
        assert!(
            last_seq[a as usize].is_none_or(|p| p < s),
            "appender {a} out of order"
        );
        last_seq[a as usize] = Some(s);
    }
}

fn assert_durable_covers(wal: &Wal, info: &AppendInfo) {
    let d = wal.durable();
    assert!(
        d.segment > info.segment || (d.segment == info.segment && d.offset >= info.end_offset),
        "acknowledged {info:?} beyond the durable position {d:?}"
    );
}

type Acked = Vec<(u64, u64, u64)>;

fn new_log(dir: &std::path::Path, backend: BackendChoice) -> Arc<Appender> {
    let wal = Wal::create(dir, opts(backend, 1 << 20), b"m").unwrap();
    assert_eq!(wal.backend(), expected_kind(backend));
    Arc::new(Appender {
        wal,
        next: Mutex::new(1),
    })
}

/// One thread per appender id; each returns what it was told is durable.
fn spawn_threads(
    app: &Arc<Appender>,
    ids: std::ops::Range<u64>,
) -> Vec<std::thread::JoinHandle<Acked>> {
    ids.map(|a| {
        let app = app.clone();
        std::thread::spawn(move || {
            (0..PER_APPENDER)
                .map(|seq| {
                    let (index, ticket) = app.submit(a, seq);
                    let info = ticket.wait().unwrap();
                    assert!(info.last_index >= index);
                    assert_durable_covers(&app.wal, &info);
                    (index, a, seq)
                })
                .collect()
        })
    })
    .collect()
}

/// One async task per appender id, on a two-worker runtime.
async fn run_tasks(app: &Arc<Appender>, ids: std::ops::Range<u64>) -> Acked {
    let tasks: Vec<_> = ids
        .map(|a| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for seq in 0..PER_APPENDER {
                    let (index, ticket) = app.submit(a, seq);
                    let info = ticket.await.unwrap();
                    assert_durable_covers(&app.wal, &info);
                    mine.push((index, a, seq));
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// Every record made durable, and far fewer fdatasyncs than appends; then the
/// reopened log holds exactly what was acknowledged.
fn finish(app: Arc<Appender>, dir: &std::path::Path, backend: BackendChoice, acked: Acked) {
    let m = app.wal.metrics();
    assert_eq!(m.records, APPENDERS * PER_APPENDER);
    assert_eq!(acked.len() as u64, APPENDERS * PER_APPENDER);
    assert!(
        m.fsyncs * 4 < m.records,
        "{} fsyncs for {} appends",
        m.fsyncs,
        m.records
    );
    assert_eq!(
        m.fsync_latency.count(),
        m.batches,
        "one data fdatasync per batch"
    );
    drop(Arc::into_inner(app).unwrap());
    check_after_reopen(dir, backend, &acked);
}

fn sixty_four_thread_appenders_find_every_acknowledged_record_in_order_after_reopen(
    backend: BackendChoice,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let app = new_log(&dir, backend);
    let acked = spawn_threads(&app, 0..APPENDERS)
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    finish(app, &dir, backend, acked);
}

fn sixty_four_async_appenders_find_every_acknowledged_record_in_order_after_reopen(
    backend: BackendChoice,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let app = new_log(&dir, backend);
    let acked = runtime().block_on(run_tasks(&app, 0..APPENDERS));
    finish(app, &dir, backend, acked);
}

fn threads_and_tasks_appending_together_share_batches(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let app = new_log(&dir, backend);
    let threads = spawn_threads(&app, 0..APPENDERS / 2);
    let mut acked = runtime().block_on(run_tasks(&app, APPENDERS / 2..APPENDERS));
    acked.extend(threads.into_iter().flat_map(|t| t.join().unwrap()));
    finish(app, &dir, backend, acked);
}

fn batches_respect_the_record_and_byte_limits(backend: BackendChoice) {
    for (max_records, max_bytes, per_batch) in [(4, usize::MAX, 4), (usize::MAX, 900, 3)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let o = WalOptions {
            max_batch_records: max_records,
            max_batch_bytes: max_bytes,
            ..opts(backend, 1 << 20)
        };
        let wal = Wal::create(&dir, o, b"m").unwrap();
        let app = Arc::new(Appender {
            wal,
            next: Mutex::new(1),
        });
        let threads: Vec<_> = (0..16)
            .map(|a| {
                let app = app.clone();
                std::thread::spawn(move || {
                    for seq in 0..40 {
                        app.submit(a, seq).1.wait().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Each record here frames to 232 bytes, so 900 bytes hold three.
        assert_eq!(Record::entry(1, 1, tagged(0, 0)).frame_len(), 232);
        let m = app.wal.metrics();
        assert_eq!(m.records, 16 * 40);
        assert!(
            m.batches * per_batch >= m.records,
            "{} batches for {} records with at most {per_batch} per batch",
            m.batches,
            m.records
        );
        assert!(m.batches < m.records, "limits should still allow batching");
    }
}

const CHILD_ENV: &str = "CAIRN_WAL_TEST_CHILD_DIR";

/// In a child process whose file-size limit is below the segment size, appends
/// succeed until a write crosses the limit; that batch fails, and from then on
/// every append fails. Reopened without the limit, the log holds exactly the
/// acknowledged records, and maybe a prefix of the failed batch.
fn a_failed_write_poisons_the_log_and_acknowledges_nothing_after_it(backend: BackendChoice) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let wal = Wal::open(&dir, opts(backend, 64 << 10)).unwrap();
        let mut acked = 0u64;
        let failure = loop {
            match wal.append(vec![entry(acked + 1, 1, 1000)]) {
                Ok(_) => acked += 1,
                Err(e) => break e,
            }
            assert!(acked < 1000, "the file-size limit never bit");
        };
        assert!(matches!(failure, WalError::Io { .. }), "{failure}");
        match wal.append(vec![entry(acked + 1, 1, 10)]) {
            Err(WalError::Poisoned(_)) => {}
            other => panic!("append after a failed write: {other:?}"),
        }
        println!("ACKED={acked}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    drop(Wal::create(&dir, opts(backend, 64 << 10), b"m").unwrap());
    let exe = std::env::current_exe().unwrap();
    let name = format!(
        "{}::a_failed_write_poisons_the_log_and_acknowledges_nothing_after_it",
        module_for(backend)
    );
    // 32 KiB: half a segment. SIGXFSZ is ignored so the write fails with EFBIG.
    let out = Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 32; exec \"$0\" \"$@\""])
        .arg(&exe)
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked: u64 = stdout
        .split_once("ACKED=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| {
            panic!(
                "child did not report:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .trim()
        .parse()
        .unwrap();
    assert!(acked > 10, "only {acked} appends fit below the limit");
    let wal = Wal::open(&dir, opts(backend, 64 << 10)).unwrap();
    let entries = wal.read_from(1).unwrap().entries;
    assert!(entries.len() as u64 >= acked && entries.len() as u64 <= acked + 1);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.data, payload(i as u64 + 1, 1, 1000));
    }
}

fn a_dropped_ticket_is_still_written_in_order(backend: BackendChoice) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::create(&dir, opts(backend, 1 << 20), b"m").unwrap();
    drop(wal.submit(vec![entry(1, 1, 10)]).unwrap());
    let t2 = wal.submit(vec![entry(2, 1, 10)]).unwrap();
    let info = t2.wait().unwrap();
    assert_eq!(info.last_index, 2);
    // Dropped alone, with nobody else waiting, it is still written.
    drop(wal.submit(vec![entry(3, 1, 10)]).unwrap());
    drop(wal);
    let wal = Wal::open(&dir, opts(backend, 1 << 20)).unwrap();
    assert_eq!(indexes(&wal, 1), vec![1, 2, 3]);
}
