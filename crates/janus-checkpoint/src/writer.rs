//! Writing safetensors files, one tensor at a time, atomically.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::dtype::TensorInfo;
use crate::error::{Error, Result};

/// A temporary name for writing `path`, in the same directory, unique to this
/// call (process id and a counter), so concurrent writers never share a file:
/// `.NAME.PID-N.partial`.
pub fn partial_path(path: &Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{n}.partial", std::process::id()))
}

/// The directories [`create_dirs`] made; on drop, those still empty are
/// removed (deepest first), so a run that fails leaves no empty directories
/// behind, while one that wrote files keeps them.
#[derive(Debug)]
pub struct CreatedDirs(Vec<std::path::PathBuf>);

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `std::fs::create_dir_all(path)`, remembering which directories it made.
pub fn create_dirs(path: &Path) -> std::io::Result<CreatedDirs> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(dir.to_path_buf());
        at = dir.parent();
    }
    let created = CreatedDirs(missing);
    std::fs::create_dir_all(path)?;
    Ok(created)
}

/// Removes the temporary files ([`partial_path`]) in `dir` that processes no
/// longer running left behind (killed before they could clean up); returns
/// them. Only where `/proc` tells which processes run (Linux); elsewhere none.
pub fn remove_stale_partials(dir: &Path) -> Vec<std::path::PathBuf> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
        else {
            continue;
        };
        let Some(pid) = rest
            .rsplit_once('.')
            .and_then(|(_, tag)| tag.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u64>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        let path = entry.path();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && pid != std::process::id()
            && !proc.join(pid.to_string()).exists()
            && std::fs::remove_file(&path).is_ok()
        {
            removed.push(path);
        }
    }
    removed
}

/// Writes a safetensors file at `path`: the header (tensors in the given order,
/// `metadata` under `__metadata__`), then each tensor's bytes as `data(i)` returns
/// them. Only one tensor's bytes are held at a time. The file is written under a
/// temporary name and renamed at the end, so a failed write (disk full, bad data)
/// never leaves a file that looks valid. The same inputs give the same bytes.
pub fn write_safetensors(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    tensors: &[(String, TensorInfo)],
    mut data: impl FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("string map"),
        );
    }
    let mut offset = 0usize;
    for (key, info) in tensors {
        let len = info.numel() * info.dtype.size();
        header.insert(
            key.clone(),
            serde_json::json!({
                "dtype": info.dtype.safetensors_name(),
                "shape": info.shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("header");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let tmp = partial_path(path);
    // Removed on every way out but success, a panic in `data` included.
    struct Partial<'a>(&'a Path);
    impl Drop for Partial<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.0);
        }
    }
    let guard = Partial(&tmp);
    let result = (|| -> Result<()> {
        let file = std::fs::File::create(&tmp).map_err(|e| Error::write(&tmp, e))?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        let io = |e| Error::write(&tmp, e);
        w.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&json).map_err(io)?;
        for (i, (key, info)) in tensors.iter().enumerate() {
            let bytes = data(i)?;
            let want = info.numel() * info.dtype.size();
            if bytes.len() != want {
                return Err(Error::Invalid(format!(
                    "tensor `{key}`: {} bytes given, {want} expected",
                    bytes.len()
                )));
            }
            w.write_all(&bytes).map_err(io)?;
        }
        let file = w
            .into_inner()
            .map_err(|e| Error::write(&tmp, e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(())
    })();
    result?;
    std::fs::rename(&tmp, path).map_err(|e| Error::write(path, e))?;
    std::mem::forget(guard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_processes_partial_files_are_removed() {
        let dir = std::env::temp_dir().join(format!("janus-partials-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Above Linux's largest pid (2^22): never a running process.
        let dead = dir.join(".model.safetensors.99999999-0.partial");
        let mine = partial_path(&dir.join("model.safetensors"));
        let other = [
            dir.join("model.safetensors"),
            dir.join(".notes.partial"),
            dir.join(".x.abc-0.partial"),
        ];
        for f in other.iter().chain([&dead, &mine]) {
            std::fs::write(f, b"x").unwrap();
        }
        let removed = remove_stale_partials(&dir);
        if Path::new("/proc/self").exists() {
            assert_eq!(removed, vec![dead.clone()]);
            assert!(!dead.exists());
        } else {
            assert!(removed.is_empty());
        }
        assert!(mine.exists() && other.iter().all(|f| f.exists()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
