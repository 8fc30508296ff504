//! Checkpoint conversion: any supported layout (original or transformers-port keys;
//! safetensors or `.bin` pickles, sharded or not) to the single safetensors file the
//! runtime loads fastest, validated against the config before anything is written.

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::Flex;
use burn::tensor::DType;
use janus_checkpoint::{Checkpoint, StoredDType, TensorInfo, write_safetensors};
use janus_core::{Precision, QuantFormat, QuantMatrix, Weights};

use crate::chat::{TEMPLATE_KEY, Template};
use crate::config::JanusConfig;
use crate::layout::{KNOWN_UNUSED, KeyLayout, open_checkpoint, to_original};
use crate::model::JanusModel;
use crate::tokenizer::TextTokenizer;
use crate::{PipelineError, Result};

/// Version of the converted format, recorded in the safetensors metadata.
pub const FORMAT_VERSION: &str = "1";

/// Version of a converted checkpoint with quantized matrices (`--quant`): each
/// quantized `key` is stored as the two planes [`QuantFormat::plane_keys`]
/// names (docs/quantization.md).
pub const QUANT_FORMAT_VERSION: &str = "2";

/// Refuses weight files that `janus convert` wrote in a format this build
/// does not read: a newer `format_version` (its planes could hold values laid
/// out differently under the same shapes), or blocks of another size. Other
/// files' metadata is not ours and is not read.
pub(crate) fn check_format(ckpt: &Checkpoint) -> Result<()> {
    for (path, meta) in ckpt.metadata() {
        if meta.get("format").map(String::as_str) != Some("janus-rs") {
            continue;
        }
        let bad = |reason: String| {
            PipelineError::Core(janus_checkpoint::Error::malformed(path, reason).into())
        };
        let newest: u32 = QUANT_FORMAT_VERSION.parse().expect("a number");
        match meta.get("format_version").map(|v| v.parse::<u32>()) {
            Some(Ok(v)) if (1..=newest).contains(&v) => {}
            Some(Ok(v)) if v > newest => {
                return Err(bad(format!(
                    "written by a newer janus-rs (format_version {v}; this build reads \
                     versions 1 to {newest}): convert the original checkpoint with this build"
                )));
            }
            found => {
                return Err(bad(format!(
                    "metadata `format_version` is {}, not a version janus-rs wrote (1 to {newest})",
                    found.map_or("missing".to_string(), |_| format!(
                        "`{}`",
                        meta["format_version"]
                    ))
                )));
            }
        }
        if let Some(block) = meta.get("quant_block")
            && block.parse::<usize>().ok() != Some(janus_core::quant::BLOCK)
        {
            return Err(bad(format!(
                "metadata `quant_block` is `{block}`: this build reads blocks of {}",
                janus_core::quant::BLOCK
            )));
        }
    }
    Ok(())
}

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
    /// Matrices written quantized (`--quant`).
    pub quantized: usize,
    /// Stale index files of an earlier conversion that were removed from the
    /// output (they would have been read instead of the new weights).
    pub removed: Vec<std::path::PathBuf>,
    /// The chat template recorded in the output's `processor_config.json`
    /// (`None` when the input's tokenizer does not load).
    pub template: Option<Template>,
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
    Ok(check_keys(ckpt, config)?.0)
}

/// [`validate`], also returning the keys of the matrices that take a block
/// format (the ones `--quant` quantizes).
fn check_keys(
    ckpt: &Checkpoint,
    config: &JanusConfig,
) -> Result<(Vec<String>, std::collections::BTreeSet<String>)> {
    let shapes = Checkpoint::from_shapes(
        ckpt.path(),
        ckpt.keys()
            .filter_map(|k| Some((k.to_string(), ckpt.info(k)?.clone()))),
    )
    .map_err(janus_core::Error::from)?;
    let (shapes, _) = to_original(shapes)?;
    let w = Weights::<Flex>::new(&shapes, &Default::default(), DType::F32);
    JanusModel::from_weights(&w, config)?;
    Ok((w.finish(&KNOWN_UNUSED)?, w.quantizable_keys()))
}

/// How one output tensor is made from an input key.
#[derive(Clone, Copy)]
enum Part {
    /// The float tensor converted to the output dtype.
    Dense,
    /// The values plane of the key quantized to a format.
    Values(QuantFormat),
    /// The scales plane (always right after the values plane).
    Scales,
}

/// Converts the checkpoint in `input` into `output/model.safetensors` with float
/// weights in `dtype` and, with `quant`, the matrices that take a block format
/// (the LLM's linears, `lm_head`, the gen head) quantized to it, then copies
/// [`SIDE_FILES`]. `progress(file, done, total)` is called per tensor, grouped
/// by input shard.
pub fn convert(
    input: &Path,
    output: &Path,
    dtype: StoredDType,
    quant: Option<QuantFormat>,
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
    if output.exists() && !output.is_dir() {
        return Err(PipelineError::Invalid(format!(
            "the output {} exists and is not a directory",
            output.display()
        )));
    }
    let config = JanusConfig::from_file(input.join("config.json"))?;
    let (ckpt, layout) = open_checkpoint(input)?;
    // Converting in place is fine beside `.bin` weights, but the output must
    // not replace the weight file being read (the output's entry, its
    // directory resolved: a link there to the input is replaced, not written
    // through), nor land beside a safetensors index that is read before it.
    let target = output
        .canonicalize()
        .map(|dir| dir.join("model.safetensors"));
    if let Ok(target) = &target
        && let Some(source) = ckpt
            .files()
            .into_iter()
            .find(|f| f.canonicalize().is_ok_and(|f| &f == target))
    {
        return Err(PipelineError::Invalid(format!(
            "the output {} is the checkpoint being converted ({}): convert into \
             another directory",
            target.display(),
            source.display()
        )));
    }
    let index = input.join("model.safetensors.index.json");
    if same_path(input, output) && index.is_file() {
        return Err(PipelineError::Invalid(format!(
            "converting in place would leave {} in front of the new model.safetensors: \
             convert into another directory",
            index.display()
        )));
    }
    if let Some(key) = ckpt.keys().find(|k| k.ends_with(".qs")) {
        return Err(PipelineError::Invalid(format!(
            "{} is already quantized (`{key}`): convert from the original checkpoint",
            input.display()
        )));
    }
    let (skipped, quantizable) = check_keys(&ckpt, &config)?;
    if let Some(format) = quant
        && quantizable.is_empty()
    {
        // It would be a "quantized" checkpoint holding no quantized matrix.
        return Err(PipelineError::Invalid(format!(
            "no matrix of this model can take {} (its blocks are rows of {} values; these \
             widths are not multiples of it): convert without --quant",
            format.name(),
            janus_core::quant::BLOCK
        )));
    }
    check_side_files(input, &config)?;
    let variant = detect_variant(&config, &input.display().to_string());

    // Tensors in (shard, key) order: sequential reads, deterministic output.
    let mut keys: Vec<&str> = ckpt
        .keys()
        .filter(|k| !KNOWN_UNUSED.iter().any(|p| p.matches(k)))
        .collect();
    keys.sort_by_key(|k| (ckpt.file_index(k), *k));
    let mut plan: Vec<(&str, Part)> = Vec::new();
    let mut specs: Vec<(String, TensorInfo)> = Vec::new();
    for &k in &keys {
        let info = ckpt.info(k).expect("listed key");
        match quant {
            Some(format) if quantizable.contains(k) && info.shape.len() == 2 => {
                let (rows, cols) = (info.shape[0], info.shape[1]);
                let (qs, scales) = format.plane_keys(k);
                let qs_info = TensorInfo {
                    shape: vec![rows, format.qs_cols(cols)],
                    dtype: format.stored_dtype(),
                };
                let scales_info = TensorInfo {
                    shape: vec![rows, cols / janus_core::quant::BLOCK],
                    dtype: StoredDType::F16,
                };
                specs.push((qs, qs_info));
                specs.push((scales, scales_info));
                plan.push((k, Part::Values(format)));
                plan.push((k, Part::Scales));
            }
            _ => {
                let info = TensorInfo {
                    shape: info.shape.clone(),
                    dtype,
                };
                specs.push((k.to_string(), info));
                plan.push((k, Part::Dense));
            }
        }
    }
    let quantized = plan
        .iter()
        .filter(|(_, p)| matches!(p, Part::Values(_)))
        .count();
    // Quantizes straight from the checkpoint, streaming (never the whole
    // model in f32).
    let source = Weights::<Flex>::new(
        &ckpt,
        &Default::default(),
        Precision {
            dtype: DType::F32,
            quant,
        },
    );
    let mut pending_scales: Option<Vec<u8>> = None;
    let mut per_file: BTreeMap<Option<usize>, usize> = BTreeMap::new();
    for k in &keys {
        *per_file.entry(ckpt.file_index(k)).or_default() += 1;
    }
    let files = ckpt.files();
    let mut done: BTreeMap<Option<usize>, usize> = BTreeMap::new();

    // A failed conversion into new directories leaves no empty ones behind
    // (dropped after the lock below: it removes only empty directories).
    let _created = janus_checkpoint::create_dirs(output).map_err(|e| write_error(output, e))?;
    // Two conversions into one directory would mix their files.
    let _lock = OutputLock::take(output)?;
    // What killed conversions left (a signal's clean-up removes its own).
    let mut removed = janus_checkpoint::remove_stale_partials(output);
    let mut metadata: BTreeMap<String, String> = [
        ("format", "janus-rs"),
        ("format_version", FORMAT_VERSION),
        ("dtype", dtype.safetensors_name()),
        ("source_layout", layout.name()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(format) = quant {
        for (k, v) in [
            ("format_version", QUANT_FORMAT_VERSION.to_string()),
            ("quant", format.name().to_string()),
            ("quant_block", janus_core::quant::BLOCK.to_string()),
            (
                "quant_layout",
                format!(
                    "{{key}}.{f}.qs: {} [rows, cols * {} / 32] row-major blocks; \
                     {{key}}.{f}.scales: F16 [rows, cols / 32]",
                    format.stored_dtype(),
                    format.block_bytes(),
                    f = format.name()
                ),
            ),
        ] {
            metadata.insert(k.to_string(), v);
        }
    }
    // Side files are copied first, beside their names: a copy that fails
    // (a full disk) leaves the output as it was, not weights without a
    // tokenizer.
    let mut staged = Staged(Vec::new());
    for name in SIDE_FILES {
        let (src, dst) = (input.join(name), output.join(name));
        if src.is_file() {
            let tmp = janus_checkpoint::partial_path(&dst);
            staged.0.push((tmp.clone(), dst.clone()));
            std::fs::copy(&src, &tmp).map_err(|e| {
                PipelineError::Invalid(format!(
                    "cannot copy {} to {}: {e}",
                    src.display(),
                    dst.display()
                ))
            })?;
        }
    }
    let bytes: usize = specs.iter().map(|(_, i)| i.numel() * i.dtype.size()).sum();
    write_safetensors(&output.join("model.safetensors"), &metadata, &specs, |i| {
        let (key, part) = plan[i];
        let bytes = match part {
            Part::Dense => ckpt.read_le_bytes(key, dtype)?,
            Part::Values(format) => {
                let info = ckpt.info(key).expect("listed key");
                let q = source
                    .quantized(key, [info.shape[0], info.shape[1]], format)
                    .map_err(|e| janus_checkpoint::Error::Invalid(e.to_string()))?;
                pending_scales = Some(scales_le_bytes(&q));
                return Ok(q.qs().to_vec());
            }
            Part::Scales => pending_scales.take().expect("values plane written first"),
        };
        let f = ckpt.file_index(key);
        let n = done.entry(f).or_default();
        *n += 1;
        let path = f.and_then(|f| files.get(f).copied()).unwrap_or(ckpt.path());
        progress(path, *n, per_file[&f]);
        Ok(bytes)
    })?;
    // The side files staged before the weights go in are put in place now
    // (renames: a full disk failed only the copies, before anything changed).
    for (tmp, dst) in std::mem::take(&mut staged.0) {
        std::fs::rename(&tmp, &dst).map_err(|e| write_error(&dst, e))?;
    }
    for name in SIDE_FILES {
        let (src, dst) = (input.join(name), output.join(name));
        if !src.exists() && !same_path(input, output) && dst.is_file() {
            // An earlier conversion's copy would pair this model with another
            // one's tokenizer or settings.
            std::fs::remove_file(&dst).map_err(|e| write_error(&dst, e))?;
            removed.push(dst);
        }
    }
    let template = record_template(input, output)?;
    // Indexes of an earlier conversion would be read before the new file.
    if !same_path(input, output) {
        for stale in [
            "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        ] {
            let path = output.join(stale);
            if path.is_file() {
                std::fs::remove_file(&path).map_err(|e| write_error(&path, e))?;
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
        quantized,
        removed,
        template,
    })
}

/// Side files copied beside their names (temporary file, final name), removed
/// if the conversion fails before they are put in place.
struct Staged(Vec<(std::path::PathBuf, std::path::PathBuf)>);

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.0 {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Records in `output/processor_config.json` the chat template of the input
/// checkpoint, which may come from its directory's name (Janus-1.3B): the
/// copy keeps it under any name. Nothing when the input has no tokenizer that
/// loads (loading the copy reports that).
fn record_template(input: &Path, output: &Path) -> Result<Option<Template>> {
    let Ok(tokenizer) = TextTokenizer::from_dir(input) else {
        return Ok(None);
    };
    let pro_roles = tokenizer.token_to_id("<|User|>").is_some();
    let template = Template::of_checkpoint(input, &input.display().to_string(), pro_roles)?;
    let path = output.join("processor_config.json");
    let mut json = match crate::tokenizer::read_json(&path)? {
        None => serde_json::Map::new(),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => {
            return Err(PipelineError::Invalid(format!(
                "{} is not a JSON object",
                path.display()
            )));
        }
    };
    json.insert(TEMPLATE_KEY.into(), template.name().into());
    let text = serde_json::to_string_pretty(&json).expect("a JSON map serializes");
    let tmp = janus_checkpoint::partial_path(&path);
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            write_error(&path, e)
        })?;
    Ok(Some(template))
}

/// Refuses an input whose converted copy could not run: every side file
/// present must be a regular file (a directory, a dangling link or a FIFO
/// there is not skipped as if absent), and they must load as the model's
/// would: the tokenizer, its ids inside the vocabulary, the image
/// preprocessing and the image token count.
fn check_side_files(input: &Path, config: &JanusConfig) -> Result<()> {
    for name in SIDE_FILES {
        let path = input.join(name);
        if std::fs::symlink_metadata(&path).is_ok() && !path.is_file() {
            return Err(PipelineError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
    }
    // Loaded once, as the model loads them.
    let could_not_run = |e: PipelineError| {
        let what = match e {
            PipelineError::Tokenizer(_) => "the tokenizer does not load, so ",
            _ => "",
        };
        PipelineError::Invalid(format!(
            "{}: {what}the converted checkpoint could not run: {e}",
            input.display()
        ))
    };
    let processor =
        crate::Processor::from_dir(input, &input.display().to_string(), &config.vision, None)
            .map_err(could_not_run)?;
    processor
        .tokenizer()
        .check_vocab(config.language.vocab_size)
        .map_err(|e| {
            PipelineError::Invalid(format!(
                "{}: the converted checkpoint could not run: {e}",
                input.display()
            ))
        })?;
    Ok(())
}

/// `output/.janus-convert.lock`, locked (`File::lock`: the system releases it
/// when its process ends, however it ends) by the conversion writing there,
/// which also writes its pid into it for others' waiting message; removed
/// when it ends. A second conversion into the directory waits for it (the
/// same as running one after the other). Where the file system has no locks,
/// nothing is locked.
struct OutputLock(Option<(std::path::PathBuf, std::fs::File)>);

/// The name of a conversion's lock file in its output directory (it holds
/// the converting process's id).
pub const CONVERT_LOCK: &str = ".janus-convert.lock";

/// The process id of a running conversion into `output`, if one holds its
/// lock (a lock file nobody holds locked, e.g. a killed run's, is not held).
pub fn lock_holder(output: &Path) -> Option<u32> {
    let path = output.join(CONVERT_LOCK);
    let file = std::fs::File::open(&path).ok()?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => {
            std::fs::read_to_string(&path).ok()?.trim().parse().ok()
        }
        // Free (dropping the file unlocks it), or no locks here.
        _ => None,
    }
}

/// Whether the open `file` is still the one at `path` (not removed and
/// replaced while its lock was waited for).
fn still_at(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

impl OutputLock {
    fn take(output: &Path) -> Result<Self> {
        use std::io::Write;
        let path = output.join(CONVERT_LOCK);
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| write_error(&path, e))?;
            match file.lock() {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => return Ok(Self(None)),
                Err(e) => return Err(write_error(&path, e)),
            }
            // The holder that ended removed it while this one waited: the
            // next conversion may have locked a new file there.
            if !still_at(&file, &path) {
                continue;
            }
            // Only for others' waiting message: a full disk here is no error.
            let _ = file
                .set_len(0)
                .and_then(|()| write!(file, "{}", std::process::id()));
            return Ok(Self(Some((path, file))));
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked, then unlocked as the file is dropped.
        if let Some((path, _)) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The scales of `q` as little-endian f16 bytes.
fn scales_le_bytes(q: &QuantMatrix) -> Vec<u8> {
    q.scales().iter().flat_map(|d| d.to_le_bytes()).collect()
}

/// Whether `a` and `b` name the same file or directory (resolving links and
/// `..`; as spelled where either does not exist).
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A failure to create, write or remove `path` in the output.
fn write_error(path: &Path, e: std::io::Error) -> PipelineError {
    janus_core::Error::from(janus_checkpoint::Error::write(path, e)).into()
}
