//! SIGINT / SIGTERM: remove this process's unfinished files, then exit.
//!
//! Every file the commands write goes to a temporary name carrying this
//! process id (`.NAME.PID-N.partial`, files or directories; see
//! `janus_checkpoint::partial_path`) and is renamed when
//! complete; on a signal, a watcher thread deletes those entries in the
//! directories registered with [`watch`] and exits with 128 + the signal, or,
//! for `serve`, calls the handler given to [`on_signal`] (a graceful stop).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// What a signal does instead of exiting (a server's graceful stop).
static HANDLER: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Makes the first SIGINT / SIGTERM call `handler` (after removing unfinished
/// files) instead of exiting; a second one exits.
pub fn on_signal(handler: impl Fn() + Send + Sync + 'static) {
    let _ = HANDLER.set(Box::new(handler));
}

/// Starts the watcher. Call first in `main`, before any thread exists, so every
/// later thread inherits the blocked signals and only the watcher takes them.
pub fn install() {
    #[cfg(unix)]
    // SAFETY: plain libc calls on a local, initialised signal set; the watcher
    // thread only waits on it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        std::thread::spawn(move || {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                clean_up();
                if let Some(handler) = HANDLER.get() {
                    // A graceful stop; a second signal stops at once.
                    handler();
                    if libc::sigwait(&set, &mut sig) != 0 {
                        return;
                    }
                } else {
                    say!("\ninterrupted: removed unfinished files");
                }
                std::process::exit(128 + sig);
            }
        });
    }
}

/// Registers a directory the command writes into.
pub fn watch(dir: &Path) {
    if let Ok(mut dirs) = DIRS.lock() {
        dirs.push(dir.to_path_buf());
    }
}

fn clean_up() {
    let marker = format!(".{}-", std::process::id());
    let dirs = DIRS.lock().map(|d| d.clone()).unwrap_or_default();
    for dir in dirs {
        // A conversion's lock, when this process holds it.
        let lock = dir.join(janus_pipeline::convert::CONVERT_LOCK);
        if std::fs::read_to_string(&lock)
            .is_ok_and(|pid| pid.trim() == std::process::id().to_string())
        {
            let _ = std::fs::remove_file(&lock);
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') && name.ends_with(".partial") && name.contains(&marker) {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}
