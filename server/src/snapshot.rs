//! Raft snapshots of the server's state: the whole database file, as a read
//! snapshot sees it, streamed to a follower; and taking one in.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use cairn_engine::mvcc::{Store, StoreOptions, schema};
use cairn_raftnode::SnapshotSource;

use crate::state::StoreCell;

/// Serves raft snapshots from the current store.
pub struct StoreSnapshots(pub StoreCell);

/// A `Read` over chunks a copying thread sends.
struct ChunkReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = c;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

struct ChunkSender {
    tx: SyncSender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl Write for ChunkSender {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let c = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .send(Ok(c))
                .map_err(|_| std::io::Error::other("snapshot reader gone"))?;
        }
        Ok(())
    }
}

impl SnapshotSource for StoreSnapshots {
    fn open(&self) -> std::io::Result<(u64, Box<dyn Read + Send>)> {
        let store = self.0.get();
        // Everything applied so far goes into the tree first.
        store.flush().map_err(std::io::Error::other)?;
        let db = store.db().clone();
        let rt = db.begin_read();
        let meta = rt
            .bucket(schema::META)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("no meta bucket"))?;
        let index = match meta
            .get(schema::CONSISTENT_INDEX)
            .map_err(std::io::Error::other)?
        {
            Some(v) => schema::decode_u64("consistent_index", v).map_err(std::io::Error::other)?,
            None => 0,
        };
        let (tx, rx) = sync_channel(4);
        std::thread::Builder::new()
            .name("cairn-snapshot".into())
            .spawn(move || {
                let mut w = ChunkSender {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(CHUNK),
                };
                if let Err(e) = rt
                    .copy_to(&mut w)
                    .map_err(std::io::Error::other)
                    .and_then(|_| w.flush())
                {
                    let _ = tx.send(Err(e));
                }
            })?;
        Ok((
            index,
            Box::new(ChunkReader {
                rx,
                cur: Vec::new(),
                at: 0,
            }),
        ))
    }
}

/// Closes `old`, moves the received file into the database's place and
/// opens it: the rename makes the switch atomic, so a crash leaves either
/// database whole (and the raft node restores the file again if needed).
pub fn replace_store(
    old: Store,
    file: &Path,
    db_path: &PathBuf,
    opts: StoreOptions,
) -> Result<Store, String> {
    // Check the file is a database before giving up the current one.
    cairn_engine::btree::Db::open(file, cairn_engine::btree::Options::default()).map_err(|e| {
        format!(
            "received snapshot {} is not a database: {e}",
            file.display()
        )
    })?;
    old.close().map_err(|e| format!("closing the store: {e}"))?;
    // Keep the received file (the raft node removes it once passed): copy,
    // then rename the copy into place.
    let tmp = db_path.with_extension("restore");
    std::fs::copy(file, &tmp).map_err(|e| format!("copying {}: {e}", file.display()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, db_path)
        .map_err(|e| format!("renaming into {}: {e}", db_path.display()))?;
    if let Some(dir) = db_path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Store::open(db_path, opts).map_err(|e| format!("opening the restored store: {e}"))
}
