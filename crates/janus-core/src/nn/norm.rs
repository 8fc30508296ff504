use burn::prelude::*;
use burn::tensor::DType;

use crate::error::Result;
use crate::weights::Weights;

/// LayerNorm over the last dimension, statistics in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm<B: Backend> {
    /// Scale.
    pub weight: Tensor<B, 1>,
    /// Shift.
    pub bias: Tensor<B, 1>,
    /// Epsilon.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Loads `{prefix}.weight` and `{prefix}.bias` of size `dim`.
    pub fn load(w: &Weights<B>, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{prefix}.weight"), [dim])?,
            bias: w.tensor(&format!("{prefix}.bias"), [dim])?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let y = (centered / (var + self.eps).sqrt()).cast(dtype);
        y * self.weight.clone().unsqueeze() + self.bias.clone().unsqueeze()
    }
}

/// RMSNorm as in HF Llama: `w * cast(x32 * rsqrt(mean(x32^2) + eps))`.
#[derive(Debug, Clone)]
pub struct RmsNorm<B: Backend> {
    /// Scale.
    pub weight: Tensor<B, 1>,
    /// Epsilon.
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Loads `{prefix}.weight` of size `dim`.
    pub fn load(w: &Weights<B>, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{prefix}.weight"), [dim])?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let ms = x.clone().square().mean_dim(D - 1);
        let y = (x * (ms + self.eps).sqrt().recip()).cast(dtype);
        y * self.weight.clone().unsqueeze()
    }
}
