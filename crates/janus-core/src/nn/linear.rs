use burn::prelude::*;
use burn::tensor::DType;

use crate::error::Result;
use crate::weights::Weights;

/// A dense layer with the weight kept in PyTorch's `[out, in]` layout (no transpose
/// is materialised at load; the matmul reads a transposed view).
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[out, in]`.
    pub weight: Tensor<B, 2>,
    /// `[out]`.
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    /// Loads `{prefix}.weight` `[out, in]` and, if `bias`, `{prefix}.bias` `[out]`.
    pub fn load(
        w: &Weights<B>,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{prefix}.weight"), [d_out, d_in])?,
            bias: if bias {
                Some(w.tensor(&format!("{prefix}.bias"), [d_out])?)
            } else {
                None
            },
        })
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `y = x W^T + b` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let x = x.reshape([rows, d_in]);
        dims[D - 1] = self.d_out();
        if rows <= crate::cpu::MAX_ROWS
            && let Some(y) = crate::cpu::linear_rows(&x, &self.weight, self.bias.as_ref())
        {
            return y.reshape(dims);
        }
        let w = self.weight.clone().transpose();
        // burn-flex multiplies a single f16 row fast, but a few f16 rows at once
        // several times slower than one row each: split small f16 batches (CPUs
        // without the few-row kernel).
        let y = if rows > 1 && rows <= 16 && x.dtype() == DType::F16 && super::is_flex::<B>() {
            Tensor::cat(
                (0..rows)
                    .map(|r| x.clone().narrow(0, r, 1).matmul(w.clone()))
                    .collect(),
                0,
            )
        } else {
            x.matmul(w)
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
    fn small_f16_batches_match_f32() {
        let dev = Default::default();
        let w = Tensor::<Flex, 2>::random([24, 40], Distribution::Normal(0.0, 0.2), &dev);
        let b = Tensor::<Flex, 1>::random([24], Distribution::Normal(0.0, 0.2), &dev);
        let x = Tensor::<Flex, 3>::random([3, 2, 40], Distribution::Normal(0.0, 1.0), &dev);
        let f32_layer = Linear {
            weight: w.clone(),
            bias: Some(b.clone()),
        };
        let f16_layer = Linear {
            weight: w.cast(DType::F16),
            bias: Some(b.cast(DType::F16)),
        };
        let want = f32_layer.forward(x.clone());
        let got = f16_layer.forward(x.cast(DType::F16));
        assert_eq!(got.dims(), [3, 2, 24]);
        let diff: f32 = (got.cast(DType::F32) - want).abs().max().into_scalar();
        assert!(diff < 2e-2, "max difference {diff}");
    }
}
