//! Convolution, GroupNorm and the resampling layers of the VQ model.

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};
use janus_core::{Result, Weights, cpu};

/// GroupNorm groups and epsilon used everywhere in VQ-16.
pub const GROUPS: usize = 32;
const GN_EPS: f64 = 1e-6;

/// A square 2-d convolution with bias.
#[derive(Debug, Clone)]
pub struct Conv2d<B: Backend> {
    /// `[out, in, k, k]`.
    pub weight: Tensor<B, 4>,
    /// `[out]`.
    pub bias: Tensor<B, 1>,
    stride: usize,
    padding: usize,
}

impl<B: Backend> Conv2d<B> {
    /// Loads `{prefix}.weight` `[c_out, c_in, k, k]` and `{prefix}.bias`.
    pub fn load(
        w: &Weights<B>,
        prefix: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{prefix}.weight"), [c_out, c_in, k, k])?,
            bias: w.tensor(&format!("{prefix}.bias"), [c_out])?,
            stride,
            padding,
        })
    }

    /// Applies the convolution to `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.stride == 1
            && let Some(y) = cpu::conv2d(
                &x,
                &self.weight,
                Some(&self.bias),
                self.padding,
                false,
                None,
            )
        {
            return y;
        }
        self.generic(x)
    }

    /// `residual + self.forward(x)`, fused on the CPU.
    pub fn forward_add(&self, x: Tensor<B, 4>, residual: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.stride == 1
            && let Some(y) = cpu::conv2d(
                &x,
                &self.weight,
                Some(&self.bias),
                self.padding,
                false,
                Some(&residual),
            )
        {
            return y;
        }
        residual + self.generic(x)
    }

    fn generic(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1),
        )
    }
}

/// `GroupNorm(32, C, eps=1e-6)` with affine parameters; statistics in f32.
#[derive(Debug, Clone)]
pub struct GroupNorm<B: Backend> {
    /// Scale `[C]`.
    pub weight: Tensor<B, 1>,
    /// Shift `[C]`.
    pub bias: Tensor<B, 1>,
}

impl<B: Backend> GroupNorm<B> {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(w: &Weights<B>, prefix: &str, channels: usize) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{prefix}.weight"), [channels])?,
            bias: w.tensor(&format!("{prefix}.bias"), [channels])?,
        })
    }

    /// `swish(self.forward(x))`, fused on the CPU.
    pub fn forward_swish(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match cpu::group_norm(&x, &self.weight, &self.bias, GROUPS, GN_EPS, true) {
            Some(y) => y,
            None => swish(self.forward(x)),
        }
    }

    /// Normalises `[B, C, H, W]` per group of channels.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if let Some(y) = cpu::group_norm(&x, &self.weight, &self.bias, GROUPS, GN_EPS, false) {
            return y;
        }
        let [b, c, h, w] = x.dims();
        let dtype = x.dtype();
        let g = x
            .cast(DType::F32)
            .reshape([b, GROUPS, (c / GROUPS) * h * w]);
        let mean = g.clone().mean_dim(2);
        let centered = g - mean;
        let var = centered.clone().square().mean_dim(2);
        let y = (centered / (var + GN_EPS).sqrt())
            .reshape([b, c, h, w])
            .cast(dtype);
        y * self.weight.clone().reshape([1, c, 1, 1]) + self.bias.clone().reshape([1, c, 1, 1])
    }
}

/// `x * sigmoid(x)`.
pub fn swish<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::silu(x)
}

/// Zero-pad right and bottom by one, then a 3x3 stride-2 convolution (encoder).
#[derive(Debug, Clone)]
pub struct Downsample<B: Backend> {
    /// `downsample.conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample<B> {
    pub(crate) fn load(w: &Weights<B>, prefix: &str, c: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(w, &format!("{prefix}.conv"), c, c, 3, 2, 0)?,
        })
    }

    /// Halves H and W.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv
            .forward(x.pad([(0, 1), (0, 1)], PadMode::Constant(0.0)))
    }
}

/// Nearest-neighbour x2, then a 3x3 convolution (decoder).
#[derive(Debug, Clone)]
pub struct Upsample<B: Backend> {
    /// `upsample.conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample<B> {
    pub(crate) fn load(w: &Weights<B>, prefix: &str, c: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(w, &format!("{prefix}.conv"), c, c, 3, 1, 1)?,
        })
    }

    /// Doubles H and W.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = &self.conv;
        if let Some(y) = cpu::conv2d(&x, &c.weight, Some(&c.bias), c.padding, true, None) {
            return y;
        }
        let [b, c, h, w] = x.dims();
        let up = x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, 2 * h, 2 * w]);
        self.conv.forward(up)
    }
}
