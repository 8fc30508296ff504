//! What the commands write: stdout lines that end quietly on a closed pipe, and
//! files that appear complete or not at all.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use janus_pipeline::RgbImage;

/// Writes `text` to stdout and flushes. A closed stdout (`janus ... | head`)
/// surfaces as an error [`is_broken_pipe`] recognises, so the program can end quietly.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

/// [`print`] with a newline.
pub fn println(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}

/// Whether `e` comes from writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `bytes` to `path` through a temporary file of a name unique to this
/// process in the same directory, renamed into place when complete.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = janus_checkpoint::partial_path(path);
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fails now, not after a long run, when `path` could not be written by
/// [`write_atomic`] (a directory there, a missing or read-only directory).
pub fn check_can_write(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        anyhow::bail!("cannot write {}: it is a directory", path.display());
    }
    let tmp = janus_checkpoint::partial_path(path);
    std::fs::write(&tmp, b"").with_context(|| format!("cannot write {}", path.display()))?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// Encodes `img` as a PNG at `path` (atomically).
pub fn save_png(path: &Path, img: &RgbImage) -> anyhow::Result<()> {
    let png = janus_pipeline::encode_png(img)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &png)
}
