//! [`DecoderLayer`]: one pre-norm decoder layer.

use burn::prelude::*;
use janus_core::nn::{AttentionMask, RmsNorm, add};
use janus_core::{Result, Weights};

use crate::attention::LlamaAttention;
use crate::config::LlamaConfig;
use crate::mlp::LlamaMlp;

/// One pre-norm decoder layer.
#[derive(Debug, Clone)]
pub struct DecoderLayer<B: Backend> {
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm<B>,
    /// `self_attn`.
    pub self_attn: LlamaAttention<B>,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm<B>,
    /// `mlp`.
    pub mlp: LlamaMlp<B>,
}

impl<B: Backend> DecoderLayer<B> {
    pub(crate) fn load(w: &Weights<B>, c: &LlamaConfig) -> Result<Self> {
        let (h, eps) = (c.hidden_size, c.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::load(&w.pp("input_layernorm"), h, eps)?,
            self_attn: LlamaAttention::load(&w.pp("self_attn"), c)?,
            post_attention_layernorm: RmsNorm::load(&w.pp("post_attention_layernorm"), h, eps)?,
            mlp: LlamaMlp::load(&w.pp("mlp"), h, c.intermediate_size)?,
        })
    }

    pub(crate) fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: (&Tensor<B, 4>, &Tensor<B, 4>),
        mask: &AttentionMask<B>,
        cache: &mut crate::KvCache<B>,
        layer: usize,
    ) -> Tensor<B, 3> {
        let attn = self.self_attn.forward(
            self.input_layernorm.forward(x.clone()),
            rope,
            mask,
            cache,
            layer,
        );
        let h = add(x, attn);
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.forward(h.clone()));
        add(h, mlp)
    }
}
