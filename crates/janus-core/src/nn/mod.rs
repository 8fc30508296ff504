//! Building blocks shared by the Janus modules: one implementation each.

mod attention;
mod cached;
mod embedding;
mod linear;
mod mlp;
mod norm;

pub use crate::cpu::is_flex;
pub use attention::{AttentionMask, scaled_dot_product_attention};
pub use cached::{attend_cached, write_rows};
pub use embedding::Embedding;
pub use linear::Linear;
pub use mlp::GeluMlp;
pub use norm::{LayerNorm, RmsNorm};

use burn::prelude::*;

/// Exact (erf-based) GELU, `0.5 x (1 + erf(x / sqrt 2))`, as every Janus module uses.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    crate::cpu::gelu(x).unwrap_or_else(burn::tensor::activation::gelu)
}
