//! Block-quantized weight matrices: [`QuantFormat::Q8_0`] and
//! [`QuantFormat::Q4_0`], the block formats llama.cpp made common.
//!
//! A row of `k` weights (`k` a multiple of [`BLOCK`]) is cut into blocks of 32;
//! each block keeps one f16 scale `d` and 32 small integers `q`, and a weight is
//! `d · q` (q8_0, `q` in `-127..=127`) or `d · (q - 8)` (q4_0, `q` in `0..=15`).
//! The two planes are kept apart, row-major: `scales` `[rows, k / 32]` and `qs`
//! (q8_0: one byte per weight; q4_0: 16 bytes per block, byte `t` holding weight
//! `t` in its low half and weight `t + 16` in its high half).
//!
//! ```
//! use janus_core::{QuantFormat, QuantMatrix};
//!
//! let w: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.1).sin()).collect();
//! let q = QuantMatrix::quantize(QuantFormat::Q8_0, 2, 64, &w).unwrap();
//! let mut back = vec![0f32; w.len()];
//! q.dequantize_rows(0..2, &mut back);
//! assert!(w.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-2));
//! assert_eq!(q.bytes(), 2 * 64 + 2 * 2 * 2); // one byte per weight + an f16 per block
//! ```

use std::ops::Range;

use burn::tensor::DType;
use half::f16;
use janus_checkpoint::StoredDType;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Weights per block.
pub const BLOCK: usize = 32;

/// A block-quantized weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// 32 weights as int8 with one f16 scale: 8.5 bits per weight.
    Q8_0,
    /// 32 weights as 4-bit values with one f16 scale: 4.5 bits per weight.
    Q4_0,
}

impl QuantFormat {
    /// Every format.
    pub const ALL: [Self; 2] = [Self::Q8_0, Self::Q4_0];

    /// The name flags and checkpoint metadata use (`q8_0`, `q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
        }
    }

    /// Parses [`QuantFormat::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Bytes of `qs` per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q8_0 => BLOCK,
            Self::Q4_0 => BLOCK / 2,
        }
    }

    /// How a quantized checkpoint stores the values plane: `I8` (q8_0, one
    /// weight per byte) or `U8` (q4_0, two weights per byte).
    pub fn stored_dtype(self) -> StoredDType {
        match self {
            Self::Q8_0 => StoredDType::I8,
            Self::Q4_0 => StoredDType::U8,
        }
    }

    /// Columns of the values plane of a matrix with `cols` weights per row.
    pub fn qs_cols(self, cols: usize) -> usize {
        cols / BLOCK * self.block_bytes()
    }

    /// The checkpoint keys of the two planes of the quantized matrix `key`:
    /// `{key}.{format}.qs` (values, `[rows, qs_cols]`) and
    /// `{key}.{format}.scales` (f16, `[rows, cols / 32]`).
    pub fn plane_keys(self, key: &str) -> (String, String) {
        (
            format!("{key}.{}.qs", self.name()),
            format!("{key}.{}.scales", self.name()),
        )
    }

    /// Storage bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() + 2) as f64 * 8.0 / BLOCK as f64
    }
}

impl std::fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a model's weights are held: the runtime float dtype (activations, and
/// every weight that is not quantized) and, optionally, the block format of the
/// layers that take one. A plain [`DType`] converts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precision {
    /// The float dtype.
    pub dtype: DType,
    /// The quantized format, if any.
    pub quant: Option<QuantFormat>,
}

impl Precision {
    /// `dtype` with `quant`.
    pub fn quantized(dtype: DType, quant: QuantFormat) -> Self {
        Self {
            dtype,
            quant: Some(quant),
        }
    }

    /// Bits per weight of the matrices that take a block format.
    pub fn bits_per_weight(&self) -> f64 {
        match self.quant {
            Some(q) => q.bits_per_weight(),
            None => self.dtype.size() as f64 * 8.0,
        }
    }

    /// The one-word name (`q4_0`, `f16`, ...): the block format if any, else
    /// the float dtype, as `--dtype` takes it.
    pub fn short_name(&self) -> String {
        match self.quant {
            Some(q) => q.name().to_string(),
            None => dtype_name(self.dtype),
        }
    }
}

fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "f32".to_string(),
        DType::F16 => "f16".to_string(),
        DType::BF16 => "bf16".to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl From<DType> for Precision {
    fn from(dtype: DType) -> Self {
        Self { dtype, quant: None }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dtype = dtype_name(self.dtype);
        match self.quant {
            Some(q) => write!(f, "{q} (rest {dtype})"),
            None => f.write_str(&dtype),
        }
    }
}

/// A `[rows, cols]` weight matrix in a [`QuantFormat`], in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    scales: Vec<f16>,
    qs: Vec<u8>,
}

impl QuantMatrix {
    /// Quantizes row-major `values` `[rows, cols]`; `cols` must be a multiple
    /// of [`BLOCK`]. Rows are quantized in parallel.
    pub fn quantize(format: QuantFormat, rows: usize, cols: usize, values: &[f32]) -> Result<Self> {
        let mut q = Self::empty(format, rows, cols)?;
        if values.len() != rows * cols {
            return Err(Error::Invalid(format!(
                "cannot quantize {} values as a [{rows}, {cols}] matrix",
                values.len()
            )));
        }
        q.quantize_rows(0, values);
        Ok(q)
    }

    /// A zeroed matrix to fill with [`QuantMatrix::quantize_rows`].
    pub fn empty(format: QuantFormat, rows: usize, cols: usize) -> Result<Self> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(Error::Invalid(format!(
                "{format} needs rows of a multiple of {BLOCK} weights, not {cols}"
            )));
        }
        let blocks = rows * cols / BLOCK;
        Ok(Self {
            format,
            rows,
            cols,
            scales: vec![f16::ZERO; blocks],
            qs: vec![0; blocks * format.block_bytes()],
        })
    }

    /// Quantizes whole rows `values` (a multiple of `cols` values) into rows
    /// `row0..`: lets a loader stream a large tensor a chunk at a time.
    ///
    /// # Panics
    /// If the rows do not fit (a caller bug, not user input).
    pub fn quantize_rows(&mut self, row0: usize, values: &[f32]) {
        let (cols, bb) = (self.cols, self.format.block_bytes());
        let n = values.len() / cols;
        assert!(
            values.len() == n * cols && row0 + n <= self.rows,
            "rows out of range"
        );
        let nb = cols / BLOCK;
        let scales = &mut self.scales[row0 * nb..(row0 + n) * nb];
        let qs = &mut self.qs[row0 * nb * bb..(row0 + n) * nb * bb];
        let format = self.format;
        values
            .par_chunks(BLOCK)
            .zip(scales.par_iter_mut())
            .zip(qs.par_chunks_mut(bb))
            .for_each(|((x, d), q)| *d = quantize_block(format, x, q));
    }

    /// A matrix from its planes (a quantized checkpoint); checks their sizes.
    pub fn from_parts(
        format: QuantFormat,
        rows: usize,
        cols: usize,
        scales: Vec<f16>,
        qs: Vec<u8>,
    ) -> Result<Self> {
        let blocks = rows.saturating_mul(cols) / BLOCK;
        if cols == 0
            || !cols.is_multiple_of(BLOCK)
            || blocks.checked_mul(format.block_bytes()).is_none()
            || scales.len() != blocks
            || qs.len() != blocks * format.block_bytes()
        {
            return Err(Error::Invalid(format!(
                "a [{rows}, {cols}] {format} matrix needs {blocks} scales and {} bytes of values \
                 (rows of a multiple of {BLOCK}), got {} and {}",
                blocks * format.block_bytes(),
                scales.len(),
                qs.len()
            )));
        }
        Ok(Self {
            format,
            rows,
            cols,
            scales,
            qs,
        })
    }

    /// The format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The scales, `[rows, cols / 32]`.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }

    /// The quantized values, `format.block_bytes()` per block.
    pub fn qs(&self) -> &[u8] {
        &self.qs
    }

    /// Bytes held (values and scales).
    pub fn bytes(&self) -> usize {
        self.qs.len() + 2 * self.scales.len()
    }

    /// Writes rows `rows` as f32 into `out` (`rows.len() * cols` values), in
    /// parallel.
    pub fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        par_rows(rows, self.cols, out, |rows, out| {
            self.dequantize_rows_here(rows, out)
        });
    }

    /// [`QuantMatrix::dequantize_rows`] on the calling thread.
    pub fn dequantize_rows_here(&self, rows: Range<usize>, out: &mut [f32]) {
        let (nb, bb) = (self.cols / BLOCK, self.format.block_bytes());
        let blocks = rows.start * nb..rows.end * nb;
        out[..blocks.len() * BLOCK]
            .chunks_exact_mut(BLOCK)
            .zip(&self.scales[blocks.clone()])
            .zip(self.qs[blocks.start * bb..blocks.end * bb].chunks_exact(bb))
            .for_each(|((out, d), q)| dequantize_block(self.format, d.to_f32(), q, out));
    }
}

/// Runs `f(rows, out)` over parts of `rows` (rows of `cols` values in `out`)
/// on all threads, about 64 KB of output per task.
pub(crate) fn par_rows(
    rows: Range<usize>,
    cols: usize,
    out: &mut [f32],
    f: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    let per_task = (16384 / cols).max(1);
    out[..rows.len() * cols]
        .par_chunks_mut(per_task * cols)
        .enumerate()
        .for_each(|(i, out)| {
            let r0 = rows.start + i * per_task;
            f(r0..r0 + out.len() / cols, out);
        });
}

/// Quantizes one block of 32 weights into `q`; returns its scale. Follows
/// llama.cpp's reference rounding, so the same weights give the same blocks.
fn quantize_block(format: QuantFormat, x: &[f32], q: &mut [u8]) -> f16 {
    match format {
        QuantFormat::Q8_0 => {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (q, v) in q.iter_mut().zip(x) {
                *q = (v * id).round() as i8 as u8;
            }
            f16::from_f32(d)
        }
        QuantFormat::Q4_0 => {
            // The value of largest magnitude, with its sign, maps to -8.
            let max = x
                .iter()
                .copied()
                .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let level = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
            for t in 0..BLOCK / 2 {
                q[t] = level(x[t]) | (level(x[t + BLOCK / 2]) << 4);
            }
            f16::from_f32(d)
        }
    }
}

/// The 32 weights of one block.
pub(crate) fn dequantize_block(format: QuantFormat, d: f32, q: &[u8], out: &mut [f32]) {
    match format {
        QuantFormat::Q8_0 => {
            for (o, q) in out.iter_mut().zip(q) {
                *o = d * f32::from(*q as i8);
            }
        }
        QuantFormat::Q4_0 => {
            for t in 0..BLOCK / 2 {
                out[t] = d * (f32::from(q[t] & 15) - 8.0);
                out[t + BLOCK / 2] = d * (f32::from(q[t] >> 4) - 8.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_the_reference_rounding() {
        // One q8_0 block: amax 2.54 -> d = 0.02, q = round(x / d).
        let mut x = vec![0f32; 32];
        x[0] = 2.54;
        x[1] = -1.0;
        x[2] = 0.011; // 0.55 -> rounds away from zero to 1
        let q = QuantMatrix::quantize(QuantFormat::Q8_0, 1, 32, &x).unwrap();
        assert_eq!(q.scales()[0], f16::from_f32(0.02));
        assert_eq!(&q.qs()[..4], &[127u8, (-50i8) as u8, 1, 0]);
        // One q4_0 block: the largest magnitude is -3.2 -> d = 0.4, it maps to 0.
        let mut x = vec![0f32; 32];
        x[0] = -3.2;
        x[16] = 2.0; // 2.0 / 0.4 + 8.5 = 13.5 -> 13
        x[1] = 0.3; // 0.75 + 8.5 -> 9
        let q = QuantMatrix::quantize(QuantFormat::Q4_0, 1, 32, &x).unwrap();
        assert_eq!(q.scales()[0], f16::from_f32(0.4));
        assert_eq!(q.qs()[0], 13 << 4);
        assert_eq!(q.qs()[1], 9 | (8 << 4));
        let mut back = vec![0f32; 32];
        q.dequantize_rows(0..1, &mut back);
        let d = f16::from_f32(0.4).to_f32();
        assert_eq!(
            (back[0], back[16], back[1], back[2]),
            (-8.0 * d, 5.0 * d, d, 0.0)
        );
    }

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        // (q4_0's levels run -8..=7 steps from the value of largest magnitude,
        // so values near the opposite extreme clamp: up to one step there.)
        let (rows, cols) = (5, 96);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            let q = QuantMatrix::quantize(format, rows, cols, &x).unwrap();
            let mut back = vec![0f32; x.len()];
            q.dequantize_rows(0..rows, &mut back);
            for (b, (xs, ys)) in x.chunks(BLOCK).zip(back.chunks(BLOCK)).enumerate() {
                let d = q.scales()[b].to_f32().abs();
                let step = if format == QuantFormat::Q4_0 {
                    d
                } else {
                    0.5 * d
                };
                for (x, y) in xs.iter().zip(ys) {
                    assert!((x - y).abs() <= step + 1e-3 * x.abs(), "{format} {x} {y}");
                }
            }
            // Streaming by chunks of rows gives the same matrix.
            let mut s = QuantMatrix::empty(format, rows, cols).unwrap();
            s.quantize_rows(0, &x[..2 * cols]);
            s.quantize_rows(2, &x[2 * cols..]);
            assert_eq!(s, q);
            let bits = q.bytes() as f64 * 8.0 / (rows * cols) as f64;
            assert_eq!(bits, format.bits_per_weight());
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(QuantMatrix::quantize(QuantFormat::Q8_0, 1, 48, &[0.0; 48]).is_err());
        assert!(QuantMatrix::quantize(QuantFormat::Q4_0, 2, 32, &[0.0; 32]).is_err());
        assert!(
            QuantMatrix::from_parts(QuantFormat::Q4_0, 1, 32, vec![f16::ZERO], vec![0; 15])
                .is_err()
        );
        assert_eq!(QuantFormat::parse(" Q4_0"), Some(QuantFormat::Q4_0));
        assert_eq!(QuantFormat::parse("q5"), None);
    }
}
