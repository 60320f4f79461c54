//! Coalescing a connection's writes under load.
//!
//! When a batch of proposals is applied, each call's task answers and wakes
//! its connection's task, which would write and send that one answer at
//! once: one `writev` (and one wake-up of the client) per response. With
//! [`CoalesceWrites`] between hyper and the socket, a write that finds other
//! tasks ready to run in the runtime steps back once: the connection's task
//! yields, goes to the back of its worker's queue behind those tasks (the
//! other answers among them), and writes everything they added in one go
//! when it runs again. A write that finds the runtime idle goes out at once,
//! so a lone client pays nothing for it.
//!
//! Invariants: a write is held back at most once in a row, so every write
//! is made at the latest on the connection task's next turn; nothing is
//! buffered here (h2 keeps its frames until the write succeeds), and reads
//! pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::runtime::RuntimeMetrics;

pub struct CoalesceWrites<IO> {
    io: IO,
    /// The runtime's queues; `None` outside a tokio runtime (tests).
    metrics: Option<RuntimeMetrics>,
    /// The last write was held back: the next one goes out.
    held: bool,
}

impl<IO> CoalesceWrites<IO> {
    pub fn new(io: IO) -> Self {
        CoalesceWrites {
            io,
            metrics: tokio::runtime::Handle::try_current()
                .ok()
                .map(|h| h.metrics()),
            held: false,
        }
    }

    /// Whether this write should wait for the tasks ready to run; if so the
    /// task is woken again, behind them.
    fn hold(&mut self, cx: &mut Context<'_>) -> bool {
        if std::mem::take(&mut self.held) {
            return false;
        }
        let Some(m) = &self.metrics else {
            return false;
        };
        if !others_ready(m) {
            return false;
        }
        self.held = true;
        cx.waker().wake_by_ref();
        true
    }
}

/// Whether any task waits in the runtime's queues.
fn others_ready(m: &RuntimeMetrics) -> bool {
    if m.global_queue_depth() > 0 {
        return true;
    }
    #[cfg(tokio_unstable)]
    for w in 0..m.num_workers() {
        if m.worker_local_queue_depth(w) > 0 {
            return true;
        }
    }
    false
}

impl<IO: AsyncRead + Unpin> AsyncRead for CoalesceWrites<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CoalesceWrites<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.hold(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut me.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.hold(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut me.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::task::{Wake, Waker};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    fn write(w: &mut CoalesceWrites<Vec<u8>>, waker: &Waker, b: &[u8]) -> Poll<usize> {
        let mut cx = Context::from_waker(waker);
        Pin::new(w).poll_write(&mut cx, b).map(|r| r.unwrap())
    }

    /// A runtime with one worker, busy running the test: a task spawned from
    /// outside waits in the global queue until the test lets go.
    fn on_one_worker(test: impl FnOnce() + Send + 'static) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        rt.block_on(async move { tokio::spawn(async move { test() }).await.unwrap() });
    }

    #[test]
    fn a_write_waits_once_behind_tasks_ready_to_run() {
        on_one_worker(|| {
            let h = tokio::runtime::Handle::current();
            let ran = Arc::new(AtomicUsize::new(0));
            let r = ran.clone();
            std::thread::spawn(move || {
                h.spawn(async move {
                    r.fetch_add(1, SeqCst);
                });
            })
            .join()
            .unwrap();
            let count = Arc::new(Count::default());
            let waker = Waker::from(count.clone());
            let mut w = CoalesceWrites::new(Vec::new());
            assert!(write(&mut w, &waker, b"ab").is_pending());
            assert_eq!(
                count.0.load(SeqCst),
                1,
                "held back, the task is woken again"
            );
            assert!(w.io.is_empty());
            assert_eq!(
                write(&mut w, &waker, b"ab"),
                Poll::Ready(2),
                "never twice in a row"
            );
            assert_eq!(w.io, b"ab");
            assert_eq!(ran.load(SeqCst), 0, "the other task is still queued");
            assert!(
                write(&mut w, &waker, b"c").is_pending(),
                "and the next write waits again"
            );
            assert_eq!(count.0.load(SeqCst), 2);
        });
    }

    #[test]
    fn a_write_goes_at_once_when_nothing_else_is_ready() {
        on_one_worker(|| {
            let count = Arc::new(Count::default());
            let waker = Waker::from(count.clone());
            let mut w = CoalesceWrites::new(Vec::new());
            assert_eq!(write(&mut w, &waker, b"abc"), Poll::Ready(3));
            assert_eq!(write(&mut w, &waker, b"d"), Poll::Ready(1));
            assert_eq!(w.io, b"abcd");
            assert_eq!(count.0.load(SeqCst), 0);
        });
        // Outside a runtime: nothing to wait for.
        let waker = Waker::from(Arc::new(Count::default()));
        let mut w = CoalesceWrites::new(Vec::new());
        assert_eq!(write(&mut w, &waker, b"x"), Poll::Ready(1));
    }
}
