//! Test support shared by several crates' integration tests, included with
//! `#[path]` (it is not a crate: nothing ships it).

use std::net::TcpListener;

/// A port nothing listens on right now, below the kernel's ephemeral range
/// (32768 and up here): a port from that range can be taken, between the
/// probe and a member's bind, as the local end of some outgoing connection
/// (and stay taken as long as that connection lives). Each call hands out a
/// different port; the start depends on the process id, so test programs
/// running side by side tend to stay apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 15_000;
    const SPAN: u32 = 17_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left below the ephemeral range");
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
