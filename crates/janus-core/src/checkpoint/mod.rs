//! Read-only, memory-mapped access to Janus weight files.
//!
//! A [`Checkpoint`] is an index `key -> (shape, dtype, location)` over one or more
//! files: `model.safetensors` (single or sharded with `model.safetensors.index.json`)
//! or PyTorch zip pickles `pytorch_model.bin` (single or sharded with
//! `pytorch_model.bin.index.json`). Tensors are read one at a time and converted
//! straight into the runtime dtype, so loading never holds more than the final
//! weights plus one tensor.

mod layout;
mod pickle;
mod safetensors;
mod torch;
mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use memmap2::Mmap;

use crate::error::{Error, Result};

pub use layout::original_key;
pub use pickle::parse as parse_pickle;
pub use writer::write_safetensors;

/// Element type of a tensor as stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredDType {
    /// IEEE f64.
    F64,
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    BF16,
    /// i64.
    I64,
    /// i32.
    I32,
    /// i16.
    I16,
    /// i8.
    I8,
    /// u8.
    U8,
    /// bool (one byte).
    Bool,
}

impl StoredDType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// The safetensors name (`F32`, `BF16`, ...).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::F64 => "F64",
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::I16 => "I16",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::Bool => "BOOL",
        }
    }

    /// Parses a safetensors dtype name.
    pub fn from_safetensors_name(s: &str) -> Option<Self> {
        Some(match s {
            "F64" => Self::F64,
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            "U8" => Self::U8,
            "BOOL" => Self::Bool,
            _ => return None,
        })
    }

    fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }
}

impl fmt::Display for StoredDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.safetensors_name())
    }
}

/// Shape and dtype of one stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Element type on disk.
    pub dtype: StoredDType,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where a tensor's bytes live inside its file.
#[derive(Debug, Clone)]
enum Location {
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

/// Key layout of the weight files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// The original `deepseek-ai/Janus` names.
    Original,
    /// The transformers port (`deepseek-community/Janus-Pro-*`), mapped to the original names.
    Transformers,
}

struct MappedFile {
    path: PathBuf,
    map: Mmap,
}

/// An index over the tensors of a checkpoint (one or more files).
pub struct Checkpoint {
    root: PathBuf,
    files: Vec<MappedFile>,
    entries: BTreeMap<String, Entry>,
    layout: KeyLayout,
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
            .field("layout", &self.layout)
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
            return Err(Error::checkpoint(
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
        ckpt.normalize_layout()
    }

    fn empty(path: &Path) -> Self {
        Self {
            root: path.to_path_buf(),
            files: Vec::new(),
            entries: BTreeMap::new(),
            layout: KeyLayout::Original,
        }
    }

    /// Maps transformers-port keys to the original names.
    fn normalize_layout(mut self) -> Result<Self> {
        if layout::is_transformers_layout(self.entries.keys()) {
            let entries = std::mem::take(&mut self.entries);
            self.entries =
                layout::to_original(entries).map_err(|e| Error::checkpoint(&self.root, e))?;
            self.layout = KeyLayout::Transformers;
        }
        Ok(self)
    }

    /// The key layout the files use (keys are always exposed with the original names).
    pub fn layout(&self) -> KeyLayout {
        self.layout
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
        ckpt.normalize_layout()
    }

    fn open_index(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::checkpoint(path, format!("index is not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::checkpoint(path, "index has no `weight_map` object"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut shards: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (key, file) in map {
            let file = file.as_str().ok_or_else(|| {
                Error::checkpoint(path, format!("weight_map entry `{key}` is not a file name"))
            })?;
            shards.entry(file).or_default().push(key);
        }
        let mut ckpt = Self::empty(path);
        for (file, keys) in shards {
            if file.contains('/') || file.contains('\\') || file.contains("..") {
                return Err(Error::checkpoint(
                    path,
                    format!("shard name `{file}` is not a plain file name"),
                ));
            }
            let shard = dir.join(file);
            if !shard.is_file() {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "shard `{file}` named in the index is missing (expected at {})",
                        shard.display()
                    ),
                ));
            }
            ckpt.add_file(&shard, Some(&keys))?;
        }
        ckpt.normalize_layout()
    }

    fn add_file(&mut self, path: &Path, expected_keys: Option<&[&str]>) -> Result<()> {
        let map = map_file(path)?;
        let file_idx = self.files.len();
        let found: Vec<(String, TensorInfo, Location)> = if safetensors::looks_like(&map) {
            safetensors::index(path, &map)?
        } else if torch::looks_like(&map) {
            torch::index(path, &map)?
        } else {
            return Err(Error::checkpoint(
                path,
                "neither a safetensors file nor a PyTorch zip checkpoint (legacy non-zip torch files are not supported)",
            ));
        };
        if let Some(keys) = expected_keys {
            for key in keys {
                if !found.iter().any(|(k, _, _)| k == key) {
                    return Err(Error::checkpoint(
                        path,
                        format!("the index says tensor `{key}` is in this shard, but it is not"),
                    ));
                }
            }
        }
        for (key, info, location) in found {
            if self.entries.contains_key(&key) {
                return Err(Error::checkpoint(
                    path,
                    format!("tensor `{key}` appears in more than one shard"),
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
        });
        Ok(())
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
            expected: Vec::new(),
        })?;
        let bytes = self.entry_bytes(entry).ok_or_else(|| {
            Error::checkpoint(
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
                        Cow::Borrowed(&map[*offset..*offset + entry.info.numel() * size])
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
        let dtype = match to {
            StoredDType::F32 => DType::F32,
            StoredDType::F16 => DType::F16,
            StoredDType::BF16 => DType::BF16,
            other => return Err(Error::Invalid(format!("cannot write weights as {other}"))),
        };
        let data = self.read(key, dtype)?;
        Ok(data.as_bytes().to_vec())
    }

    /// Reads `key` converted to `dtype` (`F32`, `F16` or `BF16`).
    pub fn read(&self, key: &str, dtype: DType) -> Result<TensorData> {
        let (bytes, stored) = self.raw(key)?;
        if !stored.is_float() {
            return Err(Error::UnsupportedDType {
                path: self.file_of(key).to_path_buf(),
                key: key.into(),
                dtype: stored.to_string(),
            });
        }
        let shape = self.entries[key].info.shape.clone();
        Ok(match dtype {
            DType::F32 => TensorData::new(convert::<f32>(&bytes, stored), shape),
            DType::F16 => TensorData::new(convert::<f16>(&bytes, stored), shape),
            DType::BF16 => TensorData::new(convert::<bf16>(&bytes, stored), shape),
            other => {
                return Err(Error::Invalid(format!(
                    "runtime dtype {other:?} is not supported for weights (use f32, f16 or bf16)"
                )));
            }
        })
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
        let data = self.read(key, DType::F32)?;
        data.into_vec::<f32>()
            .map_err(|e| Error::checkpoint(self.file_of(key), format!("tensor `{key}`: {e:?}")))
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

/// Element types weights can be converted into.
trait FromStored: Copy {
    fn from_f32(x: f32) -> Self;
    fn from_f16(x: f16) -> Self {
        Self::from_f32(x.to_f32())
    }
    fn from_bf16(x: bf16) -> Self {
        Self::from_f32(x.to_f32())
    }
    fn from_f64(x: f64) -> Self;
}

impl FromStored for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl FromStored for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn from_f16(x: f16) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
}

impl FromStored for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn from_bf16(x: bf16) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
}

fn convert<T: FromStored>(bytes: &[u8], stored: StoredDType) -> Vec<T> {
    match stored {
        StoredDType::F32 => bytes
            .chunks_exact(4)
            .map(|c| T::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        StoredDType::F16 => bytes
            .chunks_exact(2)
            .map(|c| T::from_f16(f16::from_le_bytes([c[0], c[1]])))
            .collect(),
        StoredDType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| T::from_bf16(bf16::from_le_bytes([c[0], c[1]])))
            .collect(),
        StoredDType::F64 => bytes
            .chunks_exact(8)
            .map(|c| T::from_f64(f64::from_le_bytes(c.try_into().unwrap())))
            .collect(),
        _ => unreachable!("non-float dtypes are rejected before conversion"),
    }
}
