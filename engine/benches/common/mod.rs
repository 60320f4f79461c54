//! What the engine's benches share: deterministic random keys and the
//! scratch directory.
#![allow(dead_code)]

use std::path::PathBuf;

/// splitmix64: cheap, deterministic, good enough to spread keys.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// 16 bytes that look random but are a function of `i`.
pub fn key(i: u64) -> [u8; 16] {
    let mut r = Rng(i);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&r.next().to_be_bytes());
    k[8..].copy_from_slice(&r.next().to_be_bytes());
    k
}

/// A scratch directory in `CAIRN_BENCH_DIR`, or the system temp dir.
pub fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(PathBuf::from(d)).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}
