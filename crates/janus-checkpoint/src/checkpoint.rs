//! [`Checkpoint`]: a read-only, memory-mapped index over one or more weight files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::{FloatElem, StoredDType, TensorInfo, convert};
use crate::error::{Error, Result};
use crate::{safetensors, torch};

/// Where a tensor's bytes live inside its file.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// Row-major bytes starting at `offset`.
    Contiguous { offset: usize },
    /// A strided view of a storage that starts at byte `base`.
    Strided {
        base: usize,
        elem_offset: usize,
        stride: Vec<usize>,
    },
}

#[derive(Debug)]
struct Entry {
    info: TensorInfo,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// Bytes in one file (`None` for shape-only checkpoints).
    Stored {
        file: usize,
        location: Option<Location>,
    },
    /// Parts concatenated along dimension 0 (fused from a split layout).
    Concat(Vec<Entry>),
}

/// Where [`Checkpoint::rename`] puts a stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rename {
    /// Under `key`, with the stored shape, or with `shape` (same element count).
    To {
        /// The new key (may equal the old one).
        key: String,
        /// A new shape, e.g. with a leading 1 added.
        shape: Option<Vec<usize>>,
    },
    /// As part `index` of `count` parts that are concatenated along dimension 0
    /// into one tensor `key` (e.g. split q/k/v projections fused into one).
    Part {
        /// The fused key.
        key: String,
        /// Position of this part.
        index: usize,
        /// Number of parts.
        count: usize,
    },
}

struct MappedFile {
    path: PathBuf,
    map: Mmap,
    /// A safetensors header's `__metadata__` (empty for other files).
    metadata: BTreeMap<String, String>,
}

/// An index over the tensors of a checkpoint (one or more files).
pub struct Checkpoint {
    root: PathBuf,
    files: Vec<MappedFile>,
    entries: BTreeMap<String, Entry>,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("root", &self.root)
            .field(
                "files",
                &self.files.iter().map(|m| &m.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.entries.len())
            .finish()
    }
}

/// Weight file names looked for in a model directory, in order of preference.
pub const WEIGHT_FILES: [&str; 4] = [
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
];

/// Reads the `weight_map` of a sharded checkpoint's `*.index.json`: each shard's
/// file name with the keys the index places in it. Shard names must be plain file
/// names (no directory part, no `..`), so nothing outside the model directory is read.
pub fn read_index(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::malformed(path, format!("index is not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::malformed(path, "index has no `weight_map` object"))?;
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, file) in map {
        let file = file.as_str().ok_or_else(|| {
            Error::malformed(path, format!("weight_map entry `{key}` is not a file name"))
        })?;
        if file.is_empty() || file.contains('/') || file.contains('\\') || file.contains("..") {
            return Err(Error::malformed(
                path,
                format!("shard name `{file}` is not a plain file name"),
            ));
        }
        shards
            .entry(file.to_string())
            .or_default()
            .push(key.clone());
    }
    Ok(shards)
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; as with any memory-mapped file, the checkpoint
    // must not be truncated by another process while it is loaded.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

impl Checkpoint {
    /// Opens a checkpoint: a model directory (see [`WEIGHT_FILES`]), a weight file,
    /// or a `*.index.json` of a sharded checkpoint.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            for name in WEIGHT_FILES {
                let candidate = path.join(name);
                if candidate.is_file() {
                    return Self::open(candidate);
                }
            }
            return Err(Error::malformed(
                path,
                format!(
                    "no weight file found (looked for {})",
                    WEIGHT_FILES.join(", ")
                ),
            ));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.ends_with(".index.json") {
            return Self::open_index(path);
        }
        let mut ckpt = Self::empty(path);
        ckpt.add_file(path, None)?;
        Ok(ckpt)
    }

    fn empty(path: &Path) -> Self {
        Self {
            root: path.to_path_buf(),
            files: Vec::new(),
            entries: BTreeMap::new(),
        }
    }

    /// Renames every tensor as `map(key, info)` says (see [`Rename`]), e.g. to
    /// read another key layout under one set of names. Parts are fused lazily: no
    /// bytes are read here. Fails naming the key when two tensors land on one key,
    /// a part is missing, parts disagree in dtype or trailing shape, a new shape
    /// holds another number of elements, or `map` refuses a key.
    pub fn rename(
        mut self,
        map: impl Fn(&str, &TensorInfo) -> std::result::Result<Rename, String>,
    ) -> Result<Self> {
        let root = self.root.clone();
        let bad = |reason: String| Error::malformed(&root, reason);
        let mut out = BTreeMap::new();
        let mut parts: BTreeMap<String, Vec<Option<Entry>>> = BTreeMap::new();
        for (key, mut entry) in std::mem::take(&mut self.entries) {
            match map(&key, &entry.info).map_err(bad)? {
                Rename::To { key: new, shape } => {
                    if let Some(shape) = shape {
                        if checked_numel(&shape) != Some(entry.info.numel()) {
                            return Err(bad(format!(
                                "tensor `{key}` of shape {:?} cannot be viewed as {shape:?}",
                                entry.info.shape
                            )));
                        }
                        entry.info.shape = shape;
                    }
                    if out.insert(new.clone(), entry).is_some() {
                        return Err(bad(format!("two tensors map to `{new}`")));
                    }
                }
                Rename::Part {
                    key: new,
                    index,
                    count,
                } => {
                    let slots = parts
                        .entry(new.clone())
                        .or_insert_with(|| std::iter::repeat_with(|| None).take(count).collect());
                    if slots.len() != count || index >= count || slots[index].is_some() {
                        return Err(bad(format!(
                            "`{key}`: inconsistent part {index} of {count} for `{new}`"
                        )));
                    }
                    slots[index] = Some(entry);
                }
            }
        }
        for (key, slots) in parts {
            let entries: Vec<Entry> = slots
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad(format!("`{key}`: one of its parts is missing")))?;
            let first = &entries[0].info;
            if first.shape.is_empty()
                || entries.iter().any(|p| {
                    p.info.dtype != first.dtype
                        || p.info.shape.len() != first.shape.len()
                        || p.info.shape[1..] != first.shape[1..]
                })
            {
                return Err(bad(format!("`{key}`: its parts differ in shape or dtype")));
            }
            let mut shape = first.shape.clone();
            shape[0] = entries.iter().map(|p| p.info.shape[0]).sum();
            let info = TensorInfo {
                shape,
                dtype: first.dtype,
            };
            if out.contains_key(&key) {
                return Err(bad(format!("two tensors map to `{key}`")));
            }
            out.insert(
                key,
                Entry {
                    info,
                    source: Source::Concat(entries),
                },
            );
        }
        self.entries = out;
        Ok(self)
    }

    /// Builds a data-less checkpoint from a list of keys and shapes (for example a
    /// manifest of a real checkpoint): loading from it checks every key and shape
    /// but produces placeholder tensors.
    pub fn from_shapes(
        name: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, TensorInfo)>,
    ) -> Result<Self> {
        let mut ckpt = Self::empty(&name.into());
        ckpt.entries = tensors
            .into_iter()
            .map(|(k, info)| {
                let source = Source::Stored {
                    file: usize::MAX,
                    location: None,
                };
                (k, Entry { info, source })
            })
            .collect();
        Ok(ckpt)
    }

    fn open_index(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut ckpt = Self::empty(path);
        for (file, keys) in read_index(path)? {
            let shard = dir.join(&file);
            if !shard.is_file() {
                return Err(Error::malformed(
                    path,
                    format!(
                        "shard `{file}` named in the index is missing (expected at {})",
                        shard.display()
                    ),
                ));
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            ckpt.add_file(&shard, Some(&keys))?;
        }
        Ok(ckpt)
    }

    fn add_file(&mut self, path: &Path, expected_keys: Option<&[&str]>) -> Result<()> {
        let map = map_file(path)?;
        let file_idx = self.files.len();
        let (found, metadata) = if safetensors::looks_like(&map) {
            safetensors::index(path, &map)?
        } else if torch::looks_like(&map) {
            (torch::index(path, &map)?, BTreeMap::new())
        } else {
            return Err(Error::malformed(
                path,
                "neither a safetensors file nor a PyTorch zip checkpoint (legacy non-zip torch files are not supported)",
            ));
        };
        if let Some(keys) = expected_keys {
            // A set: a shard of 100k tensors took minutes key by key.
            let present: std::collections::HashSet<&str> =
                found.iter().map(|(k, _, _)| k.as_str()).collect();
            for key in keys {
                if !present.contains(key) {
                    return Err(Error::malformed(
                        path,
                        format!("the index says tensor `{key}` is in this shard, but it is not"),
                    ));
                }
            }
        }
        for (key, info, location) in found {
            if let Some(earlier) = self.entries.get(&key) {
                let same_file =
                    matches!(earlier.source, Source::Stored { file, .. } if file == file_idx);
                let where_else = if same_file {
                    "twice in this file"
                } else {
                    "in more than one shard"
                };
                return Err(Error::malformed(
                    path,
                    format!("tensor `{key}` appears {where_else}"),
                ));
            }
            let source = Source::Stored {
                file: file_idx,
                location: Some(location),
            };
            self.entries.insert(key, Entry { info, source });
        }
        self.files.push(MappedFile {
            path: path.to_path_buf(),
            map,
            metadata,
        });
        Ok(())
    }

    /// Each file with its safetensors `__metadata__` (string values; empty
    /// for pickles and for files without it).
    pub fn metadata(&self) -> impl Iterator<Item = (&Path, &BTreeMap<String, String>)> {
        self.files.iter().map(|f| (f.path.as_path(), &f.metadata))
    }

    /// The path the checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Whether tensor data can be read (false for [`Checkpoint::from_shapes`]).
    pub fn has_data(&self) -> bool {
        !self.files.is_empty()
    }

    /// All keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Shape and dtype of `key`.
    pub fn info(&self, key: &str) -> Option<&TensorInfo> {
        self.entries.get(key).map(|e| &e.info)
    }

    /// The file holding `key` (the checkpoint path for data-less checkpoints).
    pub fn file_of(&self, key: &str) -> &Path {
        let mut entry = self.entries.get(key);
        while let Some(Entry {
            source: Source::Concat(parts),
            ..
        }) = entry
        {
            entry = parts.first();
        }
        match entry.map(|e| &e.source) {
            Some(Source::Stored { file, .. }) => self
                .files
                .get(*file)
                .map_or(self.root.as_path(), |f| f.path.as_path()),
            _ => self.root.as_path(),
        }
    }

    /// The paths of the weight files, in the order they were opened.
    pub fn files(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Index of the file holding `key` (for grouping work per shard).
    pub fn file_index(&self, key: &str) -> Option<usize> {
        let mut entry = self.entries.get(key)?;
        loop {
            match &entry.source {
                Source::Stored { file, .. } => return Some(*file),
                Source::Concat(parts) => entry = parts.first()?,
            }
        }
    }

    /// The row-major bytes of `key` and their stored dtype.
    fn raw(&self, key: &str) -> Result<(std::borrow::Cow<'_, [u8]>, StoredDType)> {
        let entry = self.entries.get(key).ok_or_else(|| Error::MissingTensor {
            path: self.root.clone(),
            key: key.into(),
        })?;
        let bytes = self.entry_bytes(entry).ok_or_else(|| {
            Error::malformed(
                self.file_of(key),
                format!("tensor `{key}`: this checkpoint holds shapes only, no data"),
            )
        })?;
        Ok((bytes, entry.info.dtype))
    }

    fn entry_bytes(&self, entry: &Entry) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        match &entry.source {
            Source::Stored {
                file,
                location: Some(location),
            } => {
                let map = &self.files.get(*file)?.map;
                let size = entry.info.dtype.size();
                Some(match location {
                    Location::Contiguous { offset } => {
                        Cow::Borrowed(map.get(*offset..*offset + entry.info.numel() * size)?)
                    }
                    Location::Strided {
                        base,
                        elem_offset,
                        stride,
                    } => Cow::Owned(gather(
                        &map[*base..],
                        size,
                        *elem_offset,
                        &entry.info.shape,
                        stride,
                    )),
                })
            }
            Source::Stored { location: None, .. } => None,
            Source::Concat(parts) => {
                let mut out = Vec::new();
                for p in parts {
                    out.extend_from_slice(&self.entry_bytes(p)?);
                }
                Some(Cow::Owned(out))
            }
        }
    }

    /// Reads `key` as little-endian bytes of the float dtype `to` (`F32`, `F16` or
    /// `BF16`), for writing converted checkpoints.
    pub fn read_le_bytes(&self, key: &str, to: StoredDType) -> Result<Vec<u8>> {
        Ok(match to {
            StoredDType::F32 => bytemuck::cast_slice(&self.read::<f32>(key)?).to_vec(),
            StoredDType::F16 => bytemuck::cast_slice(&self.read::<half::f16>(key)?).to_vec(),
            StoredDType::BF16 => bytemuck::cast_slice(&self.read::<half::bf16>(key)?).to_vec(),
            other => return Err(Error::Invalid(format!("cannot write weights as {other}"))),
        })
    }

    /// Reads the float tensor `key` converted to `T` (row-major).
    pub fn read<T: FloatElem>(&self, key: &str) -> Result<Vec<T>> {
        let (bytes, stored) = self.raw_float(key)?;
        let out = convert::<T>(&bytes, stored);
        self.release(key, 0, bytes.len());
        Ok(out)
    }

    /// Lets the kernel drop the mapped pages of bytes `start..start + len` of
    /// `key` (a tensor stored in one piece) from this process: each tensor is
    /// read once, and without this the file's pages read so far count in the
    /// process's resident memory until the checkpoint is dropped (a 15 GB
    /// 7B checkpoint quantized at load would show 15 GB). A hint: pages of
    /// a neighbouring tensor in the same memory page are read again if used.
    fn release(&self, key: &str, start: usize, len: usize) {
        #[cfg(unix)]
        if let Some(Entry {
            source:
                Source::Stored {
                    file,
                    location: Some(Location::Contiguous { offset }),
                },
            ..
        }) = self.entries.get(key)
            && let Some(f) = self.files.get(*file)
        {
            // SAFETY: the map is a read-only shared mapping of a file: dropping
            // its pages only makes the next access read them from the file
            // again, with the same bytes; nothing in it was written.
            let _ = unsafe {
                f.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    offset + start,
                    len,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = (key, start, len);
    }

    /// [`Checkpoint::raw`] of a float tensor; other dtypes are an error.
    fn raw_float(&self, key: &str) -> Result<(std::borrow::Cow<'_, [u8]>, StoredDType)> {
        let (bytes, stored) = self.raw(key)?;
        if !stored.is_float() {
            return Err(Error::UnsupportedDType {
                path: self.file_of(key).to_path_buf(),
                key: key.into(),
                dtype: stored.to_string(),
            });
        }
        Ok((bytes, stored))
    }

    /// Streams the float tensor `key` as f32 values, `chunk` elements at a time
    /// (the last chunk may be shorter), without converting the whole tensor at
    /// once: `f(offset, values)` for consecutive chunks.
    pub fn for_each_f32_chunk<E>(
        &self,
        key: &str,
        chunk: usize,
        mut f: impl FnMut(usize, &[f32]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E>
    where
        E: From<Error>,
    {
        let (bytes, stored) = self.raw_float(key)?;
        let chunk = chunk.max(1);
        let step = chunk * stored.size();
        for (i, part) in bytes.chunks(step).enumerate() {
            f(i * chunk, &convert::<f32>(part, stored))?;
            self.release(key, i * step, part.len());
        }
        Ok(())
    }

    /// The row-major bytes of `key`, which must be stored as `dtype` (the
    /// one-byte planes of quantized matrices).
    pub fn read_bytes(&self, key: &str, dtype: StoredDType) -> Result<Vec<u8>> {
        let (bytes, stored) = self.raw(key)?;
        if stored != dtype {
            return Err(Error::UnsupportedDType {
                path: self.file_of(key).to_path_buf(),
                key: key.into(),
                dtype: format!("{stored} (expected {dtype})"),
            });
        }
        let out = bytes.into_owned();
        self.release(key, 0, out.len());
        Ok(out)
    }

    /// Reads an integer or bool tensor `key` as i64 values (row-major).
    pub fn read_ints(&self, key: &str) -> Result<Vec<i64>> {
        let (bytes, stored) = self.raw(key)?;
        let v = match stored {
            StoredDType::I64 => bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            StoredDType::I32 => bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            StoredDType::I16 => bytes
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            StoredDType::I8 => bytes.iter().map(|b| *b as i8 as i64).collect(),
            StoredDType::U8 | StoredDType::Bool => bytes.iter().map(|b| *b as i64).collect(),
            other => {
                return Err(Error::UnsupportedDType {
                    path: self.file_of(key).to_path_buf(),
                    key: key.into(),
                    dtype: format!("{other} (expected an integer tensor)"),
                });
            }
        };
        Ok(v)
    }

    /// Reads `key` as f32 values (row-major).
    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>> {
        self.read::<f32>(key)
    }
}

/// Copies a strided view into row-major bytes.
fn gather(
    storage: &[u8],
    size: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * size);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let e = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&storage[e * size..(e + 1) * size]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// The element count of `shape`, `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::write_safetensors;

    /// The file-backed memory this process holds (`RssFile`), in bytes.
    fn rss_file() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        kb * 1024
    }

    #[test]
    fn tensors_read_leave_no_file_pages_resident_and_read_again_the_same() {
        let dir = std::env::temp_dir().join(format!("janus-ckpt-release-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        // Two 32 MiB f32 tensors.
        let n = 8 << 20;
        let specs: Vec<(String, TensorInfo)> = ["a", "b"]
            .iter()
            .map(|k| {
                let info = TensorInfo {
                    shape: vec![n],
                    dtype: StoredDType::F32,
                };
                (k.to_string(), info)
            })
            .collect();
        let values = |t: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|i| ((i * 7 + t) as f32).to_le_bytes())
                .collect()
        };
        write_safetensors(&path, &BTreeMap::new(), &specs, |i| Ok(values(i))).unwrap();
        let ckpt = Checkpoint::open(&path).unwrap();
        let before = rss_file();
        let mut sum = 0f64;
        ckpt.for_each_f32_chunk("a", 1 << 20, |_, v| -> Result<()> {
            sum += v.iter().map(|x| f64::from(*x)).sum::<f64>();
            Ok(())
        })
        .unwrap();
        let b = ckpt.read::<f32>("b").unwrap();
        let grown = rss_file().saturating_sub(before);
        // 64 MiB were read; what stays mapped in is a page or two per read.
        assert!(grown < 8 << 20, "{grown} bytes of the file stay resident");
        // Read again after the pages were dropped: the same values.
        assert_eq!(ckpt.read::<f32>("b").unwrap(), b);
        assert_eq!(b[12345], (12345 * 7 + 1) as f32);
        let mut again = 0f64;
        ckpt.for_each_f32_chunk("a", 1 << 20, |_, v| -> Result<()> {
            again += v.iter().map(|x| f64::from(*x)).sum::<f64>();
            Ok(())
        })
        .unwrap();
        assert_eq!(sum, again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
