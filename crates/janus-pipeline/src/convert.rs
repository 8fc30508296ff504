//! Checkpoint conversion: any supported layout (original or transformers-port keys;
//! safetensors or `.bin` pickles, sharded or not) to the single safetensors file the
//! runtime loads fastest, validated against the config before anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::Flex;
use burn::tensor::DType;
use janus_checkpoint::{Checkpoint, StoredDType, TensorInfo, write_safetensors};
use janus_core::Weights;

use crate::config::JanusConfig;
use crate::layout::{KNOWN_UNUSED, KeyLayout, open_checkpoint, to_original};
use crate::model::JanusModel;
use crate::{PipelineError, Result};

/// Version of the converted format, recorded in the safetensors metadata.
pub const FORMAT_VERSION: &str = "1";

/// Files copied next to the converted weights (when present).
pub const SIDE_FILES: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "processor_config.json",
    "preprocessor_config.json",
];

/// What a conversion found and wrote.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    /// Detected variant, e.g. `Janus-Pro-7B`.
    pub variant: String,
    /// Key layout of the input.
    pub layout: KeyLayout,
    /// Tensors written.
    pub tensors: usize,
    /// Known-unused tensors left out.
    pub skipped: Vec<String>,
    /// Bytes of weights written.
    pub bytes: usize,
    /// Stale index files of an earlier conversion that were removed from the
    /// output (they would have been read instead of the new weights).
    pub removed: Vec<std::path::PathBuf>,
}

/// Names the variant from the config's LLM shape (and the directory name for the
/// two 24-layer models, which share every shape).
pub fn detect_variant(config: &JanusConfig, name: &str) -> String {
    let c = &config.language;
    let lower = name.to_ascii_lowercase();
    match (c.num_hidden_layers, c.hidden_size, c.vocab_size) {
        (30, 4096, 102400) => "Janus-Pro-7B".into(),
        (24, 2048, 102400) if lower.contains("1.3b") => "Janus-1.3B".into(),
        (24, 2048, 102400) if lower.contains("pro") => "Janus-Pro-1B".into(),
        (24, 2048, 102400) => "Janus-Pro-1B / Janus-1.3B (same shapes)".into(),
        (l, h, v) => format!("custom Janus ({l} layers, hidden {h}, vocab {v})"),
    }
}

/// Checks that every key and shape of `ckpt` (either key layout) maps onto the
/// model `config` describes (shape level, no weights read); returns the
/// known-unused keys.
pub fn validate(ckpt: &Checkpoint, config: &JanusConfig) -> Result<Vec<String>> {
    let shapes = Checkpoint::from_shapes(
        ckpt.path(),
        ckpt.keys()
            .filter_map(|k| Some((k.to_string(), ckpt.info(k)?.clone()))),
    )
    .map_err(janus_core::Error::from)?;
    let (shapes, _) = to_original(shapes)?;
    let w = Weights::<Flex>::new(&shapes, &Default::default(), DType::F32);
    JanusModel::from_weights(&w, config)?;
    Ok(w.finish(&KNOWN_UNUSED)?)
}

/// Converts the checkpoint in `input` into `output/model.safetensors` with float
/// weights in `dtype`, then copies [`SIDE_FILES`]. `progress(file, done, total)`
/// is called per tensor, grouped by input shard.
pub fn convert(
    input: &Path,
    output: &Path,
    dtype: StoredDType,
    mut progress: impl FnMut(&Path, usize, usize),
) -> Result<ConvertReport> {
    if !matches!(
        dtype,
        StoredDType::F32 | StoredDType::F16 | StoredDType::BF16
    ) {
        return Err(PipelineError::Invalid(format!(
            "output dtype must be f32, f16 or bf16, got {dtype}"
        )));
    }
    let config = JanusConfig::from_file(input.join("config.json"))?;
    let (ckpt, layout) = open_checkpoint(input)?;
    let skipped = validate(&ckpt, &config)?;
    let variant = detect_variant(&config, &input.display().to_string());

    // Tensors in (shard, key) order: sequential reads, deterministic output.
    let mut keys: Vec<&str> = ckpt
        .keys()
        .filter(|k| !KNOWN_UNUSED.iter().any(|p| p.matches(k)))
        .collect();
    keys.sort_by_key(|k| (ckpt.file_index(k), *k));
    let specs: Vec<(String, TensorInfo)> = keys
        .iter()
        .map(|k| {
            let info = ckpt.info(k).expect("listed key");
            (
                k.to_string(),
                TensorInfo {
                    shape: info.shape.clone(),
                    dtype,
                },
            )
        })
        .collect();
    let mut per_file: BTreeMap<Option<usize>, usize> = BTreeMap::new();
    for k in &keys {
        *per_file.entry(ckpt.file_index(k)).or_default() += 1;
    }
    let files = ckpt.files();
    let mut done: BTreeMap<Option<usize>, usize> = BTreeMap::new();

    std::fs::create_dir_all(output).map_err(|e| io_error(output, e))?;
    let metadata: BTreeMap<String, String> = [
        ("format", "janus-rs"),
        ("format_version", FORMAT_VERSION),
        ("dtype", dtype.safetensors_name()),
        ("source_layout", layout.name()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let bytes: usize = specs.iter().map(|(_, i)| i.numel() * dtype.size()).sum();
    write_safetensors(&output.join("model.safetensors"), &metadata, &specs, |i| {
        let key = keys[i];
        let bytes = ckpt.read_le_bytes(key, dtype)?;
        let f = ckpt.file_index(key);
        let n = done.entry(f).or_default();
        *n += 1;
        let path = f.and_then(|f| files.get(f).copied()).unwrap_or(ckpt.path());
        progress(path, *n, per_file[&f]);
        Ok(bytes)
    })?;
    for name in SIDE_FILES {
        let src = input.join(name);
        if src.is_file() {
            let dst = output.join(name);
            let tmp = janus_checkpoint::partial_path(&dst);
            if let Err(e) = std::fs::copy(&src, &tmp).and_then(|_| std::fs::rename(&tmp, &dst)) {
                let _ = std::fs::remove_file(&tmp);
                return Err(PipelineError::Invalid(format!(
                    "cannot copy {} to {}: {e}",
                    src.display(),
                    dst.display()
                )));
            }
        }
    }
    // Indexes of an earlier conversion would be read before the new file.
    let mut removed = Vec::new();
    if !same_dir(input, output) {
        for stale in [
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        ] {
            let path = output.join(stale);
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
                removed.push(path);
            }
        }
    }
    Ok(ConvertReport {
        variant,
        layout,
        tensors: specs.len(),
        skipped,
        bytes,
        removed,
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn io_error(path: &Path, e: std::io::Error) -> PipelineError {
    janus_core::Error::io(path, e).into()
}
