//! Opening a store: the buckets it needs, and the key index rebuilt from
//! the `key` bucket with what the `meta` bucket records.

use super::*;

/// Creates the buckets a store needs, if any is missing.
pub(super) fn create_buckets(db: &Db) -> Result<()> {
    if db.stats().txid > 0 || db.begin_read().bucket(schema::KEY)?.is_some() {
        let rt = db.begin_read();
        let mut missing = false;
        for b in schema::BUCKETS {
            missing |= rt.bucket(b)?.is_none();
        }
        if !missing {
            return Ok(());
        }
    }
    let mut tx = db.begin_write()?;
    for b in schema::BUCKETS {
        tx.create_bucket_if_missing(b)?;
    }
    tx.commit()?;
    Ok(())
}

/// What the files hold when the store opens.
pub(super) struct Restored {
    pub(super) index: KeyIndex,
    pub(super) max_rev: i64,
    pub(super) applied: EntryId,
    pub(super) scheduled_compact: Option<i64>,
    pub(super) finished_compact: Option<i64>,
    pub(super) leases: Vec<(Vec<u8>, i64)>,
}

/// Reads the meta bucket and rebuilds the key index from the key bucket.
pub(super) fn restore(db: &Db) -> Result<Restored> {
    let rt = db.begin_read();
    let meta = rt
        .bucket(schema::META)?
        .ok_or_else(|| Error::Corrupt("no meta bucket".into()))?;
    let get_u64 = |k: &[u8], name: &str| -> Result<u64> {
        match meta.get(k)? {
            Some(v) => schema::decode_u64(name, v),
            None => Ok(0),
        }
    };
    let applied = EntryId {
        index: get_u64(schema::CONSISTENT_INDEX, "consistent_index")?,
        term: get_u64(schema::TERM, "term")?,
    };
    let compact = |k: &[u8], name: &str| -> Result<Option<i64>> {
        meta.get(k)?
            .map(|v| schema::decode_compact(name, v))
            .transpose()
    };
    let scheduled_compact = compact(schema::SCHEDULED_COMPACT, "scheduledCompactRev")?;
    let finished_compact = compact(schema::FINISHED_COMPACT, "finishedCompactRev")?;
    let kb = rt
        .bucket(schema::KEY)?
        .ok_or_else(|| Error::Corrupt("no key bucket".into()))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // One record per revision is the common case: reserving for the span of
    // revisions held spares the list's regrowth copies (capacity beyond what
    // is used is never touched: address space, not memory).
    let span = {
        let mut c = kb.cursor();
        let main = |e: Option<(&[u8], _)>| -> Result<i64> {
            e.map(|(k, _)| {
                RevisionKey::decode(k)
                    .map(|rk| rk.revision.main)
                    .map_err(|e| Error::Corrupt(e.to_string()))
            })
            .transpose()
            .map(|m| m.unwrap_or(0))
        };
        let (first, last) = (main(c.first()?)?, main(c.last()?)?);
        (last - first + 1).clamp(0, 1 << 22) as usize
    };
    let records = scan_records(&kb, span)?;
    let max_rev = records.last().map_or(1, |r| r.rev.main);
    let mut leases = Vec::new();
    let index = KeyIndex::rebuild(records, threads, |r| {
        if r.lease != 0 {
            leases.push((r.key.to_vec(), r.lease));
        }
    });
    Ok(Restored {
        index,
        max_rev,
        applied,
        scheduled_compact,
        finished_compact,
        leases,
    })
}

/// Every record of the `key` bucket, in revision order.
fn scan_records<'a>(kb: &Bucket<'a>, capacity: usize) -> Result<Vec<StoredRecord<'a>>> {
    let mut records = Vec::with_capacity(capacity);
    for item in kb.iter() {
        let (k, v) = item?;
        let rk = RevisionKey::decode(k).map_err(|e| Error::Corrupt(e.to_string()))?;
        let head = RecordHead::parse(v)
            .map_err(|e| Error::Corrupt(format!("record at revision {}: {e}", rk.revision)))?;
        if head.key.is_empty() {
            return Err(Error::Corrupt(format!(
                "record at revision {} has no key",
                rk.revision
            )));
        }
        records.push(StoredRecord::new(
            head.key,
            rk.revision,
            rk.tombstone,
            head.create_revision,
            head.version,
            if rk.tombstone { 0 } else { head.lease },
        ));
    }
    Ok(records)
}
