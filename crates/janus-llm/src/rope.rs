//! Rotary position embedding in the HF `rotate_half` layout (first half / second
//! half of each head), tables computed in f32 exactly as HF Llama does.

use burn::prelude::*;
use burn::tensor::{DType, TensorData};

/// Inverse frequencies `theta^(-2i/d)` for `i < d/2`, in f32.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// RoPE for heads of `head_dim` (even) with base `theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        // HF: 1 / (base ** (arange(0, dim, 2).float() / dim)), all in f32.
        let inv_freq = (0..half)
            .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// `cos` and `sin` tables `[B, 1, T, head_dim]` for `positions` (`B*T`, row-major),
    /// cast to `dtype`.
    pub fn tables<B: Backend>(
        &self,
        positions: &[i64],
        batch: usize,
        device: &B::Device,
        dtype: DType,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let half = self.inv_freq.len();
        let dim = 2 * half;
        let t = positions.len() / batch.max(1);
        let mut cos = Vec::with_capacity(positions.len() * dim);
        let mut sin = Vec::with_capacity(positions.len() * dim);
        for &p in positions {
            let start = cos.len();
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
            cos.extend_from_within(start..start + half);
            sin.extend_from_within(start..start + half);
        }
        let make = |v: Vec<f32>| {
            Tensor::<B, 4>::from_data(TensorData::new(v, [batch, 1, t, dim]), (device, DType::F32))
                .cast(dtype)
        };
        (make(cos), make(sin))
    }

    /// `x * cos + rotate_half(x) * sin` for `x [B, H, T, D]`.
    pub fn apply<B: Backend>(
        x: Tensor<B, 4>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
    ) -> Tensor<B, 4> {
        janus_core::nn::rotary_embedding(x, cos, sin)
    }
}
