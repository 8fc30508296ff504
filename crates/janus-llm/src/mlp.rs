//! [`LlamaMlp`]: the SwiGLU feed-forward block.

use burn::prelude::*;
use janus_core::nn::Linear;
use janus_core::{Result, Weights};

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct LlamaMlp<B: Backend> {
    /// `gate_proj`.
    pub gate_proj: Linear<B>,
    /// `up_proj`.
    pub up_proj: Linear<B>,
    /// `down_proj`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> LlamaMlp<B> {
    pub(crate) fn load(w: &Weights<B>, hidden: usize, inter: usize) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::load_quantizable(&w.pp("gate_proj"), hidden, inter, false)?,
            up_proj: Linear::load_quantizable(&w.pp("up_proj"), hidden, inter, false)?,
            down_proj: Linear::load_quantizable(&w.pp("down_proj"), inter, hidden, false)?,
        })
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [gate, up] = Linear::forward_many(x, [&self.gate_proj, &self.up_proj]);
        self.down_proj.forward(janus_core::nn::silu_mul(gate, up))
    }
}
