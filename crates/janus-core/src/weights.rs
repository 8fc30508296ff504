//! Turning checkpoint tensors into backend tensors, with every key accounted for.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use janus_checkpoint::Checkpoint;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::quant::{Precision, QuantFormat, QuantMatrix};

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
///
/// A `Weights` is scoped to a key prefix: [`Weights::pp`] gives a view one level
/// down (`w.pp("layers").pp(3).pp("self_attn")` reads `layers.3.self_attn.*`); all
/// views share one record of the keys taken, which [`Weights::finish`] checks.
pub struct Weights<'a, B: Backend> {
    shared: Rc<Shared<'a, B>>,
    prefix: String,
    /// The dtype this view hands out, when not the runtime one ([`Weights::with_dtype`]).
    dtype: Option<DType>,
}

impl<B: Backend> Clone for Weights<'_, B> {
    fn clone(&self) -> Self {
        Self {
            shared: Rc::clone(&self.shared),
            prefix: self.prefix.clone(),
            dtype: self.dtype,
        }
    }
}

struct Shared<'a, B: Backend> {
    source: Source<'a>,
    device: B::Device,
    dtype: DType,
    quant: Option<QuantFormat>,
    /// The stored block format of quantized matrices taken as they are.
    stored_quant: Cell<Option<QuantFormat>>,
    /// Bytes of the tensors and matrices handed out (as held).
    bytes: Cell<u64>,
    /// Matrices handed out in a block format.
    quantized: Cell<usize>,
    used: RefCell<BTreeSet<String>>,
    quantizable: RefCell<BTreeSet<String>>,
}

enum Source<'a> {
    Checkpoint(&'a Checkpoint),
    /// Seeded random values of every requested shape (benchmarks without downloads).
    Random(u64),
}

impl<'a, B: Backend> Weights<'a, B> {
    /// Loads from `ckpt` onto `device`, converting every float weight to the
    /// precision's dtype (`F32`, `F16` or `BF16`); with a quantized format, the
    /// layers that take one ([`crate::nn::Linear::load_quantizable`]) are
    /// quantized as they are read.
    pub fn new(ckpt: &'a Checkpoint, device: &B::Device, precision: impl Into<Precision>) -> Self {
        Self::with_source(Source::Checkpoint(ckpt), device, precision.into())
    }

    fn with_source(source: Source<'a>, device: &B::Device, precision: Precision) -> Self {
        Self {
            shared: Rc::new(Shared {
                source,
                device: device.clone(),
                dtype: precision.dtype,
                quant: precision.quant,
                stored_quant: Cell::new(None),
                bytes: Cell::new(0),
                quantized: Cell::new(0),
                used: RefCell::new(BTreeSet::new()),
                quantizable: RefCell::new(BTreeSet::new()),
            }),
            prefix: String::new(),
            dtype: None,
        }
    }

    /// The same weights scoped one level down: keys are read under `{prefix}.{name}`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            shared: Rc::clone(&self.shared),
            prefix: self.key(&name.to_string()),
            dtype: self.dtype,
        }
    }

    /// The same view handing out its float tensors (and those of every view
    /// below it) in `dtype` instead of the runtime dtype: a module kept in f32
    /// while the rest is 16-bit. Keys taken are recorded as for any view.
    pub fn with_dtype(&self, dtype: DType) -> Self {
        Self {
            dtype: Some(dtype),
            ..self.clone()
        }
    }

    /// The full key of `name` under this view's prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Takes every checkpoint key under `name` without reading it: weights a
    /// model knowingly leaves out (the ViT blocks past the selected layer).
    pub fn skip(&self, name: impl std::fmt::Display) {
        let Source::Checkpoint(ckpt) = self.shared.source else {
            return;
        };
        let under = format!("{}.", self.key(&name.to_string()));
        self.shared.used.borrow_mut().extend(
            ckpt.keys()
                .filter(|k| k.starts_with(&under))
                .map(str::to_string),
        );
    }

    /// This view's prefix (empty at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hands out seeded random weights of whatever shape is asked for: N(0, 0.02)
    /// for matrices, 1 for norm scales, 0 for biases. For benchmarks at real sizes
    /// without downloads; the values mean nothing.
    pub fn random(device: &B::Device, precision: impl Into<Precision>, seed: u64) -> Self {
        Self::with_source(Source::Random(seed), device, precision.into())
    }

    /// The float dtype this view hands out: the runtime dtype unless
    /// [`Weights::with_dtype`] changed it.
    pub fn dtype(&self) -> DType {
        self.dtype.unwrap_or(self.shared.dtype)
    }

    /// The quantized format for layers that take one, if any.
    pub fn quant(&self) -> Option<QuantFormat> {
        self.shared.quant
    }

    /// The precision (dtype and quantized format): the requested one, or, when
    /// none was requested, the format of the quantized matrices the checkpoint
    /// stores (which are taken as they are).
    pub fn precision(&self) -> Precision {
        Precision {
            dtype: self.shared.dtype,
            quant: self.shared.quant.or(self.shared.stored_quant.get()),
        }
    }

    /// The block format `name` is stored in, when the checkpoint holds it
    /// quantized ([`QuantFormat::plane_keys`]).
    pub fn stored_quant(&self, name: &str) -> Option<QuantFormat> {
        let ckpt = self.checkpoint()?;
        let key = self.key(name);
        QuantFormat::ALL
            .into_iter()
            .find(|f| ckpt.info(&f.plane_keys(&key).0).is_some())
    }

    /// The format a quantizable matrix `name` is to be held in: the requested
    /// one, else the one the checkpoint stores it in.
    pub fn quant_for(&self, name: &str) -> Option<QuantFormat> {
        self.shared.quant.or_else(|| self.stored_quant(name))
    }

    /// Records `name` as a matrix that is quantized when a format is asked for
    /// (what `janus convert --quant` quantizes).
    pub fn mark_quantizable(&self, name: &str) {
        self.shared.quantizable.borrow_mut().insert(self.key(name));
    }

    /// The full keys recorded by [`Weights::mark_quantizable`].
    pub fn quantizable_keys(&self) -> BTreeSet<String> {
        self.shared.quantizable.borrow().clone()
    }

    /// Whether the source has values (`false` for a shapes-only checkpoint).
    pub fn has_data(&self) -> bool {
        match self.shared.source {
            Source::Checkpoint(c) => c.has_data(),
            Source::Random(_) => true,
        }
    }

    /// The target device.
    pub fn device(&self) -> &B::Device {
        &self.shared.device
    }

    /// The checkpoint being read (`None` for random weights).
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        match self.shared.source {
            Source::Checkpoint(c) => Some(c),
            Source::Random(_) => None,
        }
    }

    /// Takes `name` (under this view's prefix), which must have exactly `shape`.
    ///
    /// For a data-less checkpoint ([`Checkpoint::from_shapes`]) the key and shape are
    /// checked and a one-element placeholder is returned.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let t = self.take_tensor(name, shape)?;
        let numel = shape.iter().fold(1usize, |n, d| n.saturating_mul(*d));
        self.count(numel.saturating_mul(self.dtype().size()));
        Ok(t)
    }

    /// Bytes of every tensor and matrix taken so far, as held on the device:
    /// what the model's weights occupy (also for a shapes-only checkpoint,
    /// which then gives the estimate before loading).
    pub fn bytes_taken(&self) -> u64 {
        self.shared.bytes.get()
    }

    fn count(&self, bytes: usize) {
        let b = &self.shared.bytes;
        b.set(b.get().saturating_add(bytes as u64));
    }

    /// Checks `name` `[rows, cols]` as [`Weights::quantized`] would take it
    /// in `format`, without reading values (for a shapes-only checkpoint), and
    /// counts its quantized size.
    pub fn check_quantized(
        &self,
        name: &str,
        [rows, cols]: [usize; 2],
        format: QuantFormat,
    ) -> Result<()> {
        let key = self.key(name);
        if let Source::Checkpoint(ckpt) = self.shared.source {
            match self.stored_quant(name) {
                Some(stored) => {
                    self.check_planes(ckpt, &key, [rows, cols], stored)?;
                    if stored == format {
                        self.shared.stored_quant.set(Some(stored));
                    }
                }
                None => self.check(ckpt, &key, &[rows, cols])?,
            }
        }
        let blocks = rows.saturating_mul(cols / crate::quant::BLOCK);
        self.count(blocks.saturating_mul(format.block_bytes() + 2));
        self.count_quantized();
        Ok(())
    }

    fn count_quantized(&self) {
        let n = &self.shared.quantized;
        n.set(n.get() + 1);
    }

    fn take_tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let key = self.key(name);
        let key = key.as_str();
        let (device, dtype) = (&self.shared.device, self.dtype());
        let ckpt = match self.shared.source {
            Source::Checkpoint(c) => c,
            Source::Random(seed) => return Ok(self.random_tensor(key, shape, seed)),
        };
        if let (None, [rows, cols], Some(format)) =
            (ckpt.info(key), &shape[..], self.stored_quant(name))
        {
            // A quantized checkpoint's matrix asked for in full precision.
            if !ckpt.has_data() {
                self.check_planes(ckpt, key, [*rows, *cols], format)?;
                return Ok(Tensor::zeros([1; D], (device, dtype)));
            }
            let q = self.read_planes(ckpt, key, [*rows, *cols], format)?;
            let mut values = vec![0f32; rows * cols];
            q.dequantize_rows(0..*rows, &mut values);
            let data = TensorData::new(values, shape.to_vec());
            return Ok(Tensor::from_data(data, (device, dtype)));
        }
        self.check(ckpt, key, &shape)?;
        if !ckpt.has_data() {
            return Ok(Tensor::zeros([1; D], (device, dtype)));
        }
        let shape = shape.to_vec();
        let data = match dtype {
            DType::F32 => TensorData::new(ckpt.read::<f32>(key)?, shape),
            DType::F16 => TensorData::new(ckpt.read::<f16>(key)?, shape),
            DType::BF16 => TensorData::new(ckpt.read::<bf16>(key)?, shape),
            other => {
                return Err(Error::Invalid(format!(
                    "runtime dtype {other:?} is not supported for weights (use f32, f16 or bf16)"
                )));
            }
        };
        Ok(Tensor::from_data(data, (device, dtype)))
    }

    /// Checks that `key` exists with exactly `shape` and records it as taken.
    fn check(&self, ckpt: &Checkpoint, key: &str, shape: &[usize]) -> Result<()> {
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
        self.shared.used.borrow_mut().insert(key.to_string());
        Ok(())
    }

    /// Checks the two planes of the quantized matrix `key` `[rows, cols]`
    /// (shapes and dtypes) and records them as taken.
    fn check_planes(
        &self,
        ckpt: &Checkpoint,
        key: &str,
        [rows, cols]: [usize; 2],
        format: QuantFormat,
    ) -> Result<()> {
        if !cols.is_multiple_of(crate::quant::BLOCK) {
            return Err(Error::Invalid(format!(
                "{}: `{key}` is stored as {format}, but its rows of {cols} weights are not \
                 a multiple of {} (a damaged or foreign checkpoint)",
                ckpt.file_of(key).display(),
                crate::quant::BLOCK
            )));
        }
        let (qs, scales) = format.plane_keys(key);
        self.check(ckpt, &qs, &[rows, format.qs_cols(cols)])?;
        self.check(ckpt, &scales, &[rows, cols / crate::quant::BLOCK])?;
        let info = ckpt.info(&qs).expect("checked");
        if info.dtype != format.stored_dtype() {
            return Err(Error::Invalid(format!(
                "{}: `{qs}` is {}, but {format} values are stored as {}",
                ckpt.file_of(&qs).display(),
                info.dtype,
                format.stored_dtype()
            )));
        }
        Ok(())
    }

    /// Reads the quantized matrix `key` `[rows, cols]` from its two planes.
    fn read_planes(
        &self,
        ckpt: &Checkpoint,
        key: &str,
        shape: [usize; 2],
        format: QuantFormat,
    ) -> Result<QuantMatrix> {
        self.check_planes(ckpt, key, shape, format)?;
        let (qs_key, scales_key) = format.plane_keys(key);
        let qs = ckpt.read_bytes(&qs_key, format.stored_dtype())?;
        let scales = ckpt.read::<f16>(&scales_key)?;
        if let Some(i) = scales.iter().position(|d| !d.is_finite()) {
            return Err(Error::Invalid(format!(
                "{}: `{scales_key}` holds a non-finite scale ({}) at block {i} (a damaged checkpoint)",
                ckpt.file_of(&scales_key).display(),
                scales[i]
            )));
        }
        QuantMatrix::from_parts(format, shape[0], shape[1], scales, qs)
    }

    /// Takes the matrix `name` `[rows, cols]` quantized to `format`, streaming:
    /// the full-precision values are converted a few MB at a time, never all at
    /// once. Random weights give the same values [`Weights::tensor`] would.
    pub fn quantized(
        &self,
        name: &str,
        shape: [usize; 2],
        format: QuantFormat,
    ) -> Result<QuantMatrix> {
        let q = self.take_quantized(name, shape, format)?;
        self.count(q.bytes());
        self.count_quantized();
        Ok(q)
    }

    /// How many matrices were handed out in a block format (none where no
    /// matrix's width is a multiple of the block: the model then runs in
    /// its float dtype).
    pub fn quantized_matrices(&self) -> usize {
        self.shared.quantized.get()
    }

    fn take_quantized(
        &self,
        name: &str,
        [rows, cols]: [usize; 2],
        format: QuantFormat,
    ) -> Result<QuantMatrix> {
        let key = self.key(name);
        // Whole rows per chunk (and for random weights whole streams of the
        // generator, so the values are those of `Weights::tensor`).
        let rows_chunk = |unit: usize| unit * (STREAM_BYTES / 4 / unit).max(1);
        if let (Source::Checkpoint(ckpt), Some(stored)) =
            (&self.shared.source, self.stored_quant(name))
        {
            let from = self.read_planes(ckpt, &key, [rows, cols], stored)?;
            if stored == format {
                self.shared.stored_quant.set(Some(stored));
                return Ok(from);
            }
            // Another format: re-quantize the stored values a chunk at a time.
            let mut q = QuantMatrix::empty(format, rows, cols)?;
            let chunk = rows_chunk(cols) / cols;
            let mut buf = vec![0f32; chunk.min(rows) * cols];
            for row0 in (0..rows).step_by(chunk) {
                let n = chunk.min(rows - row0);
                from.dequantize_rows(row0..row0 + n, &mut buf[..n * cols]);
                q.quantize_rows(row0, &buf[..n * cols]);
            }
            return Ok(q);
        }
        let mut q = QuantMatrix::empty(format, rows, cols)?;
        match self.shared.source {
            Source::Random(seed) => {
                let chunk = rows_chunk(cols / gcd(cols, RANDOM_CHUNK) * RANDOM_CHUNK);
                let seed = seed ^ fnv1a(&key);
                let mut buf = vec![0f32; chunk.min(rows * cols)];
                for start in (0..rows * cols).step_by(chunk) {
                    let part = &mut buf[..chunk.min(rows * cols - start)];
                    fill_random_normal(seed, start, part, 0.02);
                    q.quantize_rows(start / cols, part);
                }
            }
            Source::Checkpoint(ckpt) => {
                self.check(ckpt, &key, &[rows, cols])?;
                ckpt.for_each_f32_chunk(&key, rows_chunk(cols), |start, values| {
                    q.quantize_rows(start / cols, values);
                    Ok::<_, Error>(())
                })?;
            }
        }
        Ok(q)
    }

    fn random_tensor<const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        seed: u64,
    ) -> Tensor<B, D> {
        let opts = (&self.shared.device, self.dtype());
        let is_norm = key.contains("norm") && key.ends_with(".weight");
        if key.ends_with(".bias") {
            Tensor::zeros(shape, opts)
        } else if is_norm {
            Tensor::ones(shape, opts)
        } else {
            let values = random_normal(seed ^ fnv1a(key), shape.iter().product(), 0.02);
            Tensor::from_data(TensorData::new(values, shape), opts)
        }
    }

    /// Checks that every key of the checkpoint was taken, apart from those
    /// matching `unused` (keys a model knowingly ignores). Returns the skipped keys.
    pub fn finish(&self, unused: &[KeyPattern]) -> Result<Vec<String>> {
        let Source::Checkpoint(ckpt) = self.shared.source else {
            return Ok(Vec::new());
        };
        let used = self.shared.used.borrow();
        let mut skipped = Vec::new();
        let mut unexpected = Vec::new();
        for key in ckpt.keys().filter(|k| !used.contains(*k)) {
            if unused.iter().any(|p| p.matches(key)) {
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

/// FNV-1a hash of a key: gives every random tensor its own stream.
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64 step.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Values per stream of the random generator.
const RANDOM_CHUNK: usize = 1 << 16;

/// Bytes of f32 values [`Weights::quantized`] converts at a time.
const STREAM_BYTES: usize = 16 << 20;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `n` values from N(0, std²), filled in parallel chunks that each have their own
/// seeded stream, so the values do not depend on the thread count.
fn random_normal(seed: u64, n: usize, std: f32) -> Vec<f32> {
    let mut out = vec![0f32; n];
    fill_random_normal(seed, 0, &mut out, std);
    out
}

/// Values `offset..offset + out.len()` of [`random_normal`]'s sequence;
/// `offset` must be a multiple of [`RANDOM_CHUNK`].
fn fill_random_normal(seed: u64, offset: usize, out: &mut [f32], std: f32) {
    debug_assert!(offset.is_multiple_of(RANDOM_CHUNK));
    let first = offset / RANDOM_CHUNK;
    out.par_chunks_mut(RANDOM_CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let i = first + i;
            let mut state = seed ^ (i as u64).wrapping_mul(0xd134_2543_de82_ef95);
            for pair in chunk.chunks_mut(2) {
                // Box-Muller from two uniforms in (0, 1].
                let u1 = ((splitmix(&mut state) >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
                let u2 = (splitmix(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
                let r = std * (-2.0 * u1.ln()).sqrt();
                let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
                pair[0] = r * c;
                if let Some(second) = pair.get_mut(1) {
                    *second = r * s;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_random_matrices_quantize_the_values_tensor_gives() {
        use burn::backend::Flex;
        let w = Weights::<Flex>::random(&Default::default(), DType::F32, 7);
        // 130 x 32768 spans two streaming chunks; 100 x 96 one with a ragged
        // generator stream.
        for shape in [[130, 32768], [100, 96]] {
            let dense = crate::to_f32_vec(w.tensor::<2>("m.weight", shape).unwrap());
            let want =
                QuantMatrix::quantize(QuantFormat::Q4_0, shape[0], shape[1], &dense).unwrap();
            let got = w.quantized("m.weight", shape, QuantFormat::Q4_0).unwrap();
            assert!(got == want, "{shape:?}");
        }
    }

    #[test]
    fn a_view_with_its_own_dtype_hands_out_and_counts_that_dtype() {
        use burn::backend::Flex;
        let w = Weights::<Flex>::random(&Default::default(), DType::F16, 7);
        let f32_view = w.pp("vq").with_dtype(DType::F32);
        let below = f32_view.pp("decoder");
        assert_eq!(below.dtype(), DType::F32);
        assert_eq!(
            below.tensor("conv.weight", [4, 8]).unwrap().dtype(),
            DType::F32
        );
        assert_eq!(w.bytes_taken(), 4 * 32);
        // The rest keeps the runtime dtype; both views share one record.
        assert_eq!(
            w.pp("llm").tensor("x.weight", [4, 8]).unwrap().dtype(),
            DType::F16
        );
        assert_eq!(w.bytes_taken(), 4 * 32 + 2 * 32);
    }

    #[test]
    fn random_normal_is_seeded_and_normal() {
        let a = random_normal(7, 200_001, 0.02);
        assert_eq!(a, random_normal(7, 200_001, 0.02));
        assert_ne!(a[..100], random_normal(8, 100, 0.02)[..]);
        let n = a.len() as f64;
        let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 2e-4, "mean {mean}");
        assert!((std - 0.02).abs() < 2e-4, "std {std}");
        let beyond_2sd = a.iter().filter(|x| x.abs() > 0.04).count() as f64 / n;
        assert!(
            (beyond_2sd - 0.0455).abs() < 3e-3,
            "P(|x| > 2 sd) = {beyond_2sd}"
        );
    }
}
