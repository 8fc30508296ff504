//! Normalisation layers, statistics in f32: [`LayerNorm`], [`RmsNorm`] and
//! [`GroupNorm`] (fused with SiLU on the CPU).

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
    /// Loads `weight` and `bias` of size `dim`.
    pub fn load(w: &Weights<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [dim])?,
            bias: w.tensor("bias", [dim])?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if let Some(y) = crate::cpu::layer_norm(&x, &self.weight, &self.bias, self.eps) {
            return y;
        }
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
    /// Loads `weight` of size `dim`.
    pub fn load(w: &Weights<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [dim])?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if let Some(y) = crate::cpu::rms_norm(&x, &self.weight, self.eps) {
            return y;
        }
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let ms = x.clone().square().mean_dim(D - 1);
        let y = (x * (ms + self.eps).sqrt().recip()).cast(dtype);
        y * self.weight.clone().unsqueeze()
    }
}

/// `GroupNorm(groups, C, eps)` with affine parameters over `[B, C, H, W]`.
#[derive(Debug, Clone)]
pub struct GroupNorm<B: Backend> {
    /// Scale `[C]`.
    pub weight: Tensor<B, 1>,
    /// Shift `[C]`.
    pub bias: Tensor<B, 1>,
    groups: usize,
    eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// Loads `weight` and `bias` of `channels` (a multiple of `groups`).
    pub fn load(w: &Weights<B>, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [channels])?,
            bias: w.tensor("bias", [channels])?,
            groups,
            eps,
        })
    }

    /// `silu(self.forward(x))`, fused on the CPU.
    pub fn forward_silu(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (g, eps) = (self.groups, self.eps);
        match crate::cpu::group_norm(&x, &self.weight, &self.bias, g, eps, true) {
            Some(y) => y,
            None => burn::tensor::activation::silu(self.forward(x)),
        }
    }

    /// Normalises `[B, C, H, W]` per group of channels.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (g, eps) = (self.groups, self.eps);
        if let Some(y) = crate::cpu::group_norm(&x, &self.weight, &self.bias, g, eps, false) {
            return y;
        }
        let [b, c, h, w] = x.dims();
        let dtype = x.dtype();
        let x = x.cast(DType::F32).reshape([b, g, (c / g) * h * w]);
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(2);
        let y = (centered / (var + eps).sqrt())
            .reshape([b, c, h, w])
            .cast(dtype);
        y * self.weight.clone().reshape([1, c, 1, 1]) + self.bias.clone().reshape([1, c, 1, 1])
    }
}
