//! Progress bars on stderr.

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Whether a bar's line is drawn but not ended: the next message starts on a
/// new line.
static LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Writes one line to stderr (the [`say!`] macro), after ending an open bar's
/// line. Write errors are ignored: a closed or full stderr must not stop (or
/// panic) the work whose progress it reports.
pub fn say(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    let text = printable(&text);
    let mut err = std::io::stderr().lock();
    if LINE_OPEN.swap(false, Ordering::Relaxed) {
        let _ = writeln!(err);
    }
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

/// `text` with control characters but newlines and tabs escaped (`\u{1b}`):
/// names from hostile files (a shard name holding terminal escapes) must not
/// drive the terminal.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Whether stderr is a terminal (bars are redrawn in place there; elsewhere,
/// a log, they are lines at every tenth of the work).
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    static TERMINAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TERMINAL.get_or_init(|| std::io::stderr().is_terminal())
}

/// Redraws `label [#####.....] done/total  x.xx s/unit  eta` on one stderr line,
/// at most ten times a second (and always at the end).
pub struct Progress {
    label: String,
    unit: &'static str,
    start: Instant,
    last: Cell<Option<Instant>>,
}

impl Progress {
    /// Starts timing steps.
    pub fn new(label: impl Into<String>) -> Self {
        Self::with_unit(label, "step")
    }

    /// Starts timing, naming what is counted (`step`, `tensor`).
    pub fn with_unit(label: impl Into<String>, unit: &'static str) -> Self {
        Self {
            label: label.into(),
            unit,
            start: Instant::now(),
            last: Cell::new(None),
        }
    }

    /// Draws the bar at `done` of `total`.
    pub fn update(&self, done: usize, total: usize) {
        let now = Instant::now();
        let finished = done >= total;
        let per = self.start.elapsed().as_secs_f64() / done.max(1) as f64;
        let eta = per * total.saturating_sub(done) as f64;
        if !stderr_is_terminal() {
            // A log: one line per tenth of the work, no carriage returns.
            let tenth = |d: usize| d.min(total) * 10 / total.max(1);
            if finished || done == 1 || tenth(done) > tenth(done.saturating_sub(1)) {
                say!(
                    "{} {done}/{total}  {per:.3} s/{}  eta {eta:.0} s",
                    self.label.trim_start(),
                    self.unit
                );
            }
            return;
        }
        if !finished
            && self
                .last
                .get()
                .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last.set(Some(now));
        let width = 30;
        let filled = done.min(total) * width / total.max(1);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {done}/{total}  {per:.3} s/{}  eta {eta:.0} s",
            self.label,
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.unit,
        );
        if finished {
            let _ = writeln!(err);
        }
        LINE_OPEN.store(!finished, Ordering::Relaxed);
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
            say!("converting {}", file.display());
            self.current = Some((
                file.to_path_buf(),
                Progress::with_unit("  tensors", "tensor"),
            ));
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
        janus_pipeline::LoadEvent::Fetching { file } => say!("fetching {file}"),
        janus_pipeline::LoadEvent::Converting { file, done, total } => {
            bars.update(file, done, total)
        }
    }
}
