//! [`Linear`]: a dense layer, with the CPU's few-row kernel behind it.

use burn::prelude::*;
use burn::tensor::DType;

use super::quantized::QuantWeight;
use crate::error::Result;
use crate::quant::{BLOCK, QuantFormat};
use crate::weights::Weights;

/// A dense layer with the weight kept in PyTorch's `[out, in]` layout (no transpose
/// is materialised at load; the matmul reads a transposed view), or as `[in, out]`
/// after [`Linear::for_many_rows`], or quantized ([`Linear::load_quantizable`]).
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[out, in]`, or `[in, out]` when `in_out` (a placeholder when quantized).
    weight: Tensor<B, 2>,
    /// `[out]`.
    bias: Option<Tensor<B, 1>>,
    in_out: bool,
    quant: Option<QuantWeight<B>>,
}

impl<B: Backend> Linear<B> {
    /// A layer from a weight `[out, in]` and an optional bias `[out]`.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight,
            bias,
            in_out: false,
            quant: None,
        }
    }

    /// Loads `weight` `[d_out, d_in]` (and `bias` `[d_out]` when `bias`),
    /// quantized to the format of `w`'s precision when it has one and `d_in` is
    /// a multiple of 32 (else as [`Linear::load`] does). The full-precision
    /// weight is never held whole: it is quantized as it streams in. A matrix
    /// the checkpoint stores quantized is taken as it is (or re-quantized to
    /// the requested format).
    pub fn load_quantizable(w: &Weights<B>, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let bias = if bias {
            Some(w.tensor("bias", [d_out])?)
        } else {
            None
        };
        if d_in.is_multiple_of(BLOCK) {
            w.mark_quantizable("weight");
        }
        match w.quant_for("weight") {
            Some(format) if d_in.is_multiple_of(BLOCK) && !w.has_data() => {
                w.check_quantized("weight", [d_out, d_in], format)?;
                Ok(Self::new(
                    Tensor::zeros([1, 1], (w.device(), w.dtype())),
                    bias,
                ))
            }
            Some(format) if d_in.is_multiple_of(BLOCK) => {
                let q = w.quantized("weight", [d_out, d_in], format)?;
                Ok(Self {
                    weight: Tensor::zeros([1, 1], (w.device(), w.dtype())),
                    bias,
                    in_out: false,
                    quant: Some(QuantWeight::new(q, w.device())),
                })
            }
            _ => Ok(Self::new(w.tensor("weight", [d_out, d_in])?, bias)),
        }
    }

    /// The block format of the weight, if it is quantized.
    pub fn quant_format(&self) -> Option<QuantFormat> {
        self.quant.as_ref().map(QuantWeight::format)
    }

    /// Bytes the weight occupies (quantized or not; bias excluded).
    pub fn weight_bytes(&self) -> usize {
        match &self.quant {
            Some(q) => q.bytes(),
            None => self.weight.shape().num_elements() * self.weight.dtype().size(),
        }
    }

    /// Loads `weight` `[d_out, d_in]` and `bias` `[d_out]`.
    pub fn load(w: &Weights<B>, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self::new(
            w.tensor("weight", [d_out, d_in])?,
            Some(w.tensor("bias", [d_out])?),
        ))
    }

    /// Loads `weight` `[d_out, d_in]` of a layer without bias.
    pub fn load_no_bias(w: &Weights<B>, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self::new(w.tensor("weight", [d_out, d_in])?, None))
    }

    /// For layers that only ever see hundreds of rows (the vision tower): on the
    /// CPU backend, stores the weight once as a contiguous `[in, out]` copy, which
    /// the matrix product packs without a strided transpose (about 20-25 % faster
    /// at SigLIP sizes with Burn's matmul; not re-measured since the many-row
    /// product reads either layout); the few-row kernel, which wants `[out, in]`,
    /// is then not used. A no-op on other backends.
    pub fn for_many_rows(self) -> Self {
        if self.in_out || self.quant.is_some() || !crate::cpu::is_flex::<B>() {
            return self;
        }
        let (device, dtype) = (self.weight.device(), self.weight.dtype());
        let data = self.weight.transpose().into_data();
        Self {
            weight: Tensor::from_data(data, (&device, dtype)),
            bias: self.bias,
            in_out: true,
            quant: None,
        }
    }

    /// The weight as `[out, in]` (dequantized, in the runtime dtype, when
    /// quantized).
    pub fn weight(&self) -> Tensor<B, 2> {
        if let Some(q) = &self.quant {
            q.dequantize(self.weight.dtype())
        } else if self.in_out {
            self.weight.clone().transpose()
        } else {
            self.weight.clone()
        }
    }

    /// The bias `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor<B, 1>> {
        self.bias.as_ref()
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        if let Some(q) = &self.quant {
            return q.shape()[0];
        }
        self.weight.dims()[if self.in_out { 1 } else { 0 }]
    }

    /// `[l.forward(x) for l in linears]`: on the CPU, quantized layers with
    /// few rows of `x` run in one pass (`x` quantized once, one parallel loop
    /// over all their weights: q, k and v, or gate and up); any other mix runs
    /// each layer's [`Linear::forward`].
    pub fn forward_many<const D: usize, const N: usize>(
        x: Tensor<B, D>,
        linears: [&Self; N],
    ) -> [Tensor<B, D>; N] {
        let dims = x.dims();
        let quant: Option<Vec<&QuantWeight<B>>> =
            linears.iter().map(|l| l.quant.as_ref()).collect();
        if let Some(quant) = quant {
            let rows = dims[..D - 1].iter().product::<usize>();
            let x2 = x.clone().reshape([rows, dims[D - 1]]);
            let biases: Vec<_> = linears.iter().map(|l| l.bias.as_ref()).collect();
            if let Some(ys) = QuantWeight::forward_many(&x2, &quant, &biases) {
                let mut ys = ys.into_iter();
                return linears.map(|l| {
                    let mut out = dims;
                    out[D - 1] = l.d_out();
                    ys.next().expect("one output per layer").reshape(out)
                });
            }
        }
        linears.map(|l| l.forward(x.clone()))
    }

    /// `y = x W^T + b` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let x = x.reshape([rows, d_in]);
        dims[D - 1] = self.d_out();
        if let Some(q) = &self.quant {
            return q.forward(x, self.bias.as_ref()).reshape(dims);
        }
        if !self.in_out
            && rows <= crate::cpu::MAX_ROWS
            && let Some(y) = crate::cpu::linear_rows(&x, &self.weight, self.bias.as_ref())
        {
            return y.reshape(dims);
        }
        if (self.in_out || rows > crate::cpu::MAX_ROWS)
            && let Some(y) =
                crate::cpu::linear_many(&x, &self.weight, self.in_out, self.bias.as_ref())
        {
            return y.reshape(dims);
        }
        let y = if self.in_out {
            x.matmul(self.weight.clone())
        } else if rows > 1 && rows <= 16 && x.dtype() == DType::F16 && crate::cpu::is_flex::<B>() {
            // burn-flex multiplies a single f16 row fast, but a few f16 rows at
            // once several times slower than one row each: split small f16
            // batches (CPUs without the few-row kernel).
            let w = self.weight.clone().transpose();
            Tensor::cat(
                (0..rows)
                    .map(|r| x.clone().narrow(0, r, 1).matmul(w.clone()))
                    .collect(),
                0,
            )
        } else {
            x.matmul(self.weight.clone().transpose())
        };
        let y = match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        };
        y.reshape(dims)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn layers_run_together_give_what_each_gives_alone() {
        let dev = Default::default();
        let quantized = |n: usize, bias: bool, format| {
            let w: Vec<f32> = (0..n * 64)
                .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
                .collect();
            let q = crate::QuantMatrix::quantize(format, n, 64, &w).unwrap();
            let b = bias.then(|| Tensor::<Flex, 1>::random([n], Distribution::Default, &dev));
            Linear {
                weight: Tensor::zeros([1, 1], &dev),
                bias: b,
                in_out: false,
                quant: Some(QuantWeight::new(q, &dev)),
            }
        };
        // Widths that are not whole parallel tasks (20, 37), a bias on one,
        // both formats; a dense layer in the mix takes the one-by-one path.
        let a = quantized(20, false, QuantFormat::Q4_0);
        let b = quantized(37, true, QuantFormat::Q8_0);
        let c = quantized(16, false, QuantFormat::Q4_0);
        let dense = Linear::new(
            Tensor::<Flex, 2>::random([24, 64], Distribution::Default, &dev),
            None,
        );
        for rows in [1, 3, 16, 20] {
            let x = Tensor::<Flex, 3>::random([1, rows, 64], Distribution::Normal(0.0, 1.0), &dev);
            let together = Linear::forward_many(x.clone(), [&a, &b, &c]);
            let mixed = Linear::forward_many(x.clone(), [&b, &dense]);
            for (layer, got) in [&a, &b, &c]
                .iter()
                .zip(together)
                .chain([(&&b, mixed[0].clone())])
            {
                assert_eq!(got.dims(), [1, rows, layer.d_out()]);
                assert_eq!(
                    got.into_data().to_vec::<f32>().unwrap(),
                    layer
                        .forward(x.clone())
                        .into_data()
                        .to_vec::<f32>()
                        .unwrap(),
                    "{rows} rows"
                );
            }
            let want = dense
                .forward(x.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            assert_eq!(mixed[1].clone().into_data().to_vec::<f32>().unwrap(), want);
        }
    }

    #[test]
    fn f16_batches_and_the_in_out_copy_match_f32() {
        let dev = Default::default();
        let w = Tensor::<Flex, 2>::random([24, 40], Distribution::Normal(0.0, 0.2), &dev);
        let b = Tensor::<Flex, 1>::random([24], Distribution::Normal(0.0, 0.2), &dev);
        let x = Tensor::<Flex, 3>::random([3, 2, 40], Distribution::Normal(0.0, 1.0), &dev);
        let f32_layer = Linear::new(w.clone(), Some(b.clone()));
        let f16_layer = Linear::new(w.clone().cast(DType::F16), Some(b.clone().cast(DType::F16)));
        let want = f32_layer.forward(x.clone());
        let got = f16_layer.forward(x.clone().cast(DType::F16));
        assert_eq!(got.dims(), [3, 2, 24]);
        let diff: f32 = (got.cast(DType::F32) - want.clone())
            .abs()
            .max()
            .into_scalar();
        assert!(diff < 2e-2, "max difference {diff}");
        // The `[in, out]` copy gives the same product and reports the same weight.
        let many = Linear::new(w.clone(), Some(b)).for_many_rows();
        assert_eq!(many.d_out(), 24);
        assert_eq!(many.weight().into_data(), w.into_data());
        let diff: f32 = (many.forward(x) - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "max difference {diff}");
    }
}
