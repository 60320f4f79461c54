//! The write + fdatasync step, behind two interchangeable backends.
//!
//! * `io_uring` (Linux): one `Write` submission linked (`IO_LINK`) to one
//!   `Fsync(DATASYNC)` submission, handed to the kernel with a single
//!   `io_uring_enter` that also waits for both completions.
//! * `pwrite`: `pwrite` then `fdatasync`, everywhere.
//!
//! Both return only after the data is on stable storage; neither is ever asked to
//! acknowledge anything before that.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Which backend performs the write + fdatasync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    IoUring,
    Pwrite,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::IoUring => "io_uring",
            BackendKind::Pwrite => "pwrite",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend asked for in [`crate::WalOptions`]. The backend actually in use
/// is [`crate::Wal::backend`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// The backend measured faster on cairn's target machines (pwrite; see
    /// docs/benchmarks.md), falling back to pwrite if it were unavailable.
    #[default]
    Auto,
    /// io_uring where the kernel offers it; pwrite + fdatasync, chosen at
    /// runtime with a warning in the log, where it does not.
    IoUring,
    /// pwrite + fdatasync.
    Pwrite,
}

/// Setting this environment variable (to anything) makes io_uring unavailable
/// to the WAL, e.g. on a kernel where it is known to misbehave.
pub const DISABLE_IO_URING_ENV: &str = "CAIRN_WAL_DISABLE_IO_URING";

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(BackendChoice::IoUring),
            "pwrite" | "sync" => Ok(BackendChoice::Pwrite),
            _ => Err(format!(
                "unknown WAL backend {s:?} (auto, io_uring, pwrite)"
            )),
        }
    }
}

/// The backend `Auto` resolves to when io_uring is available. Chosen by
/// measurement: see docs/benchmarks.md.
const AUTO_PREFERS: BackendKind = BackendKind::Pwrite;

/// Whether io_uring with write and fsync is usable here; the error says why not.
pub fn io_uring_support() -> Result<(), String> {
    io_uring_io().map(|_| ())
}

fn io_uring_io() -> Result<Io, String> {
    if std::env::var_os(DISABLE_IO_URING_ENV).is_some() {
        return Err(format!("disabled by {DISABLE_IO_URING_ENV}"));
    }
    #[cfg(target_os = "linux")]
    {
        uring::UringIo::new().map(|u| Io::Uring(Box::new(u)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("io_uring exists only on Linux".into())
    }
}

pub(crate) enum Io {
    #[cfg(target_os = "linux")]
    Uring(Box<uring::UringIo>),
    Pwrite,
}

impl Io {
    /// The backend for `choice`; falls back to pwrite when io_uring is wanted
    /// but unavailable, and says so in the log.
    pub fn new(choice: BackendChoice) -> Io {
        let want = match choice {
            BackendChoice::Auto => AUTO_PREFERS,
            BackendChoice::IoUring => BackendKind::IoUring,
            BackendChoice::Pwrite => BackendKind::Pwrite,
        };
        if want == BackendKind::Pwrite {
            return Io::Pwrite;
        }
        match io_uring_io() {
            Ok(io) => io,
            Err(why) => {
                tracing::warn!(reason = %why, "wal: io_uring unavailable; using pwrite + fdatasync");
                Io::Pwrite
            }
        }
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            #[cfg(target_os = "linux")]
            Io::Uring(_) => BackendKind::IoUring,
            Io::Pwrite => BackendKind::Pwrite,
        }
    }

    /// Writes `buf` at `offset` and makes it durable. Returns the time spent
    /// waiting for durability (for io_uring, the linked write + fsync).
    pub fn write_and_sync(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<Duration> {
        match self {
            #[cfg(target_os = "linux")]
            Io::Uring(u) => {
                let t = Instant::now();
                u.write_and_sync(file, offset, buf)?;
                Ok(t.elapsed())
            }
            Io::Pwrite => {
                file.write_all_at(buf, offset)?;
                let t = Instant::now();
                file.sync_data()?;
                Ok(t.elapsed())
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod uring {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;

    use io_uring::{IoUring, Probe, opcode, squeue, types};

    const WRITE: u64 = 1;
    const SYNC: u64 = 2;

    pub struct UringIo {
        ring: IoUring,
    }

    impl UringIo {
        pub fn new() -> Result<Self, String> {
            let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
            let mut probe = Probe::new();
            ring.submitter()
                .register_probe(&mut probe)
                .map_err(|e| format!("io_uring probe: {e}"))?;
            if !probe.is_supported(opcode::Write::CODE) || !probe.is_supported(opcode::Fsync::CODE)
            {
                return Err("kernel io_uring lacks write or fsync".into());
            }
            Ok(UringIo { ring })
        }

        fn wait(&mut self, want: usize) -> io::Result<()> {
            loop {
                match self.ring.submit_and_wait(want) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }

        pub fn write_and_sync(
            &mut self,
            file: &File,
            mut offset: u64,
            mut buf: &[u8],
        ) -> io::Result<()> {
            let fd = types::Fd(file.as_raw_fd());
            loop {
                let len = buf.len().min(1 << 30) as u32;
                let write = opcode::Write::new(fd, buf.as_ptr(), len)
                    .offset(offset)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(WRITE);
                let sync = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(SYNC);
                {
                    let mut sq = self.ring.submission();
                    // SAFETY: the write SQE points into `buf` and the fd of
                    // `file`; both stay borrowed, unmoved and open until both
                    // completions have been reaped below, before this function
                    // returns or loops. The ring is drained on every call, so
                    // the queue has room for the two entries.
                    unsafe {
                        sq.push(&write)
                            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                        sq.push(&sync)
                            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                    }
                }
                self.wait(2)?;
                let (mut wres, mut sres) = (None, None);
                loop {
                    for cqe in self.ring.completion() {
                        match cqe.user_data() {
                            WRITE => wres = Some(cqe.result()),
                            SYNC => sres = Some(cqe.result()),
                            _ => {}
                        }
                    }
                    if wres.is_some() && sres.is_some() {
                        break;
                    }
                    self.wait(1)?;
                }
                let (w, s) = (wres.expect("reaped"), sres.expect("reaped"));
                if w < 0 {
                    return Err(io::Error::from_raw_os_error(-w));
                }
                let n = w as usize;
                if n == buf.len() {
                    if s < 0 {
                        return Err(io::Error::from_raw_os_error(-s));
                    }
                    return Ok(());
                }
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                // A short write breaks the link and cancels the fsync: go again
                // with the rest.
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
}
