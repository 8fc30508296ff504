//! What image generation needs in memory, what the machine has, and how many
//! images fit at once: the numbers `janus generate` prints, refuses on and
//! chunks by.

use std::path::Path;

use burn::backend::Flex;
use burn::prelude::Backend;
use burn::tensor::DType;
use janus_checkpoint::Checkpoint;
use janus_core::{Precision, QuantFormat, Weights};

use crate::config::JanusConfig;
use crate::model::{JanusModel, Modules};
use crate::{PipelineError, Result};

/// Images the VQ decoder decodes together (bounds its activations).
pub const DECODE_CHUNK: usize = 8;

/// Bytes the runtime holds beside weights and per-image buffers (allocator
/// slack, tokenizer, thread stacks, the step's activations).
const RUNTIME_BYTES: u64 = 384 << 20;

/// The memory an image generation needs, split by what scales with what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationMemory {
    /// Weights as held (quantized, 16-bit or f32).
    pub weights: u64,
    /// Per image while generating: the KV cache of its two rows over prompt +
    /// every code position, its logits and prompt activations.
    pub per_image: u64,
    /// Per image while the VQ decoder runs (up to [`DECODE_CHUNK`] at once).
    pub per_decoded_image: u64,
    /// Independent of the image count.
    pub fixed: u64,
}

impl GenerationMemory {
    /// The estimate for `config` with weights of `weights` bytes in `dtype`
    /// (the KV cache's dtype) and a generation prompt of `prompt_len` tokens.
    pub fn new(config: &JanusConfig, dtype: DType, weights: u64, prompt_len: usize) -> Self {
        let l = &config.language;
        let steps = config.vq.grid_side().pow(2) as u64;
        let positions = prompt_len as u64 + steps;
        let elem = dtype.size() as u64;
        let (h, kv_width) = (
            l.hidden_size as u64,
            (l.num_key_value_heads * l.head_dim) as u64,
        );
        // Two rows (conditional, unconditional) per image.
        let kv = 2 * positions * l.num_hidden_layers as u64 * 2 * kv_width * elem;
        let logits = 2 * 3 * config.gen_head.num_codes as u64 * 4;
        // The prompt's activations: hidden states, MLP intermediates and the
        // attention scores of both rows (f32 at worst).
        let p = prompt_len as u64;
        let prefill = 2
            * 4
            * (p * (6 * h + 3 * l.intermediate_size as u64) + l.num_attention_heads as u64 * p * p);
        // The decoder's largest activations live at full resolution with its
        // base channel count; a few are alive at once, plus the RGB output.
        let s2 = (config.vq.image_size as u64).pow(2);
        let decode = 6 * s2 * config.vq.base_channels as u64 * 4 + 3 * s2 * 5;
        Self {
            weights,
            per_image: kv + logits + prefill,
            per_decoded_image: decode,
            fixed: RUNTIME_BYTES,
        }
    }

    /// The peak for `images` images generated at once.
    pub fn need(&self, images: usize) -> u64 {
        let n = images as u64;
        let sampling = self.per_image.saturating_mul(n);
        let decode = self
            .per_decoded_image
            .saturating_mul(n.min(DECODE_CHUNK as u64));
        self.weights
            .saturating_add(self.fixed)
            .saturating_add(sampling.max(decode))
    }

    /// The most images (up to `wanted`) whose peak stays within `budget`
    /// bytes; 0 when not even one fits.
    pub fn images_within(&self, budget: u64, wanted: usize) -> usize {
        if self.need(1) > budget {
            return 0;
        }
        let (mut lo, mut hi) = (1, wanted.max(1));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.need(mid) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }
}

/// Bytes the weights of `modules` take in `precision`, from the checkpoint's
/// shapes alone (nothing is read or converted): the estimate before loading.
pub fn weight_bytes(
    ckpt: &Checkpoint,
    config: &JanusConfig,
    precision: Precision,
    modules: Modules,
) -> Result<u64> {
    Ok(weights_as_loaded(ckpt, config, precision, modules)?.0)
}

/// [`weight_bytes`], with the precision the weights load in (the checkpoint's
/// stored block format where none is asked for).
fn weights_as_loaded(
    ckpt: &Checkpoint,
    config: &JanusConfig,
    precision: Precision,
    modules: Modules,
) -> Result<(u64, Precision)> {
    let shapes = Checkpoint::from_shapes(
        ckpt.path(),
        ckpt.keys()
            .filter_map(|k| Some((k.to_string(), ckpt.info(k)?.clone()))),
    )
    .map_err(janus_core::Error::from)?;
    let w = Weights::<Flex>::new(&shapes, &Default::default(), precision);
    let model = JanusModel::from_weights_of(&w, config, modules)?;
    Ok((w.bytes_taken(), model.precision()))
}

/// A generation request's memory before anything loads: what the weights
/// and each image need, what the machine has, and how many images fit at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationPlan {
    /// The precision the plan is for.
    pub precision: Precision,
    /// The estimate.
    pub memory: GenerationMemory,
    /// What may be used, and where that figure comes from (`None`: unknown,
    /// e.g. a GPU backend without `--max-memory`).
    pub available: Option<(u64, MemorySource)>,
    /// Images asked for.
    pub wanted: usize,
    /// Images that fit at once: `wanted` when the memory is unknown, 0 when
    /// not even one fits.
    pub at_once: usize,
    /// When not even one image fits: the first precision in which one does
    /// (16-bit, then q8_0, then q4_0), if any.
    pub would_fit: Option<Precision>,
}

impl GenerationPlan {
    /// The plan for `wanted` images of a prompt of `prompt_len` tokens from
    /// `ckpt`, in `precision`, within `available`.
    pub fn new(
        ckpt: &Checkpoint,
        config: &JanusConfig,
        precision: Precision,
        prompt_len: usize,
        wanted: usize,
        available: Option<(u64, MemorySource)>,
    ) -> Result<Self> {
        let estimate = |precision: Precision| -> Result<(GenerationMemory, Precision)> {
            let (weights, precision) =
                weights_as_loaded(ckpt, config, precision, Modules::Generation)?;
            let memory = GenerationMemory::new(config, precision.dtype, weights, prompt_len);
            Ok((memory, precision))
        };
        let (memory, precision) = estimate(precision)?;
        let at_once = match available {
            Some((budget, _)) => memory.images_within(budget, wanted),
            None => wanted,
        };
        let mut would_fit = None;
        if let (0, Some((budget, _))) = (at_once, available) {
            let sixteen = match precision.dtype {
                DType::F32 => DType::F16,
                d => d,
            };
            let candidates = [None, Some(QuantFormat::Q8_0), Some(QuantFormat::Q4_0)]
                .into_iter()
                .map(|quant| Precision {
                    dtype: sixteen,
                    quant,
                })
                .filter(|p| p.bits_per_weight() < precision.bits_per_weight());
            for candidate in candidates {
                if estimate(candidate)?.0.need(1) <= budget {
                    would_fit = Some(candidate);
                    break;
                }
            }
        }
        Ok(Self {
            precision,
            memory,
            available,
            wanted,
            at_once,
            would_fit,
        })
    }

    /// The estimate as one line for stderr.
    pub fn summary(&self) -> String {
        let m = &self.memory;
        let images = self.wanted.min(self.at_once.max(1));
        let mut line = format!(
            "memory estimate: {} weights ({}) + {} per image; {images} image(s) at once need {}",
            gb(m.weights),
            self.precision,
            gb(m.per_image.max(m.per_decoded_image)),
            gb(m.need(images)),
        );
        match self.available {
            Some((bytes, source)) => line += &format!(", {} available ({source})", gb(bytes)),
            None => line += ", available memory unknown (set --max-memory to plan)",
        }
        if self.at_once > 0 && self.at_once < self.wanted {
            line += &format!(
                "; generating {} images in chunks of {}",
                self.wanted, self.at_once
            );
        }
        line
    }

    /// Ok when at least one image fits, else the error that names the need,
    /// what is available and the precision that would fit.
    pub fn check(&self) -> Result<()> {
        let (0, Some((budget, source))) = (self.at_once, self.available) else {
            return Ok(());
        };
        let hint = match self.would_fit {
            Some(p) => format!("; --dtype {} would fit", p.short_name()),
            None => "; no dtype fits: even q4_0 needs more".to_string(),
        };
        let (need, have) = gb_apart(self.memory.need(1), budget);
        Err(PipelineError::Memory(format!(
            "one image in {} needs about {need} (weights {}), but {have} is available ({source}){hint}",
            self.precision,
            gb(self.memory.weights),
        )))
    }
}

/// Where an available-memory figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// `MemAvailable` of `/proc/meminfo` (CPU backend, Linux).
    MemAvailable,
    /// The memory limit of the process's cgroup (a container's `--memory`),
    /// less what the cgroup uses (CPU backend, Linux).
    Cgroup,
    /// The process's address-space limit (`ulimit -v`), less its present
    /// size (CPU backend, Linux).
    AddressSpace,
    /// The caller's limit (`--max-memory`).
    Limit,
}

impl std::fmt::Display for MemorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::MemAvailable => "MemAvailable",
            Self::Cgroup => "the cgroup's memory limit",
            Self::AddressSpace => "ulimit -v",
            Self::Limit => "--max-memory",
        })
    }
}

/// The memory the process may use: the smaller of `limit` and what the device
/// has available where that is known (the CPU backend on Linux: the least of
/// `MemAvailable`, the cgroup's limit less its use and the address-space
/// limit less the process's size, each plus `held`, the bytes this process
/// already holds for what is being counted). `None` when neither is known
/// (no check).
pub fn available_memory<B: Backend>(limit: Option<u64>, held: u64) -> Option<(u64, MemorySource)> {
    let system = if janus_core::is_flex::<B>() {
        [
            mem_available().map(|a| (a, MemorySource::MemAvailable)),
            cgroup_available(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup"))
                .map(|a| (a, MemorySource::Cgroup)),
            address_space_available().map(|a| (a, MemorySource::AddressSpace)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(a, _)| *a)
        .map(|(a, source)| (a.saturating_add(held), source))
    } else {
        None
    };
    match (system, limit) {
        (Some(s), Some(l)) if s.0 < l => Some(s),
        (_, Some(l)) => Some((l, MemorySource::Limit)),
        (s, None) => s,
    }
}

/// A `KEY: VALUE kB`-style field of a `/proc` file, as the number after the key.
fn proc_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(proc_field(&info, "MemAvailable:")? * 1024)
}

/// The address-space limit (`ulimit -v`) less the process's present virtual
/// size, in bytes; `None` when unlimited.
fn address_space_available() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let limit: u64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max address space"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let size = proc_field(&status, "VmSize:")? * 1024;
    Some(limit.saturating_sub(size))
}

/// What the process's memory cgroups leave (the least over the cgroup and its
/// ancestors of limit less use, reclaimable file pages not counted as used),
/// from `proc_cgroup` (`/proc/self/cgroup`) and the cgroup file systems under
/// `root` (`/sys/fs/cgroup`: cgroup v2 there, v1 under `memory/`); `None`
/// where no limit is set.
fn cgroup_available(proc_cgroup: &Path, root: &Path) -> Option<u64> {
    let lines = std::fs::read_to_string(proc_cgroup).ok()?;
    let read = |dir: &Path, file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let number = |text: Option<String>| text?.trim().parse::<u64>().ok();
    // (the hierarchy's root, the process's cgroup, limit / use / stat files,
    // the stat key of reclaimable file pages)
    let (base, path, files, inactive) = if let Some(path) = lines
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|_| root.join("cgroup.controllers").exists())
    {
        (
            root.to_path_buf(),
            path,
            ["memory.max", "memory.current"],
            "inactive_file ",
        )
    } else {
        let path = lines.lines().find_map(|l| {
            let (controllers, path) = l.split_once(':')?.1.split_once(':')?;
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        })?;
        (
            root.join("memory"),
            path,
            ["memory.limit_in_bytes", "memory.usage_in_bytes"],
            "total_inactive_file ",
        )
    };
    // Inside a container the cgroup's own directory is the mount's root.
    let mut dir = base.join(path.trim_start_matches('/'));
    if !dir.starts_with(&base) || !dir.is_dir() {
        dir = base.clone();
    }
    let mut least: Option<u64> = None;
    loop {
        // cgroup v1 writes "no limit" as a number near 2^63; v2 as "max".
        if let Some(limit) = number(read(&dir, files[0])).filter(|l| *l < 1 << 60) {
            let used = number(read(&dir, files[1])).unwrap_or(0);
            let reclaimable = read(&dir, "memory.stat")
                .and_then(|stat| proc_field(&stat, inactive))
                .unwrap_or(0);
            let left = limit.saturating_sub(used.saturating_sub(reclaimable));
            least = Some(least.map_or(left, |l| l.min(left)));
        }
        if dir == base || !dir.pop() || !dir.starts_with(&base) {
            return least;
        }
    }
}

/// Parses a memory size: bytes, or with a unit `K`, `M`, `G`, `T` (powers of
/// 1000; `KiB`, `MiB`, `GiB`, `TiB` for powers of 1024), e.g. `6GB`, `7.5G`,
/// `8GiB`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 6GB, 7.5G, 8GiB)"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" if num.contains('.') => {
            return Err(format!(
                "`{s}` is a fraction of a byte: give a unit (e.g. {num}GB)"
            ));
        }
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use B, K, M, G, T or KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is not a usable memory size"));
    }
    Ok(bytes as u64)
}

/// `bytes` for people: bytes below 1 MB, MB below 1 GB, else GB with two
/// decimals (one from 10 GB), so that a need and a limit a few MB apart read
/// differently.
pub fn gb(bytes: u64) -> String {
    let gb = bytes as f64 / 1e9;
    if bytes < 1_000 {
        format!("{bytes} bytes")
    } else if bytes < 1_000_000 {
        format!("{:.0} KB", bytes as f64 / 1e3)
    } else if bytes < 1_000_000_000 {
        format!("{:.0} MB", bytes as f64 / 1e6)
    } else if gb < 10.0 {
        format!("{gb:.2} GB")
    } else {
        format!("{gb:.1} GB")
    }
}

/// `need` and `have` as [`gb`] writes them, or in bytes where that rounds
/// them to the same text (a refusal must not read "412 MB, but 412 MB").
pub fn gb_apart(need: u64, have: u64) -> (String, String) {
    let (a, b) = (gb(need), gb(have));
    if a == b && need != have {
        (format!("{need} bytes"), format!("{have} bytes"))
    } else {
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `files` (path under `root`, content) and returns `root`.
    fn tree(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("janus-cgroup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, content) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        root
    }

    #[test]
    fn cgroup_limits_less_their_use_bound_the_memory() {
        /// (name, files under the root, what they leave)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<u64>);
        let cases: [Case; 4] = [
            // v2: the tightest of the cgroup and its ancestors; reclaimable
            // file pages are not counted as used; "max" is no limit.
            (
                "v2",
                &[
                    ("proc", "0::/a/b\n"),
                    ("fs/cgroup.controllers", "memory"),
                    ("fs/a/memory.max", "max\n"),
                    ("fs/a/b/memory.max", "1000000\n"),
                    ("fs/a/b/memory.current", "600000\n"),
                    ("fs/a/b/memory.stat", "anon 1\ninactive_file 100000\n"),
                ],
                Some(500_000),
            ),
            // v1 under memory/; a limit near 2^63 is none.
            (
                "v1",
                &[
                    ("proc", "5:cpu:/\n4:memory:/x\n0::/\n"),
                    ("fs/memory/memory.limit_in_bytes", "9223372036854771712\n"),
                    ("fs/memory/x/memory.limit_in_bytes", "2000000\n"),
                    ("fs/memory/x/memory.usage_in_bytes", "500000\n"),
                ],
                Some(1_500_000),
            ),
            // Inside a container the cgroup's own directory is the mount's root.
            (
                "v1-namespaced",
                &[
                    ("proc", "4:memory:/docker/abc\n"),
                    ("fs/memory/memory.limit_in_bytes", "3000000\n"),
                    ("fs/memory/memory.usage_in_bytes", "1000000\n"),
                ],
                Some(2_000_000),
            ),
            (
                "none",
                &[
                    ("proc", "4:memory:/\n"),
                    ("fs/memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ],
                None,
            ),
        ];
        for (name, files, want) in cases {
            let root = tree(name, files);
            assert_eq!(
                cgroup_available(&root.join("proc"), &root.join("fs")),
                want,
                "{name}"
            );
            let _ = std::fs::remove_dir_all(root);
        }
    }

    #[test]
    fn close_sizes_are_written_apart() {
        assert_eq!(
            gb_apart(412_400_000, 412_100_000),
            ("412400000 bytes".to_string(), "412100000 bytes".to_string())
        );
        assert_eq!(
            gb_apart(5_000_000_000, 412_100_000),
            ("5.00 GB".to_string(), "412 MB".to_string())
        );
    }

    #[test]
    fn sizes_read_apart_at_every_scale() {
        assert_eq!(gb(999), "999 bytes");
        // (the estimate read "15 MB weights + 801792 bytes per image")
        assert_eq!(gb(801_792), "802 KB");
        assert_eq!(gb(412_300_000), "412 MB");
        assert_eq!(gb(400_000_000), "400 MB");
        assert_eq!(gb(1_234_000_000), "1.23 GB");
        assert_eq!(gb(15_040_000_000), "15.0 GB");
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("6GB"), Ok(6_000_000_000));
        assert_eq!(parse_size("7.5G"), Ok(7_500_000_000));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in [
            "", "G", "six GB", "5XB", "0", "-1G", "1e400G", "1.5", "7.5B",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images_within_is_the_largest_count_that_fits() {
        let m = GenerationMemory {
            weights: 1000,
            per_image: 100,
            per_decoded_image: 30,
            fixed: 50,
        };
        assert_eq!(m.need(3), 1000 + 50 + 300);
        assert_eq!(m.images_within(1349, 16), 2);
        assert_eq!(m.images_within(1350, 16), 3);
        assert_eq!(m.images_within(1150, 16), 1);
        assert_eq!(m.images_within(1149, 16), 0);
        assert_eq!(m.images_within(u64::MAX, 16), 16);
        // Decoding dominates when it needs more per image than generating.
        let d = GenerationMemory {
            per_decoded_image: 400,
            ..m
        };
        assert_eq!(d.need(2), 1000 + 50 + 800);
        assert_eq!(d.need(10), 1000 + 50 + 8 * 400);
    }
}
