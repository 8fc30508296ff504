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
    ckpt: &'a Checkpoint,
    device: B::Device,
    dtype: DType,
    used: RefCell<BTreeSet<String>>,
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Loads from `ckpt` onto `device`, converting every float weight to `dtype`
    /// (`F32`, `F16` or `BF16`).
    pub fn new(ckpt: &'a Checkpoint, device: &B::Device, dtype: DType) -> Self {
        Self {
            ckpt,
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

    /// The checkpoint being read.
    pub fn checkpoint(&self) -> &Checkpoint {
        self.ckpt
    }

    /// Whether the checkpoint has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.ckpt.info(key).is_some()
    }

    /// Takes `key`, which must have exactly `shape`.
    ///
    /// For a data-less checkpoint ([`Checkpoint::from_shapes`]) the key and shape are
    /// checked and a one-element placeholder is returned.
    pub fn tensor<const D: usize>(&self, key: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let info = self.ckpt.info(key).ok_or_else(|| Error::MissingTensor {
            path: self.ckpt.path().to_path_buf(),
            key: key.into(),
            expected: shape.to_vec(),
        })?;
        if info.shape != shape {
            return Err(Error::ShapeMismatch {
                path: self.ckpt.file_of(key).to_path_buf(),
                key: key.into(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        self.used.borrow_mut().insert(key.to_string());
        if !self.ckpt.has_data() {
            return Ok(Tensor::zeros([1; D], (&self.device, self.dtype)));
        }
        let data = self.ckpt.read(key, self.dtype)?;
        Ok(Tensor::from_data(data, (&self.device, self.dtype)))
    }

    /// Checks that every key of the checkpoint was taken, apart from
    /// [`KNOWN_UNUSED`] and `also_unused`. Returns the skipped keys.
    pub fn finish(self, also_unused: &[KeyPattern]) -> Result<Vec<String>> {
        let used = self.used.into_inner();
        let mut skipped = Vec::new();
        let mut unexpected = Vec::new();
        for key in self.ckpt.keys().filter(|k| !used.contains(*k)) {
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
                path: self.ckpt.path().to_path_buf(),
                keys: unexpected,
            });
        }
        Ok(skipped)
    }
}
