//! [`LlamaAttention`]: causal self-attention over the KV cache, MHA or GQA.

use burn::prelude::*;
use janus_core::nn::{AttentionMask, Linear, cached_attention};
use janus_core::{Result, Weights};

use crate::config::LlamaConfig;
use crate::rope::Rope;

/// Multi-head (or grouped-query) causal self-attention without biases.
#[derive(Debug, Clone)]
pub struct LlamaAttention<B: Backend> {
    /// `q_proj`.
    pub q_proj: Linear<B>,
    /// `k_proj`.
    pub k_proj: Linear<B>,
    /// `v_proj`.
    pub v_proj: Linear<B>,
    /// `o_proj`.
    pub o_proj: Linear<B>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> LlamaAttention<B> {
    pub(crate) fn load(w: &Weights<B>, c: &LlamaConfig) -> Result<Self> {
        let (h, q, kv) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        Ok(Self {
            q_proj: Linear::load_quantizable(&w.pp("q_proj"), h, q, false)?,
            k_proj: Linear::load_quantizable(&w.pp("k_proj"), h, kv, false)?,
            v_proj: Linear::load_quantizable(&w.pp("v_proj"), h, kv, false)?,
            o_proj: Linear::load_quantizable(&w.pp("o_proj"), q, h, false)?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        })
    }

    fn split_heads(&self, x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
        let [b, t, _] = x.dims();
        x.reshape([b, t, heads, self.head_dim]).swap_dims(1, 2)
    }

    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: (&Tensor<B, 4>, &Tensor<B, 4>),
        mask: &AttentionMask<B>,
        cache: &mut crate::KvCache<B>,
        layer: usize,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let [q, k, v] = Linear::forward_many(x, [&self.q_proj, &self.k_proj, &self.v_proj]);
        let q = self.split_heads(q, self.heads);
        let k = self.split_heads(k, self.kv_heads);
        let v = self.split_heads(v, self.kv_heads);
        let q = Rope::apply(q, rope.0, rope.1);
        let k = Rope::apply(k, rope.0, rope.1);
        let (k, v) = cache.append(layer, k, v);
        let len = cache.len() + t;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let keep = cache.has_padding().then(|| cache.real_tokens());
        let out = cached_attention(q, k, v, len, keep, mask.clone(), scale);
        self.o_proj.forward(
            out.swap_dims(1, 2)
                .reshape([b, t, self.heads * self.head_dim]),
        )
    }
}
