//! The language model's config: `language_config` as `config.json` writes it
//! (HF `LlamaConfig` names, defaults for absent fields, as the reference does:
//! Janus-Pro-7B's section is sparse) and the checked [`LlamaConfig`] the model runs.

use std::num::NonZeroUsize;

use janus_core::ConfigError;
use janus_core::config::{check_multiple, check_positive, check_size};
use serde::Deserialize;

/// Upper bounds on the sizes a config may ask for (far above any Janus model,
/// low enough that nothing absurd is ever allocated).
const MAX_WIDTH: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
const MAX_VOCAB: usize = 1 << 22;
const MAX_POSITIONS: usize = 1 << 20;

/// `language_config` as written in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LlamaJson {
    /// Residual width (HF default 4096).
    pub hidden_size: Option<NonZeroUsize>,
    /// SwiGLU hidden size (11008).
    pub intermediate_size: Option<NonZeroUsize>,
    /// Query heads (32).
    pub num_attention_heads: Option<NonZeroUsize>,
    /// Key/value heads (= query heads).
    pub num_key_value_heads: Option<NonZeroUsize>,
    /// Decoder layers (32).
    pub num_hidden_layers: Option<NonZeroUsize>,
    /// Vocabulary (32000).
    pub vocab_size: Option<NonZeroUsize>,
    /// Per-head size (`hidden_size / num_attention_heads`).
    pub head_dim: Option<NonZeroUsize>,
    /// RMSNorm epsilon (1e-6).
    pub rms_norm_eps: Option<f64>,
    /// RoPE base (10000).
    pub rope_theta: Option<f64>,
    /// Context length (2048).
    pub max_position_embeddings: Option<NonZeroUsize>,
    /// Must be `silu`.
    pub hidden_act: Option<String>,
    /// Must be absent.
    pub rope_scaling: Option<serde_json::Value>,
    /// Must be `false`.
    pub attention_bias: Option<bool>,
    /// Must be `false`.
    pub mlp_bias: Option<bool>,
    /// Must be `false`.
    pub tie_word_embeddings: Option<bool>,
    /// Must be `llama`.
    pub model_type: Option<String>,
}

/// The Llama backbone's sizes, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Residual width.
    pub hidden_size: usize,
    /// SwiGLU hidden size.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Embedding rows / logits.
    pub vocab_size: usize,
    /// Per-head size.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// The context: no sequence may be longer.
    pub max_position_embeddings: usize,
}

impl LlamaJson {
    /// Fills the HF defaults and checks every value; errors name the field.
    pub fn into_config(self) -> Result<LlamaConfig, ConfigError> {
        let get = |v: Option<NonZeroUsize>, default: usize| v.map_or(default, NonZeroUsize::get);
        let hidden_size = check_size("hidden_size", get(self.hidden_size, 4096), MAX_WIDTH)?;
        let heads = check_size(
            "num_attention_heads",
            get(self.num_attention_heads, 32),
            MAX_WIDTH,
        )?;
        let kv_heads = check_size(
            "num_key_value_heads",
            get(self.num_key_value_heads, heads),
            MAX_WIDTH,
        )?;
        check_multiple("hidden_size", hidden_size, heads, "num_attention_heads")?;
        check_multiple(
            "num_attention_heads",
            heads,
            kv_heads,
            "num_key_value_heads",
        )?;
        let head_dim = check_size(
            "head_dim",
            get(self.head_dim, hidden_size / heads),
            MAX_WIDTH,
        )?;
        if head_dim % 2 != 0 {
            return Err(ConfigError::new(
                "head_dim",
                format!("RoPE needs an even head_dim, got {head_dim}"),
            ));
        }
        if let Some(act) = self.hidden_act.filter(|a| a != "silu") {
            return Err(ConfigError::new(
                "hidden_act",
                format!("only \"silu\" is supported, got \"{act}\""),
            ));
        }
        if let Some(v) = self.rope_scaling.filter(|v| !v.is_null()) {
            return Err(ConfigError::new(
                "rope_scaling",
                format!("RoPE scaling is not supported, got {v}"),
            ));
        }
        for (field, value) in [
            ("attention_bias", self.attention_bias),
            ("mlp_bias", self.mlp_bias),
            ("tie_word_embeddings", self.tie_word_embeddings),
        ] {
            if value == Some(true) {
                return Err(ConfigError::new(
                    field,
                    "Janus checkpoints use `false`; `true` is not supported",
                ));
            }
        }
        if let Some(t) = self.model_type.filter(|t| t != "llama") {
            return Err(ConfigError::new(
                "model_type",
                format!("expected \"llama\", got \"{t}\""),
            ));
        }
        Ok(LlamaConfig {
            hidden_size,
            intermediate_size: check_size(
                "intermediate_size",
                get(self.intermediate_size, 11008),
                4 * MAX_WIDTH,
            )?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            num_hidden_layers: check_size(
                "num_hidden_layers",
                get(self.num_hidden_layers, 32),
                MAX_LAYERS,
            )?,
            vocab_size: check_size("vocab_size", get(self.vocab_size, 32000), MAX_VOCAB)?,
            head_dim,
            rms_norm_eps: check_positive("rms_norm_eps", self.rms_norm_eps.unwrap_or(1e-6))?,
            rope_theta: check_positive("rope_theta", self.rope_theta.unwrap_or(10000.0))?,
            max_position_embeddings: check_size(
                "max_position_embeddings",
                get(self.max_position_embeddings, 2048),
                MAX_POSITIONS,
            )?,
        })
    }
}

impl LlamaConfig {
    /// The LLM of Janus-Pro-1B and Janus-1.3B.
    pub fn janus_pro_1b() -> Self {
        Self::janus(2048, 5632, 16, 24)
    }

    /// The LLM of Janus-Pro-7B (HF defaults: 4096 wide, 11008 MLP, 32 heads).
    pub fn janus_pro_7b() -> Self {
        Self::janus(4096, 11008, 32, 30)
    }

    fn janus(hidden: usize, intermediate: usize, heads: usize, layers: usize) -> Self {
        Self {
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            num_hidden_layers: layers,
            vocab_size: 102400,
            head_dim: hidden / heads,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: 16384,
        }
    }
}
