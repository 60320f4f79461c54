//! A plain-text progress bar on stderr, redrawn four times a second, drawn
//! only when stderr is a terminal (never into logs or captured output).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::spec::Stop;

pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing `label`'s progress: requests issued (the ticket
    /// counter) against the total, or time against the duration.
    pub fn start(label: &str, stop: Stop, issued: Arc<AtomicU64>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { task: None };
        }
        let label = label.to_string();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let every = Duration::from_millis(250);
            let mut tick = tokio::time::interval_at((start + every).into(), every);
            loop {
                tick.tick().await;
                let n = issued.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                let (done, of) = match stop {
                    Stop::Total(total) => (n.min(total) as f64, total as f64),
                    Stop::Duration(d) => (secs.min(d.as_secs_f64()), d.as_secs_f64()),
                };
                eprint!("\r{}", line(&label, done / of.max(1e-9), n, secs));
                let _ = std::io::stderr().flush();
            }
        });
        Progress { task: Some(task) }
    }

    /// Stops drawing and clears the line.
    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

/// `put [=========>          ]  45%  4500 req  7,812 req/s`
fn line(label: &str, fraction: f64, issued: u64, secs: f64) -> String {
    const WIDTH: usize = 30;
    let fraction = fraction.clamp(0.0, 1.0);
    let filled = (fraction * WIDTH as f64) as usize;
    let mut bar = "=".repeat(filled);
    if filled < WIDTH {
        bar.push('>');
        bar.push_str(&" ".repeat(WIDTH - filled - 1));
    }
    format!(
        "{label} [{bar}] {:>3.0}%  {issued} req  {:.0} req/s ",
        fraction * 100.0,
        issued as f64 / secs.max(1e-9)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bar_fills_with_the_fraction_done() {
        assert!(super::line("put", 0.5, 5, 1.0).starts_with("put [===============>"));
        assert!(super::line("put", 1.0, 10, 1.0).contains(&"=".repeat(30)));
    }
}
