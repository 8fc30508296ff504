//! Shared helpers of the parity tests: where the reference data lives, and the
//! golden tensors with their tolerances from `golden.json`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use janus_checkpoint::{Checkpoint, StoredDType, TensorInfo};
use serde_json::Value;

/// The backend the tests run on: the CPU (burn-flex), or wgpu with the `wgpu` feature.
#[cfg(not(feature = "wgpu"))]
pub type TestBackend = burn::backend::Flex;
/// The backend the tests run on: the CPU (burn-flex), or wgpu with the `wgpu` feature.
#[cfg(feature = "wgpu")]
pub type TestBackend = burn::backend::Wgpu;

/// Folder of the tiny reference checkpoint: `$JANUS_TESTDATA`, or
/// `<workspace>/../shared/testdata/janus-tiny`. Panics with the places looked at.
pub fn testdata_dir() -> PathBuf {
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/janus-tiny");
    let dir = std::env::var_os("JANUS_TESTDATA").map_or(default, PathBuf::from);
    assert!(
        dir.join("golden.json").is_file(),
        "reference test data not found at {} (set JANUS_TESTDATA to the janus-tiny folder, \
         or check out `shared/` next to the workspace)",
        dir.display()
    );
    dir
}

/// A copy of the tiny checkpoint's files in a fresh temporary directory
/// (`name` keeps tests apart), for a test that edits one of them.
pub fn tiny_copy(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("janus-tiny-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(testdata_dir()).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// Appends `n` special tokens `<|extra_i|>` to `dir/tokenizer.json` (the
/// tokenizer numbers them after its last id) and returns their strings.
pub fn add_special_tokens(dir: &Path, n: usize) -> Vec<String> {
    let path = dir.join("tokenizer.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let added = json["added_tokens"].as_array_mut().unwrap();
    let next = added.iter().filter_map(|t| t["id"].as_u64()).max().unwrap() + 1;
    let tokens: Vec<String> = (0..n).map(|i| format!("<|extra_{i}|>")).collect();
    for (i, content) in tokens.iter().enumerate() {
        added.push(serde_json::json!({
            "id": next + i as u64, "content": content, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true,
        }));
    }
    std::fs::write(&path, json.to_string()).unwrap();
    tokens
}

/// Folder of the real checkpoints' key manifests.
pub fn manifests_dir() -> PathBuf {
    let dir = testdata_dir().join("../checkpoint-manifests");
    assert!(
        dir.join("index.json").is_file(),
        "checkpoint manifests not found at {}",
        dir.display()
    );
    dir
}

/// How close a result must be to its golden value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// Integer equality.
    Exact,
    /// `|got - want| <= abs + rel * |want|` elementwise.
    Close { abs: f64, rel: f64 },
    /// Images: at most `max_abs_diff` levels off, on at most `max_fraction` of the values.
    Pixels {
        max_abs_diff: f64,
        max_fraction: f64,
    },
}

/// The golden outputs: `golden.json` plus `golden.safetensors`.
pub struct Golden {
    /// The test data folder.
    pub dir: PathBuf,
    /// `golden.json`.
    pub json: Value,
    tensors: Checkpoint,
}

impl Golden {
    /// Loads the golden data from [`testdata_dir`].
    pub fn load() -> Self {
        let dir = testdata_dir();
        let text = std::fs::read_to_string(dir.join("golden.json")).expect("read golden.json");
        let json = serde_json::from_str(&text).expect("golden.json is JSON");
        let tensors =
            Checkpoint::open(dir.join("golden.safetensors")).expect("open golden.safetensors");
        Self { dir, json, tensors }
    }

    /// The JSON value at a dotted path, e.g. `tokenizer.special_ids.eos`.
    pub fn at(&self, path: &str) -> &Value {
        path.split('.').fold(&self.json, |v, k| {
            v.get(k)
                .unwrap_or_else(|| panic!("golden.json has no `{path}` (at `{k}`)"))
        })
    }

    /// An integer at a dotted path.
    pub fn int(&self, path: &str) -> i64 {
        self.at(path)
            .as_i64()
            .unwrap_or_else(|| panic!("`{path}` is not an integer"))
    }

    /// The shape of a golden tensor.
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors
            .info(name)
            .unwrap_or_else(|| panic!("no golden tensor `{name}`"))
            .shape
            .clone()
    }

    /// A float golden tensor (row-major values).
    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.tensors
            .read_f32(name)
            .unwrap_or_else(|e| panic!("golden `{name}`: {e}"))
    }

    /// A JSON list of integer lists at `path` (token or code rows).
    pub fn id_rows(&self, path: &str) -> Vec<Vec<u32>> {
        let rows = self.at(path).as_array();
        rows.unwrap_or_else(|| panic!("golden `{path}` is not a list"))
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap_or_else(|| panic!("golden `{path}` holds a non-list"))
                    .iter()
                    .map(|x| x.as_u64().expect("an id") as u32)
                    .collect()
            })
            .collect()
    }

    /// An integer golden tensor.
    pub fn ints(&self, name: &str) -> Vec<i64> {
        self.tensors
            .read_ints(name)
            .unwrap_or_else(|e| panic!("golden `{name}`: {e}"))
    }

    /// A float golden tensor on the test device.
    pub fn tensor<const D: usize>(&self, name: &str) -> Tensor<TestBackend, D> {
        let shape: [usize; D] = self.shape(name).try_into().expect("rank");
        Tensor::from_data(
            burn::tensor::TensorData::new(self.f32(name), shape),
            &Default::default(),
        )
    }

    /// The tolerance `golden.json` states for `name`.
    pub fn tolerance(&self, name: &str) -> Tolerance {
        let t = &self.at("tensors")[name]["tolerance"];
        if t.as_str() == Some("exact") {
            return Tolerance::Exact;
        }
        if let Some(d) = t.get("max_abs_diff") {
            return Tolerance::Pixels {
                max_abs_diff: d.as_f64().unwrap(),
                max_fraction: t["max_fraction_differing"].as_f64().unwrap(),
            };
        }
        match (
            t.get("abs").and_then(Value::as_f64),
            t.get("rel").and_then(Value::as_f64),
        ) {
            (Some(abs), rel) => Tolerance::Close {
                abs,
                rel: rel.unwrap_or(0.0),
            },
            _ => panic!("golden tensor `{name}` has no usable tolerance: {t}"),
        }
    }

    /// Asserts `got` (row-major, `shape`) matches golden `name` within its tolerance.
    /// `range` selects a slice of the golden values (for per-step comparisons).
    pub fn assert_close_slice(&self, name: &str, want: &[f32], got: &[f32], what: &str) {
        let Tolerance::Close { abs, rel } = self.tolerance(name) else {
            panic!("`{name}` is not a float tensor with an abs/rel tolerance");
        };
        assert_eq!(
            got.len(),
            want.len(),
            "{what}: {} values, golden `{name}` has {}",
            got.len(),
            want.len()
        );
        let mut worst = (0.0f64, 0usize);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (*g as f64, *w as f64);
            let excess = if g.is_nan() {
                f64::INFINITY
            } else {
                (g - w).abs() - (abs + rel * w.abs())
            };
            if excess > worst.0 {
                worst = (excess, i);
            }
        }
        let (excess, i) = worst;
        assert!(
            excess <= 0.0,
            "{what}: golden `{name}` differs at flat index {i}: got {}, want {} (tolerance abs {abs} rel {rel})",
            got[i],
            want[i]
        );
    }

    /// Asserts decoded `u8` pixels match golden `name` within its pixel tolerance
    /// (at most `max_abs_diff` levels off, on at most `max_fraction` of the values).
    pub fn assert_pixels(&self, name: &str, got: &[u8]) {
        let want = self.ints(name);
        let Tolerance::Pixels {
            max_abs_diff,
            max_fraction,
        } = self.tolerance(name)
        else {
            panic!("`{name}` has no pixel tolerance");
        };
        assert_eq!(got.len(), want.len(), "{name}");
        let mut differing = 0;
        for (a, b) in got.iter().zip(&want) {
            let d = (*a as i64 - b).abs() as f64;
            assert!(d <= max_abs_diff, "{name}: a pixel is {d} levels off");
            differing += (d > 0.0) as usize;
        }
        assert!(
            differing as f64 <= max_fraction * want.len() as f64,
            "{name}: {differing} of {} values differ",
            want.len()
        );
    }

    /// Asserts a whole golden float tensor matches `got` with the given shape.
    pub fn assert_close(&self, name: &str, got: &[f32], shape: &[usize]) {
        assert_eq!(shape, self.shape(name).as_slice(), "shape of `{name}`");
        self.assert_close_slice(name, &self.f32(name), got, name);
    }
}

/// Row-major f32 values of a tensor.
pub fn values<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<f32> {
    janus_core::to_f32_vec(t)
}

/// Cosine similarity of two equally long vectors, summed in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}

/// `rms(got - want) / rms(want)`, summed in f64.
pub fn relative_rms(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "relative RMS of vectors of different lengths"
    );
    let (mut dd, mut ww) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (f64::from(*g), f64::from(*w));
        dd += (g - w) * (g - w);
        ww += w * w;
    }
    (dd / ww).sqrt()
}

/// Index of the largest value (first on ties), as HF greedy search picks.
pub use janus_pipeline::argmax;

/// The `{key, shape, dtype}` list of a checkpoint manifest.
pub fn manifest_keys(manifest: &Value) -> Vec<(String, TensorInfo)> {
    manifest["keys"]
        .as_array()
        .expect("manifest `keys`")
        .iter()
        .map(|k| {
            let shape = k["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            let dtype = StoredDType::from_safetensors_name(k["dtype"].as_str().expect("dtype"))
                .expect("known dtype");
            (
                k["key"].as_str().expect("key").to_string(),
                TensorInfo { shape, dtype },
            )
        })
        .collect()
}

/// A zip archive of uncompressed entries, as `torch.save` writes them.
pub fn stored_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = crc32(data);
        let n = name.len() as u16;
        let size = data.len() as u32;
        let offset = out.len() as u32;
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02");
        central.extend_from_slice(&[20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend_from_slice(&crc.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&n.to_le_bytes());
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    let count = entries.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// CRC-32 (IEEE), as zip and PNG use.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
