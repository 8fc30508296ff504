//! [`VitBlock`]: one pre-norm ViT block with fused `qkv`.

use burn::prelude::*;
use janus_core::nn::{
    AttentionMask, GeluMlp, LayerNorm, Linear, add, scaled_dot_product_attention,
};
use janus_core::{Result, Weights};

use crate::LN_EPS;
use crate::config::SiglipConfig;

/// A pre-norm ViT block: `x + proj(attn(norm1(x)))`, then `+ mlp(norm2(.))`.
#[derive(Debug, Clone)]
pub struct VitBlock<B: Backend> {
    /// `norm1`.
    pub norm1: LayerNorm<B>,
    /// Fused `attn.qkv`, output ordered `[q|k|v][head][dim]`.
    pub qkv: Linear<B>,
    /// `attn.proj`.
    pub proj: Linear<B>,
    /// `norm2`.
    pub norm2: LayerNorm<B>,
    /// `mlp.fc1`, GELU, `mlp.fc2`.
    pub mlp: GeluMlp<B>,
    heads: usize,
}

impl<B: Backend> VitBlock<B> {
    pub(crate) fn load(w: &Weights<B>, c: &SiglipConfig) -> Result<Self> {
        let d = c.width;
        Ok(Self {
            norm1: LayerNorm::load(&w.pp("norm1"), d, LN_EPS)?,
            // Every layer sees all patches at once: weights in the CPU matmul's layout.
            qkv: Linear::load(&w.pp("attn.qkv"), d, 3 * d)?.for_many_rows(),
            proj: Linear::load(&w.pp("attn.proj"), d, d)?.for_many_rows(),
            norm2: LayerNorm::load(&w.pp("norm2"), d, LN_EPS)?,
            mlp: GeluMlp::new(
                Linear::load(&w.pp("mlp.fc1"), d, c.mlp_dim)?,
                Linear::load(&w.pp("mlp.fc2"), c.mlp_dim, d)?,
            )
            .for_many_rows(),
            heads: c.heads,
        })
    }

    /// Bidirectional multi-head self-attention (after `norm1`), before the residual.
    pub fn attention(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let (h, hd) = (self.heads, d / self.heads);
        // [B, N, 3·H, hd] -> [B, 3·H, N, hd]: q, k and v are views of H heads
        // each (a reshape of a strided view would copy it value by value).
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3 * h, hd])
            .swap_dims(1, 2);
        let part = |i: usize| qkv.clone().narrow(1, i * h, h);
        let out = scaled_dot_product_attention(
            part(0),
            part(1),
            part(2),
            AttentionMask::None,
            1.0 / (hd as f64).sqrt(),
        );
        self.proj.forward(out.swap_dims(1, 2).reshape([b, n, d]))
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = add(x.clone(), self.attention(self.norm1.forward(x)));
        add(h.clone(), self.mlp.forward(self.norm2.forward(h)))
    }
}
