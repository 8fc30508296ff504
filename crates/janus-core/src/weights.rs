//! Turning checkpoint tensors into backend tensors, with every key accounted for.

use std::cell::RefCell;
use std::collections::BTreeSet;

use burn::prelude::*;
use burn::tensor::DType;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Key prefixes and suffixes that real checkpoints hold but inference never uses.
/// They are skipped on purpose; every other unused key is an error.
pub const KNOWN_UNUSED: [KeyPattern; 3] = [
    KeyPattern::Prefix("vision_model.vision_tower.attn_pool."),
    KeyPattern::Exact("gen_vision_model.quantize.codebook_used"),
    KeyPattern::Suffix("rotary_emb.inv_freq"),
];

/// A pattern over checkpoint keys.
#[derive(Debug, Clone, Copy)]
pub enum KeyPattern {
    /// The whole key.
    Exact(&'static str),
    /// Keys starting with this.
    Prefix(&'static str),
    /// Keys ending with this.
    Suffix(&'static str),
}

impl KeyPattern {
    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Self::Exact(s) => key == *s,
            Self::Prefix(s) => key.starts_with(s),
            Self::Suffix(s) => key.ends_with(s),
        }
    }
}

/// Hands out checkpoint tensors as backend tensors in the runtime dtype, checking
/// each key and shape, and remembering which keys were taken.
pub struct Weights<'a, B: Backend> {
    source: Source<'a>,
    device: B::Device,
    dtype: DType,
    used: RefCell<BTreeSet<String>>,
}

enum Source<'a> {
    Checkpoint(&'a Checkpoint),
    /// Seeded random values of every requested shape (benchmarks without downloads).
    Random,
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Loads from `ckpt` onto `device`, converting every float weight to `dtype`
    /// (`F32`, `F16` or `BF16`).
    pub fn new(ckpt: &'a Checkpoint, device: &B::Device, dtype: DType) -> Self {
        Self {
            source: Source::Checkpoint(ckpt),
            device: device.clone(),
            dtype,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// Hands out seeded random weights of whatever shape is asked for: N(0, 0.02)
    /// for matrices, 1 for norm scales, 0 for biases. For benchmarks at real sizes
    /// without downloads; the values mean nothing.
    pub fn random(device: &B::Device, dtype: DType, seed: u64) -> Self {
        B::seed(device, seed);
        Self {
            source: Source::Random,
            device: device.clone(),
            dtype,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// The runtime float dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The target device.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The checkpoint being read (`None` for random weights).
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self.source {
            Source::Checkpoint(c) => Some(c),
            Source::Random => None,
        }
    }

    /// Takes `key`, which must have exactly `shape`.
    ///
    /// For a data-less checkpoint ([`Checkpoint::from_shapes`]) the key and shape are
    /// checked and a one-element placeholder is returned.
    pub fn tensor<const D: usize>(&self, key: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let ckpt = match self.source {
            Source::Checkpoint(c) => c,
            Source::Random => return Ok(self.random_tensor(key, shape)),
        };
        let info = ckpt.info(key).ok_or_else(|| Error::MissingTensor {
            path: ckpt.path().to_path_buf(),
            key: key.into(),
            expected: shape.to_vec(),
        })?;
        if info.shape != shape {
            return Err(Error::ShapeMismatch {
                path: ckpt.file_of(key).to_path_buf(),
                key: key.into(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        self.used.borrow_mut().insert(key.to_string());
        if !ckpt.has_data() {
            return Ok(Tensor::zeros([1; D], (&self.device, self.dtype)));
        }
        let data = ckpt.read(key, self.dtype)?;
        Ok(Tensor::from_data(data, (&self.device, self.dtype)))
    }

    fn random_tensor<const D: usize>(&self, key: &str, shape: [usize; D]) -> Tensor<B, D> {
        let opts = (&self.device, self.dtype);
        let is_norm = key.contains("norm") && key.ends_with(".weight");
        if key.ends_with(".bias") {
            Tensor::zeros(shape, opts)
        } else if is_norm {
            Tensor::ones(shape, opts)
        } else {
            Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 0.02), opts)
        }
    }

    /// Checks that every key of the checkpoint was taken, apart from
    /// [`KNOWN_UNUSED`] and `also_unused`. Returns the skipped keys.
    pub fn finish(self, also_unused: &[KeyPattern]) -> Result<Vec<String>> {
        let Source::Checkpoint(ckpt) = self.source else {
            return Ok(Vec::new());
        };
        let used = self.used.into_inner();
        let mut skipped = Vec::new();
        let mut unexpected = Vec::new();
        for key in ckpt.keys().filter(|k| !used.contains(*k)) {
            if KNOWN_UNUSED
                .iter()
                .chain(also_unused)
                .any(|p| p.matches(key))
            {
                skipped.push(key.to_string());
            } else {
                unexpected.push(key.to_string());
            }
        }
        if !unexpected.is_empty() {
            return Err(Error::UnexpectedTensors {
                path: ckpt.path().to_path_buf(),
                keys: unexpected,
            });
        }
        Ok(skipped)
    }
}
