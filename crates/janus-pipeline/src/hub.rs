//! `--model org/name`: Hugging Face hub ids resolved through the standard cache
//! (`HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE` honoured). The first use downloads
//! what is missing, converts it with [`crate::convert`] and keeps the converted
//! copy under the janus-rs cache (`JANUS_CACHE`, else `~/.cache/janus-rs`).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo};
use janus_checkpoint::{StoredDType, WEIGHT_FILES, read_index};

use crate::convert::{SIDE_FILES, convert};
use crate::janus::LoadEvent;
use crate::{PipelineError, Result};

/// The default model of the CLI.
pub const DEFAULT_MODEL: &str = "deepseek-ai/Janus-Pro-1B";

/// Whether `spec` looks like `org/name` rather than a path.
pub fn is_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if !a.is_empty() && !b.is_empty() && !a.starts_with('.') && !spec.contains('\\'))
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

/// Where the converted copies of hub id `spec` live (one directory per commit).
pub fn cache_entry_dir(spec: &str) -> PathBuf {
    janus_cache_dir()
        .join("models")
        .join(spec.replace('/', "--"))
}

/// An environment variable's value; an empty one counts as unset (an empty
/// `JANUS_CACHE` put the cache in the current directory).
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The user's cache directory: `XDG_CACHE_HOME`, else `~/.cache` (the home
/// being `USERPROFILE` on Windows).
fn user_cache_dir() -> PathBuf {
    env_path("XDG_CACHE_HOME")
        .or_else(|| {
            env_path("HOME")
                .or_else(|| env_path("USERPROFILE"))
                .map(|h| h.join(".cache"))
        })
        .unwrap_or_else(|| PathBuf::from(".cache"))
}

/// Root of the converted-model cache.
pub fn janus_cache_dir() -> PathBuf {
    env_path("JANUS_CACHE").unwrap_or_else(|| user_cache_dir().join("janus-rs"))
}

/// The Hugging Face hub cache where `huggingface_hub` puts it: `HF_HUB_CACHE`
/// (or the older `HUGGINGFACE_HUB_CACHE`), else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (`XDG_CACHE_HOME` honoured).
fn hf_cache() -> Cache {
    let dir = env_path("HF_HUB_CACHE")
        .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| env_path("HF_HOME").map(|h| h.join("hub")))
        .unwrap_or_else(|| user_cache_dir().join("huggingface").join("hub"));
    Cache::new(dir)
}

/// Weight file names listed by a `*.index.json`.
fn shards_of(index: &Path) -> Result<Vec<String>> {
    let shards = read_index(index).map_err(janus_core::Error::from)?;
    Ok(shards.into_keys().collect())
}

fn not_available(id: &str, cache: &Cache, why: &str) -> PipelineError {
    PipelineError::Invalid(format!(
        "model `{id}` is not in the Hugging Face cache ({}) and could not be downloaded: {why}. \
         On a machine with network run `huggingface-cli download {id}` (or let janus download it), \
         then copy the cache there or set HF_HOME (or HF_HUB_CACHE) to it; or pass --model with a local directory holding \
         config.json, the tokenizer files and the weights (pytorch_model*.bin or model.safetensors)",
        cache
            .path()
            .join(Repo::model(id.to_string()).folder_name())
            .display()
    ))
}

/// Finds (or downloads) the snapshot of `id` in the HF cache; returns its directory
/// and commit.
fn snapshot(id: &str, progress: &mut impl FnMut(LoadEvent<'_>)) -> Result<(PathBuf, String)> {
    let cache = hf_cache();
    let cached = cache.model(id.to_string());
    let from_cache = || -> Option<(PathBuf, String)> {
        let config = cached.get("config.json")?;
        let dir = config.parent()?.to_path_buf();
        let sha = dir.file_name()?.to_string_lossy().to_string();
        let has_weights = WEIGHT_FILES.iter().any(|name| match cached.get(name) {
            Some(index) if name.ends_with(".index.json") => shards_of(&index)
                .is_ok_and(|s| !s.is_empty() && s.iter().all(|f| cached.get(f).is_some())),
            found => found.is_some(),
        });
        has_weights.then_some((dir, sha))
    };
    if offline() {
        return from_cache().ok_or_else(|| not_available(id, &cache, "HF_HUB_OFFLINE is set"));
    }
    let mut online = || -> std::result::Result<(PathBuf, String), String> {
        let api = ApiBuilder::from_env()
            .with_cache_dir(cache.path().clone())
            .with_progress(true)
            .build()
            .map_err(|e| e.to_string())?;
        let repo = api.model(id.to_string());
        let info = repo.info().map_err(|e| e.to_string())?;
        // The commit names a cache directory: a hub (or HF_ENDPOINT) answering
        // `../..` must not send the conversion out of the cache.
        if !is_commit(&info.sha) {
            return Err(format!(
                "the hub answered the commit id {:?}, which is not a hexadecimal commit hash",
                info.sha.chars().take(80).collect::<String>()
            ));
        }
        let names: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        let mut wanted: Vec<String> = SIDE_FILES
            .iter()
            .filter(|f| names.contains(f))
            .map(|f| f.to_string())
            .collect();
        match WEIGHT_FILES.iter().find(|f| names.contains(f)) {
            Some(index) if index.ends_with(".index.json") => {
                let path = repo.get(index).map_err(|e| e.to_string())?;
                wanted.push(index.to_string());
                wanted.extend(shards_of(&path).map_err(|e| e.to_string())?);
            }
            Some(file) => wanted.push(file.to_string()),
            None => {
                return Err("the repository has no model.safetensors or pytorch_model.bin".into());
            }
        }
        let mut dir = None;
        for f in &wanted {
            progress(LoadEvent::Fetching {
                file: &format!("{id}/{f}"),
            });
            let p = repo.get(f).map_err(|e| e.to_string())?;
            dir = p.parent().map(Path::to_path_buf);
        }
        Ok((dir.ok_or("nothing to download")?, info.sha))
    };
    match online() {
        Ok(found) => Ok(found),
        Err(why) => from_cache().ok_or_else(|| not_available(id, &cache, &why)),
    }
}

/// Whether `sha` is a git commit hash (hexadecimal, SHA-1 or SHA-256 long).
fn is_commit(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves `--model`: an existing directory is used as is (any layout); a hub id
/// is found or downloaded in the HF cache and converted once into the janus-rs
/// cache. `progress` hears of each file fetched and of the conversion.
pub fn resolve_model(spec: &str, mut progress: impl FnMut(LoadEvent<'_>)) -> Result<PathBuf> {
    let path = PathBuf::from(spec);
    if path.is_dir() {
        return Ok(path);
    }
    // A relative file path can look like an id (`images/cat.png`).
    if path.exists() {
        return Err(PipelineError::Invalid(format!(
            "model `{spec}` is a file: give the model directory (the one holding config.json \
             and the weights) or a Hugging Face id like {DEFAULT_MODEL}"
        )));
    }
    if !is_repo_id(spec) {
        return Err(PipelineError::Invalid(format!(
            "model `{spec}` is neither a directory nor a Hugging Face id like {DEFAULT_MODEL}"
        )));
    }
    let (snapshot, sha) = snapshot(spec, &mut progress)?;
    let converted = cache_entry_dir(spec).join(&sha);
    // A finished conversion is a directory that exists: each process converts
    // into its own temporary directory and renames it into place when complete,
    // so concurrent first uses never see half a model, and a failed one (disk
    // full, interrupted) leaves nothing that counts as done.
    if converted.join("model.safetensors").is_file() && converted.join("config.json").is_file() {
        return Ok(converted);
    }
    let parent = converted.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| janus_core::Error::io(parent, e))?;
    let tmp = janus_checkpoint::partial_path(&converted);
    let _ = std::fs::remove_dir_all(&tmp);
    let result = convert(
        &snapshot,
        &tmp,
        StoredDType::BF16,
        None,
        |file, done, total| progress(LoadEvent::Converting { file, done, total }),
    );
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &converted) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process finished first: its copy is as good as ours.
        if !converted.join("model.safetensors").is_file() {
            return Err(janus_core::Error::io(&converted, e).into());
        }
    }
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::is_commit;

    #[test]
    fn only_commit_hashes_name_cache_directories() {
        assert!(is_commit("0123456789abcdef0123456789ABCDEF01234567"));
        assert!(is_commit(&"a".repeat(64)));
        for bad in [
            "../../..",
            "",
            "main",
            &"a".repeat(41),
            "0123456789abcdef0123456789abcdef0123456/",
        ] {
            assert!(!is_commit(bad), "{bad}");
        }
    }
}
