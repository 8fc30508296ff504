//! Building blocks shared by the Janus modules: one implementation each.

mod attention;
mod conv;
mod embedding;
mod linear;
mod mlp;
mod norm;
mod quantized;

pub use attention::{AttentionMask, cached_attention, scaled_dot_product_attention, write_rows};
pub use conv::{Conv2d, Conv2dSpec};
pub use embedding::Embedding;
pub use linear::Linear;
pub use mlp::GeluMlp;
pub use norm::{GroupNorm, LayerNorm, RmsNorm};

use burn::prelude::*;

/// Exact (erf-based) GELU, `0.5 x (1 + erf(x / sqrt 2))`, as every Janus module uses.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    crate::cpu::gelu(x).unwrap_or_else(burn::tensor::activation::gelu)
}
