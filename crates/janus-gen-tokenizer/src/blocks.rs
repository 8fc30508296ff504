//! Residual and attention blocks of the VQ encoder and decoder.

use burn::prelude::*;
use janus_core::nn::{AttentionMask, Conv2d, GroupNorm, scaled_dot_product_attention};
use janus_core::{Result, Weights};

use crate::layers::{conv1x1, conv3x3, group_norm};

/// `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`.
#[derive(Debug, Clone)]
pub struct ResnetBlock<B: Backend> {
    /// `norm1`.
    pub norm1: GroupNorm<B>,
    /// `conv1`.
    pub conv1: Conv2d<B>,
    /// `norm2`.
    pub norm2: GroupNorm<B>,
    /// `conv2`.
    pub conv2: Conv2d<B>,
    /// `nin_shortcut` (1x1) when the channel count changes.
    pub nin_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    pub(crate) fn load(w: &Weights<B>, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(Self {
            norm1: group_norm(&w.pp("norm1"), c_in)?,
            conv1: conv3x3(&w.pp("conv1"), c_in, c_out)?,
            norm2: group_norm(&w.pp("norm2"), c_out)?,
            conv2: conv3x3(&w.pp("conv2"), c_out, c_out)?,
            nin_shortcut: if c_in != c_out {
                Some(conv1x1(&w.pp("nin_shortcut"), c_in, c_out)?)
            } else {
                None
            },
        })
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        let shortcut = match &self.nin_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        self.conv2.forward_add(self.norm2.forward_silu(h), shortcut)
    }
}

/// Single-head spatial self-attention with scale `C^-1/2` and 1x1 conv projections.
#[derive(Debug, Clone)]
pub struct AttnBlock<B: Backend> {
    /// `norm`.
    pub norm: GroupNorm<B>,
    /// `q`.
    pub q: Conv2d<B>,
    /// `k`.
    pub k: Conv2d<B>,
    /// `v`.
    pub v: Conv2d<B>,
    /// `proj_out`.
    pub proj_out: Conv2d<B>,
}

impl<B: Backend> AttnBlock<B> {
    pub(crate) fn load(w: &Weights<B>, c: usize) -> Result<Self> {
        let conv = |name: &str| conv1x1(&w.pp(name), c, c);
        Ok(Self {
            norm: group_norm(&w.pp("norm"), c)?,
            q: conv("q")?,
            k: conv("k")?,
            v: conv("v")?,
            proj_out: conv("proj_out")?,
        })
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let hn = self.norm.forward(x.clone());
        // [B, C, H, W] -> [B, 1, HW, C]
        let seq = |t: Tensor<B, 4>| t.reshape([b, 1, c, h * w]).swap_dims(2, 3);
        let out = scaled_dot_product_attention(
            seq(self.q.forward(hn.clone())),
            seq(self.k.forward(hn.clone())),
            seq(self.v.forward(hn)),
            AttentionMask::None,
            1.0 / (c as f64).sqrt(),
        );
        let out = out.swap_dims(2, 3).reshape([b, c, h, w]);
        self.proj_out.forward_add(out, x)
    }
}
