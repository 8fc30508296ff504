//! A small progress bar on stderr.

use std::io::Write;
use std::time::Instant;

/// Redraws `label [#####.....] done/total  x.xx s/step` on one stderr line.
pub struct Progress {
    label: String,
    start: Instant,
}

impl Progress {
    /// Starts timing.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            start: Instant::now(),
        }
    }

    /// Draws the bar at `done` of `total`.
    pub fn update(&self, done: usize, total: usize) {
        let width = 30;
        let filled = done * width / total.max(1);
        let per = self.start.elapsed().as_secs_f64() / done.max(1) as f64;
        let eta = per * (total - done) as f64;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {done}/{total}  {per:.3} s/step  eta {eta:.0} s",
            self.label,
            "#".repeat(filled),
            ".".repeat(width - filled)
        );
        if done >= total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}
