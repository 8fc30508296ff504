//! The resampling layers of the VQ model and its GroupNorm settings.

use burn::prelude::*;
use janus_core::nn::{Conv2d, Conv2dSpec, GroupNorm};
use janus_core::{Result, Weights};

use crate::config::GROUPS;

/// GroupNorm epsilon of every VQ-16 norm.
const GN_EPS: f64 = 1e-6;

/// `GroupNorm(32, channels, eps=1e-6)` under `w`.
pub(crate) fn group_norm<B: Backend>(w: &Weights<B>, channels: usize) -> Result<GroupNorm<B>> {
    GroupNorm::load(w, channels, GROUPS, GN_EPS)
}

/// A 3x3 convolution with padding 1 under `w`.
pub(crate) fn conv3x3<B: Backend>(w: &Weights<B>, c_in: usize, c_out: usize) -> Result<Conv2d<B>> {
    Conv2d::load(w, Conv2dSpec::new(c_in, c_out, 3).padding(1))
}

/// A 1x1 convolution under `w`.
pub(crate) fn conv1x1<B: Backend>(w: &Weights<B>, c_in: usize, c_out: usize) -> Result<Conv2d<B>> {
    Conv2d::load(w, Conv2dSpec::new(c_in, c_out, 1))
}

/// Zero-pad right and bottom by one, then a 3x3 stride-2 convolution (encoder).
#[derive(Debug, Clone)]
pub struct Downsample<B: Backend> {
    /// `downsample.conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample<B> {
    pub(crate) fn load(w: &Weights<B>, c: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&w.pp("conv"), Conv2dSpec::new(c, c, 3).stride(2))?,
        })
    }

    /// Halves H and W: one zero row and column after the image, then the
    /// strided convolution.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // Not `Tensor::pad`: in Burn 0.21 it builds the padded tensor in the
        // default float dtype and fails on f16/bf16 inputs.
        let [b, c, h, w] = x.dims();
        let options = (&x.device(), x.dtype());
        let x = Tensor::cat(vec![x, Tensor::zeros([b, c, h, 1], options)], 3);
        let x = Tensor::cat(vec![x, Tensor::zeros([b, c, 1, w + 1], options)], 2);
        self.conv.forward(x)
    }
}

/// Nearest-neighbour x2, then a 3x3 convolution (decoder).
#[derive(Debug, Clone)]
pub struct Upsample<B: Backend> {
    /// `upsample.conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample<B> {
    pub(crate) fn load(w: &Weights<B>, c: usize) -> Result<Self> {
        Ok(Self {
            conv: conv3x3(&w.pp("conv"), c, c)?,
        })
    }

    /// Doubles H and W.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward_upsampled(x)
    }
}
