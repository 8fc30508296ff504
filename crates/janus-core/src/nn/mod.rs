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

/// Rotary position embedding: `x · cos + rotate_half(x) · sin` for
/// `x [b, heads, t, d]` and tables `[b, 1, t, d]`, where
/// `rotate_half(x) = [-x[d/2..], x[..d/2]]` (the Llama convention).
pub fn rotary_embedding<B: Backend>(
    x: Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Tensor<B, 4> {
    if let Some(y) = crate::cpu::rope(&x, cos, sin) {
        return y;
    }
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// `a + b` of two tensors of one shape and dtype (the residual connections):
/// one vectorised pass for f16 and bf16 on the CPU, Burn's add otherwise.
pub fn add<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    match crate::cpu::add(&a, &b) {
        Some(y) => y,
        None => a + b,
    }
}

/// `silu(gate) · up`, the gated (SwiGLU) MLP's activation.
pub fn silu_mul<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    match crate::cpu::silu_mul(&gate, &up) {
        Some(y) => y,
        None => burn::tensor::activation::silu(gate) * up,
    }
}
