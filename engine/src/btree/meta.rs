//! The two meta pages.
//!
//! Pages 0 and 1 each begin with a 64-byte meta record; transaction `t` writes
//! its meta into page `t % 2`, so the previous transaction's meta survives a
//! torn write of the new one.
//!
//! ```text
//!  0          8        12          16     24     32         40     48           60       64
//!  +----------+--------+-----------+------+------+----------+------+------------+--------+
//!  | CAIRNDB\0| version| page_size | txid | root | freelist | hwm  | reserved   | crc32c |
//!  | magic    | u32    | u32       | u64  | u64  | u64      | u64  | 12 bytes=0 | u32    |
//!  +----------+--------+-----------+------+------+----------+------+------------+--------+
//! ```
//!
//! * `root`: root page of the bucket directory (0 when there is no bucket).
//! * `freelist`: first page of the free-list run written by this transaction.
//! * `hwm` (high-water mark): pages `[0, hwm)` are in use or free; pages from
//!   `hwm` on are beyond the database (the file may extend past them).
//! * `crc32c` covers bytes 0..60. Open picks the valid meta with the highest
//!   txid; a torn meta fails its checksum and is ignored.

use bytemuck::{Pod, Zeroable};

use super::page::{Le32, Le64, PageId};

pub const META_LEN: usize = 64;
pub const MAGIC: &[u8; 8] = b"CAIRNDB\0";
pub const VERSION: u32 = 1;

#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct MetaRaw {
    magic: [u8; 8],
    version: Le32,
    page_size: Le32,
    txid: Le64,
    root: Le64,
    freelist: Le64,
    hwm: Le64,
    reserved: [u8; 12],
    checksum: Le32,
}

const _: () = assert!(size_of::<MetaRaw>() == META_LEN);

/// A committed transaction's view of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub txid: u64,
    pub root: PageId,
    pub freelist: PageId,
    pub hwm: u64,
}

impl Meta {
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut raw = MetaRaw::zeroed();
        raw.magic = *MAGIC;
        raw.version = Le32::new(VERSION);
        raw.page_size = Le32::new(self.page_size);
        raw.txid = Le64::new(self.txid);
        raw.root = Le64::new(self.root);
        raw.freelist = Le64::new(self.freelist);
        raw.hwm = Le64::new(self.hwm);
        let mut out = [0u8; META_LEN];
        out.copy_from_slice(bytemuck::bytes_of(&raw));
        let crc = crc32c::crc32c(&out[..60]);
        out[60..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a meta record; `Err` says why it is not valid.
    pub fn decode(b: &[u8]) -> Result<Meta, String> {
        if b.len() < META_LEN {
            return Err("short meta".into());
        }
        let raw: &MetaRaw = bytemuck::from_bytes(&b[..META_LEN]);
        if &raw.magic != MAGIC {
            return Err("not a cairn database (bad magic)".into());
        }
        let crc = crc32c::crc32c(&b[..60]);
        if crc != raw.checksum.get() {
            return Err(format!(
                "meta crc32c mismatch (stored {:#010x}, computed {crc:#010x})",
                raw.checksum.get()
            ));
        }
        if raw.version.get() != VERSION {
            return Err(format!("unsupported format version {}", raw.version.get()));
        }
        let ps = raw.page_size.get();
        if !valid_page_size(ps) {
            return Err(format!("invalid page size {ps}"));
        }
        Ok(Meta {
            page_size: ps,
            txid: raw.txid.get(),
            root: raw.root.get(),
            freelist: raw.freelist.get(),
            hwm: raw.hwm.get(),
        })
    }
}

pub fn valid_page_size(ps: u32) -> bool {
    ps.is_power_of_two() && (1024..=65536).contains(&ps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metas_round_trip_and_any_flipped_byte_is_rejected() {
        let m = Meta {
            page_size: 4096,
            txid: 42,
            root: 17,
            freelist: 9,
            hwm: 100,
        };
        let b = m.encode();
        assert_eq!(Meta::decode(&b), Ok(m));
        for i in 0..META_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(Meta::decode(&c).is_err(), "flip at {i} accepted");
        }
    }
}
