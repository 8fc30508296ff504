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

/// A bar per file for work reported as `(file, done, total)` (checkpoint conversion).
#[derive(Default)]
pub struct FileProgress {
    current: Option<(std::path::PathBuf, Progress)>,
}

impl FileProgress {
    /// Names `file` when it changes, then draws its bar at `done` of `total`.
    pub fn update(&mut self, file: &std::path::Path, done: usize, total: usize) {
        if self.current.as_ref().is_none_or(|(f, _)| f != file) {
            eprintln!("converting {}", file.display());
            self.current = Some((file.to_path_buf(), Progress::new("  tensors")));
        }
        if let Some((_, bar)) = &self.current {
            bar.update(done, total);
        }
    }
}

/// A callback for [`janus_pipeline::Janus::load_with`]: names each file fetched
/// and draws a bar while a first-use conversion runs.
pub fn on_load() -> impl FnMut(janus_pipeline::LoadEvent<'_>) {
    let mut bars = FileProgress::default();
    move |event| match event {
        janus_pipeline::LoadEvent::Fetching { file } => eprintln!("fetching {file}"),
        janus_pipeline::LoadEvent::Converting { file, done, total } => {
            bars.update(file, done, total)
        }
    }
}
