//! [`QuantWeight`]: a [`Linear`](super::Linear) weight in a block format
//! ([`QuantMatrix`]), kept where its backend reads it fastest.
//!
//! - CPU (burn-flex): the blocks stay in host memory, their weight rows
//!   interleaved a vector's worth at a time (`cpu/interleaved.rs`). A few rows
//!   (decode, image steps) go through the block kernel, which multiplies in
//!   registers; many rows (prefill) go through the many-row product
//!   (`cpu/many.rs`), each thread dequantizing a panel of a few hundred weight
//!   rows at a time.
//! - Other backends (wgpu, CUDA): the values are packed four (q8_0) or eight
//!   (q4_0) to a 32-bit int tensor on the device, with f32 scales, and each call
//!   dequantizes on the device (integer shifts and masks) to the runtime dtype
//!   before the matmul: correct everywhere, never a host round trip.

use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::{DType, Int, TensorData};

use crate::cpu::Interleaved;
use crate::quant::{BLOCK, QuantFormat, QuantMatrix};

/// A quantized `[out, in]` weight.
#[derive(Debug, Clone)]
pub(crate) enum QuantWeight<B: Backend> {
    /// The blocks in host memory (CPU backend).
    Host {
        q: Arc<Interleaved>,
        device: B::Device,
    },
    /// Packed on the device.
    Device(DeviceQuant<B>),
}

/// Values packed into i32 words (little-endian bytes), scales `[out, in / 32, 1]`.
#[derive(Debug, Clone)]
pub(crate) struct DeviceQuant<B: Backend> {
    format: QuantFormat,
    packed: Tensor<B, 2, Int>,
    scales: Tensor<B, 3>,
    shape: [usize; 2],
}

impl<B: Backend> QuantWeight<B> {
    /// Places `q` for backend `B` on `device`.
    pub(crate) fn new(q: QuantMatrix, device: &B::Device) -> Self {
        if crate::cpu::is_flex::<B>() {
            Self::Host {
                q: Arc::new(Interleaved::new(q, crate::cpu::simd::level().lanes())),
                device: device.clone(),
            }
        } else {
            Self::Device(DeviceQuant::new(&q, device))
        }
    }

    pub(crate) fn format(&self) -> QuantFormat {
        match self {
            Self::Host { q, .. } => q.format(),
            Self::Device(d) => d.format,
        }
    }

    /// `[out, in]`.
    pub(crate) fn shape(&self) -> [usize; 2] {
        match self {
            Self::Host { q, .. } => [q.rows(), q.cols()],
            Self::Device(d) => d.shape,
        }
    }

    /// Bytes the weight occupies.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Self::Host { q, .. } => q.bytes(),
            Self::Device(d) => {
                d.shape[0] * d.shape[1] * d.format.block_bytes() / BLOCK
                    + d.shape[0] * d.shape[1] / BLOCK * 4
            }
        }
    }

    /// The weight dequantized, `[out, in]` in `dtype`.
    pub(crate) fn dequantize(&self, dtype: DType) -> Tensor<B, 2> {
        match self {
            Self::Host { q, device } => {
                let mut w = vec![0f32; q.rows() * q.cols()];
                q.dequantize_rows(0..q.rows(), &mut w);
                Tensor::from_data(TensorData::new(w, [q.rows(), q.cols()]), (device, dtype))
            }
            Self::Device(d) => d.dequantize(dtype),
        }
    }

    /// `x [rows, in] · Wᵀ + bias`, in `x`'s dtype.
    pub(crate) fn forward(&self, x: Tensor<B, 2>, bias: Option<&Tensor<B, 1>>) -> Tensor<B, 2> {
        match self {
            Self::Host { q, .. } => {
                let [rows, k] = x.dims();
                if crate::cpu::quant_takes(rows, std::iter::once(q.format())) {
                    crate::cpu::quant_rows(&x, &[q], &[bias]).remove(0)
                } else {
                    let w = crate::cpu::Weight::Quant(q);
                    crate::cpu::product_tensor(&x, [rows, k, q.rows()], &w, false, bias)
                }
            }
            Self::Device(d) => {
                let w = d.dequantize(x.dtype());
                let y = x.matmul(w.transpose());
                match bias {
                    Some(b) => y + b.clone().unsqueeze::<2>(),
                    None => y,
                }
            }
        }
    }

    /// `x [rows, in] · W_iᵀ + bias_i` for each weight, in one pass when all are
    /// in host memory and the int8 kernel takes `x`'s rows
    /// ([`crate::cpu::quant_takes`]; `None` otherwise: call
    /// [`QuantWeight::forward`] on each).
    pub(crate) fn forward_many(
        x: &Tensor<B, 2>,
        weights: &[&Self],
        biases: &[Option<&Tensor<B, 1>>],
    ) -> Option<Vec<Tensor<B, 2>>> {
        let qs: Vec<&Interleaved> = weights
            .iter()
            .map(|w| match w {
                Self::Host { q, .. } => Some(&**q),
                Self::Device(_) => None,
            })
            .collect::<Option<_>>()?;
        crate::cpu::quant_takes(x.dims()[0], qs.iter().map(|q| q.format()))
            .then(|| crate::cpu::quant_rows(x, &qs, biases))
    }
}

impl<B: Backend> DeviceQuant<B> {
    fn new(q: &QuantMatrix, device: &B::Device) -> Self {
        let [n, k] = [q.rows(), q.cols()];
        let words: Vec<i32> = q
            .qs()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let per_row = words.len() / n;
        let scales: Vec<f32> = q.scales().iter().map(|d| d.to_f32()).collect();
        Self {
            format: q.format(),
            packed: Tensor::from_data(TensorData::new(words, [n, per_row]), device),
            scales: Tensor::from_data(TensorData::new(scales, [n, k / BLOCK, 1]), device),
            shape: [n, k],
        }
    }

    /// Byte `b` (0..4) of every packed word, `0..=255`.
    fn byte(&self, words: Tensor<B, 3, Int>, b: i32) -> Tensor<B, 3, Int> {
        words
            .bitwise_right_shift_scalar((8 * b).elem())
            .bitwise_and_scalar(255.elem())
    }

    fn dequantize(&self, dtype: DType) -> Tensor<B, 2> {
        let [n, k] = self.shape;
        let nb = k / BLOCK;
        let words_per_block = self.format.block_bytes() / 4;
        let words = self.packed.clone().reshape([n, nb, words_per_block]);
        // Bytes in memory order: [n, blocks, words, 4] -> [n, blocks, bytes].
        let bytes: Tensor<B, 3, Int> =
            Tensor::stack::<4>((0..4).map(|b| self.byte(words.clone(), b)).collect(), 3).reshape([
                n,
                nb,
                4 * words_per_block,
            ]);
        let values = match self.format {
            // Two's complement bytes to -128..=127.
            QuantFormat::Q8_0 => bytes
                .add_scalar(128)
                .bitwise_and_scalar(255.elem())
                .sub_scalar(128)
                .float(),
            // Low halves are weights 0..16, high halves 16..32.
            QuantFormat::Q4_0 => {
                let lo = bytes.clone().bitwise_and_scalar(15.elem());
                let hi = bytes.bitwise_right_shift_scalar(4.elem());
                Tensor::cat(vec![lo, hi], 2).float().sub_scalar(8.0)
            }
        };
        (values.cast(DType::F32) * self.scales.clone())
            .reshape([n, k])
            .cast(dtype)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;

    fn matrix(format: QuantFormat, n: usize, k: usize) -> QuantMatrix {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 2654435761) % 997) as f32 / 400.0 - 1.2)
            .collect();
        QuantMatrix::quantize(format, n, k, &w).unwrap()
    }

    #[test]
    fn the_device_packing_dequantizes_to_the_host_values() {
        let dev = Default::default();
        for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            let q = matrix(format, 6, 96);
            let mut want = vec![0f32; 6 * 96];
            q.dequantize_rows(0..6, &mut want);
            let d = DeviceQuant::<Flex>::new(&q, &dev);
            let got = crate::to_f32_vec(d.dequantize(DType::F32));
            assert_eq!(got, want, "{format}");
        }
    }

    #[test]
    fn many_rows_match_the_dequantized_product() {
        let dev = Default::default();
        for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
            let q = matrix(format, 40, 64);
            let x = Tensor::<Flex, 2>::random(
                [20, 64],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &dev,
            );
            let w = QuantWeight::<Flex>::new(q, &dev);
            // Where the int8 kernel takes a prompt's rows, it multiplies x's
            // q8_0 values; elsewhere the f32 product multiplies x itself.
            let xs = if crate::cpu::quant_takes(20, std::iter::once(format)) {
                let xr = crate::cpu::reference_q8(&crate::to_f32_vec(x.clone()));
                Tensor::from_data(TensorData::new(xr, [20, 64]), &dev)
            } else {
                x.clone()
            };
            let want = xs.matmul(w.dequantize(DType::F32).transpose());
            let got = w.forward(x.clone(), None);
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(diff < 1e-4, "{format}: {diff}");
        }
    }
}
