//! The heads' configs: the `params` of `aligner_config`, `gen_aligner_config`
//! and `gen_head_config` as `config.json` writes them, and the checked configs
//! with one name per width.

use std::num::NonZeroUsize;

use janus_core::ConfigError;
use janus_core::config::check_size;
use serde::Deserialize;

const MAX_WIDTH: usize = 1 << 16;
const MAX_CODES: usize = 1 << 22;

/// `params` of an `mlp_gelu` projector section as written in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProjectorParams {
    /// Must be `mlp_gelu`.
    pub projector_type: Option<String>,
    /// Must be 2.
    pub depth: Option<usize>,
    /// Input features.
    pub input_dim: Option<NonZeroUsize>,
    /// Output (and hidden) features.
    pub n_embed: Option<NonZeroUsize>,
}

/// An `mlp_gelu` projector of depth 2: `Linear(input_dim, output_dim) -> GELU ->
/// Linear(output_dim, output_dim)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorConfig {
    /// Input features (ViT width, or the code-embedding width).
    pub input_dim: usize,
    /// Output and hidden features (the LLM width).
    pub output_dim: usize,
}

/// `gen_head_config.params` as written in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct GenHeadParams {
    /// Input (LLM hidden) size.
    pub n_embed: Option<NonZeroUsize>,
    /// Hidden size of the head's MLP.
    pub image_token_embed: Option<NonZeroUsize>,
    /// Number of image codes.
    pub image_token_size: Option<NonZeroUsize>,
}

/// `gen_head`: LLM hidden state to image-code logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenHeadConfig {
    /// Input width (the LLM width).
    pub hidden_size: usize,
    /// Hidden width of the head's MLP.
    pub mlp_dim: usize,
    /// Image codes (logits).
    pub num_codes: usize,
}

/// `gen_embed`: image code to a small embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenEmbedConfig {
    /// Rows (image codes).
    pub num_codes: usize,
    /// Embedding width (the VQ code width in real checkpoints).
    pub code_dim: usize,
}

fn required(field: &str, v: Option<NonZeroUsize>, max: usize) -> Result<usize, ConfigError> {
    let v = v.ok_or_else(|| ConfigError::new(field, "missing"))?;
    check_size(field, v.get(), max)
}

impl ProjectorParams {
    /// Checks the projector type and sizes; errors name the field.
    pub fn into_config(self) -> Result<ProjectorConfig, ConfigError> {
        if let Some(t) = self.projector_type.filter(|t| t != "mlp_gelu") {
            return Err(ConfigError::new(
                "projector_type",
                format!("only \"mlp_gelu\" is supported, got \"{t}\""),
            ));
        }
        if let Some(d) = self.depth.filter(|d| *d != 2) {
            return Err(ConfigError::new(
                "depth",
                format!("only depth 2 is supported, got {d}"),
            ));
        }
        Ok(ProjectorConfig {
            input_dim: required("input_dim", self.input_dim, MAX_WIDTH)?,
            output_dim: required("n_embed", self.n_embed, MAX_WIDTH)?,
        })
    }
}

impl GenHeadParams {
    /// Checks the sizes; errors name the field.
    pub fn into_config(self) -> Result<GenHeadConfig, ConfigError> {
        Ok(GenHeadConfig {
            hidden_size: required("n_embed", self.n_embed, MAX_WIDTH)?,
            mlp_dim: required("image_token_embed", self.image_token_embed, MAX_WIDTH)?,
            num_codes: required("image_token_size", self.image_token_size, MAX_CODES)?,
        })
    }
}

impl GenEmbedConfig {
    /// Checks the sizes (read from `gen_vision_config.params`).
    pub fn new(num_codes: usize, code_dim: usize) -> Result<Self, ConfigError> {
        Ok(Self {
            num_codes: check_size("image_token_size", num_codes, MAX_CODES)?,
            code_dim: check_size("n_embed", code_dim, MAX_WIDTH)?,
        })
    }
}
