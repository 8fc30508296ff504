//! [`Conv2d`]: a square 2-d convolution with bias, on the CPU backend through an
//! implicit-GEMM (or Winograd) kernel with upsampling and residual fused in.

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use crate::error::Result;
use crate::weights::Weights;

/// Shape and geometry of a [`Conv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Zero padding (all sides).
    pub padding: usize,
}

impl Conv2dSpec {
    /// A `kernel x kernel` convolution, stride 1, no padding.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
        }
    }

    /// With this stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// With this padding.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
}

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
    /// Loads `weight` `[out, in, k, k]` and `bias` `[out]`.
    pub fn load(w: &Weights<B>, spec: Conv2dSpec) -> Result<Self> {
        let Conv2dSpec {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        } = spec;
        Ok(Self {
            weight: w.tensor("weight", [out_channels, in_channels, kernel, kernel])?,
            bias: w.tensor("bias", [out_channels])?,
            stride,
            padding,
        })
    }

    /// Applies the convolution to `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.fast(&x, false, None)
            .unwrap_or_else(|| self.generic(x))
    }

    /// `residual + self.forward(x)`, fused on the CPU.
    pub fn forward_add(&self, x: Tensor<B, 4>, residual: Tensor<B, 4>) -> Tensor<B, 4> {
        match self.fast(&x, false, Some(&residual)) {
            Some(y) => y,
            None => residual + self.generic(x),
        }
    }

    /// The convolution of `x` upsampled x2 (nearest neighbour), fused on the CPU.
    pub fn forward_upsampled(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if let Some(y) = self.fast(&x, true, None) {
            return y;
        }
        let [b, c, h, w] = x.dims();
        let up = x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, 2 * h, 2 * w]);
        self.generic(up)
    }

    fn fast(
        &self,
        x: &Tensor<B, 4>,
        upsample: bool,
        residual: Option<&Tensor<B, 4>>,
    ) -> Option<Tensor<B, 4>> {
        if self.stride != 1 {
            return None;
        }
        crate::cpu::conv2d(
            x,
            &self.weight,
            Some(&self.bias),
            self.padding,
            upsample,
            residual,
        )
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
