//! Storage knobs that etcd has no flags for, from `CAIRN_*` environment
//! variables.
//!
//! cairn takes exactly etcd's flags (an unknown flag is an error, as in
//! etcd), so the knobs of cairn's own storage stack come from the
//! environment. They are read once, at startup, and logged; an invalid value
//! stops the server before it touches the data directory. An empty variable
//! counts as unset, as etcd treats an empty `ETCD_*` variable.
//!
//! | variable | what | default |
//! |---|---|---|
//! | `CAIRN_WAL_BACKEND` | `auto`, `io_uring` or `pwrite` | `auto` (pwrite) |
//! | `CAIRN_WAL_MAX_BATCH_RECORDS` | most records per WAL write + fdatasync | 16384 |
//! | `CAIRN_WAL_MAX_BATCH_BYTES` | most bytes per WAL write + fdatasync | 4194304 |
//! | `CAIRN_BACKEND_PAGE_SIZE` | page size of a *new* database file | 4096 |
//!
//! etcd's own `--backend-batch-interval` and `--backend-batch-limit` flags
//! tune the backend's batched commits.

use anyhow::bail;
use cairn_engine::btree::{self, meta::valid_page_size};
use cairn_wal::{BackendChoice, WalOptions};

pub const WAL_BACKEND: &str = "CAIRN_WAL_BACKEND";
pub const WAL_MAX_BATCH_RECORDS: &str = "CAIRN_WAL_MAX_BATCH_RECORDS";
pub const WAL_MAX_BATCH_BYTES: &str = "CAIRN_WAL_MAX_BATCH_BYTES";
pub const BACKEND_PAGE_SIZE: &str = "CAIRN_BACKEND_PAGE_SIZE";

/// The knobs as set; `None` leaves the library's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    pub wal_backend: Option<BackendChoice>,
    pub wal_max_batch_records: Option<usize>,
    pub wal_max_batch_bytes: Option<usize>,
    /// Applies when the database file is created; an existing file keeps
    /// the page size it was created with (it is recorded in its meta pages).
    pub backend_page_size: Option<u32>,
}

impl Tuning {
    /// Reads the process environment.
    pub fn from_env() -> anyhow::Result<Tuning> {
        Tuning::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `get` (empty values count as unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Tuning> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let wal_backend = match var(WAL_BACKEND) {
            None => None,
            Some(v) => match v.parse::<BackendChoice>() {
                Ok(b) => Some(b),
                Err(e) => bail!("invalid {WAL_BACKEND}={v:?}: {e}"),
            },
        };
        let positive = |name: &str| -> anyhow::Result<Option<usize>> {
            let Some(v) = var(name) else { return Ok(None) };
            match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => bail!("invalid {name}={v:?}: not a positive integer"),
            }
        };
        let wal_max_batch_records = positive(WAL_MAX_BATCH_RECORDS)?;
        let wal_max_batch_bytes = positive(WAL_MAX_BATCH_BYTES)?;
        let backend_page_size = match var(BACKEND_PAGE_SIZE) {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(ps) if valid_page_size(ps) => Some(ps),
                _ => bail!(
                    "invalid {BACKEND_PAGE_SIZE}={v:?}: not a power of two from 1024 to 65536"
                ),
            },
        };
        Ok(Tuning {
            wal_backend,
            wal_max_batch_records,
            wal_max_batch_bytes,
            backend_page_size,
        })
    }

    pub fn wal_options(&self) -> WalOptions {
        let d = WalOptions::default();
        WalOptions {
            backend: self.wal_backend.unwrap_or(d.backend),
            max_batch_records: self.wal_max_batch_records.unwrap_or(d.max_batch_records),
            max_batch_bytes: self.wal_max_batch_bytes.unwrap_or(d.max_batch_bytes),
            ..d
        }
    }

    pub fn db_options(&self) -> btree::Options {
        let d = btree::Options::default();
        btree::Options {
            page_size: self.backend_page_size.unwrap_or(d.page_size),
            ..d
        }
    }

    /// One log line with the values in effect and the variables that set
    /// them.
    pub fn log(&self) {
        let wal = self.wal_options();
        let set: Vec<&str> = [
            (WAL_BACKEND, self.wal_backend.is_some()),
            (WAL_MAX_BATCH_RECORDS, self.wal_max_batch_records.is_some()),
            (WAL_MAX_BATCH_BYTES, self.wal_max_batch_bytes.is_some()),
            (BACKEND_PAGE_SIZE, self.backend_page_size.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, is_set)| is_set.then_some(name))
        .collect();
        tracing::info!(
            wal_backend = ?wal.backend,
            wal_max_batch_records = wal.max_batch_records,
            wal_max_batch_bytes = wal.max_batch_bytes,
            backend_page_size = self.db_options().page_size,
            set_by_environment = ?set,
            "storage tuning"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> anyhow::Result<Tuning> {
        Tuning::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn no_variables_leave_every_library_default() {
        let t = read(&[]).unwrap();
        assert_eq!(t, Tuning::default());
        let (w, d) = (t.wal_options(), WalOptions::default());
        assert_eq!(
            (w.backend, w.max_batch_records, w.max_batch_bytes),
            (d.backend, d.max_batch_records, d.max_batch_bytes)
        );
        assert_eq!(
            t.db_options().page_size,
            btree::Options::default().page_size
        );
    }

    #[test]
    fn each_variable_sets_its_knob_and_empty_ones_count_as_unset() {
        let t = read(&[
            (WAL_BACKEND, "io_uring"),
            (WAL_MAX_BATCH_RECORDS, "64"),
            (WAL_MAX_BATCH_BYTES, "1048576"),
            (BACKEND_PAGE_SIZE, "16384"),
        ])
        .unwrap();
        let w = t.wal_options();
        assert_eq!(
            (w.backend, w.max_batch_records, w.max_batch_bytes),
            (BackendChoice::IoUring, 64, 1 << 20)
        );
        assert_eq!(t.db_options().page_size, 16384);
        assert_eq!(read(&[(WAL_BACKEND, "")]).unwrap(), Tuning::default());
    }

    #[test]
    fn out_of_range_values_are_refused_naming_the_variable() {
        for (var, value, why) in [
            (
                WAL_BACKEND,
                "IO_URING",
                "unknown WAL backend \"IO_URING\" (auto, io_uring, pwrite)",
            ),
            (WAL_MAX_BATCH_RECORDS, "-1", "not a positive integer"),
            (WAL_MAX_BATCH_BYTES, "4MiB", "not a positive integer"),
            (
                BACKEND_PAGE_SIZE,
                "512",
                "not a power of two from 1024 to 65536",
            ),
            (
                BACKEND_PAGE_SIZE,
                "131072",
                "not a power of two from 1024 to 65536",
            ),
        ] {
            let err = read(&[(var, value)]).unwrap_err();
            assert_eq!(err.to_string(), format!("invalid {var}={value:?}: {why}"));
        }
    }
}
