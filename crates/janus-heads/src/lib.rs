//! The small Janus heads around the language model, generic over Burn's
//! [`Backend`](burn::prelude::Backend):
//!
//! - [`MlpProjector`]: the `mlp_gelu` aligners (`aligner`: ViT features to LLM width;
//!   `gen_aligner`: 8-d code embeddings to LLM width);
//! - [`GenEmbed`]: the `gen_embed` table of image-code embeddings (not the VQ codebook);
//! - [`GenHead`]: `gen_head`, LLM hidden state to image-code logits.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::prelude::*;
//! use burn::tensor::DType;
//! use janus_checkpoint::Checkpoint;
//! use janus_core::{JanusConfig, Weights};
//! use janus_heads::{GenEmbed, GenHead, MlpProjector};
//!
//! # fn main() -> janus_core::Result<()> {
//! let config = JanusConfig::from_file("model/config.json")?;
//! let ckpt = Checkpoint::open("model")?;
//! let w = Weights::<Flex>::new(&ckpt, &Default::default(), DType::F32);
//! let gen_embed = GenEmbed::load(&w, &config.gen_embed)?;
//! let gen_aligner = MlpProjector::load(&w, MlpProjector::<Flex>::GEN_ALIGNER, &config.gen_aligner)?;
//! let gen_head = GenHead::load(&w, &config.gen_head)?;
//! let codes = Tensor::<Flex, 2, Int>::from_data([[7]], &Default::default());
//! let next_input = gen_aligner.forward(gen_embed.forward(codes)); // [1, 1, hidden]
//! let logits = gen_head.forward(next_input); // [1, 1, image_token_size]
//! # Ok(()) }
//! ```

use burn::prelude::*;
use janus_core::config::{GenEmbedConfig, GenHeadConfig, ProjectorConfig};
use janus_core::nn::{Embedding, GeluMlp};
use janus_core::{Result, Weights};

/// `mlp_gelu` projector of depth 2: `layers.0` Linear, exact GELU, `layers.2` Linear.
#[derive(Debug, Clone)]
pub struct MlpProjector<B: Backend> {
    /// The two layers.
    pub mlp: GeluMlp<B>,
}

impl<B: Backend> MlpProjector<B> {
    /// Checkpoint prefix of the understanding aligner.
    pub const ALIGNER: &'static str = "aligner";
    /// Checkpoint prefix of the generation aligner.
    pub const GEN_ALIGNER: &'static str = "gen_aligner";

    /// Loads `{prefix}.layers.0.*` and `{prefix}.layers.2.*`.
    pub fn load(w: &Weights<B>, prefix: &str, c: &ProjectorConfig) -> Result<Self> {
        Ok(Self {
            mlp: GeluMlp::load(
                w,
                &format!("{prefix}.layers.0"),
                &format!("{prefix}.layers.2"),
                c.input_dim,
                c.n_embed,
                c.n_embed,
            )?,
        })
    }

    /// For inputs of many rows, such as the understanding aligner's 576 image
    /// tokens ([`GeluMlp::for_many_rows`]).
    pub fn for_many_rows(self) -> Self {
        Self {
            mlp: self.mlp.for_many_rows(),
        }
    }

    /// Projects the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.mlp.forward(x)
    }
}

/// `gen_embed`: image code to a small embedding (fed to the generation aligner).
#[derive(Debug, Clone)]
pub struct GenEmbed<B: Backend> {
    /// The table.
    pub embedding: Embedding<B>,
}

impl<B: Backend> GenEmbed<B> {
    /// Loads `gen_embed.weight`.
    pub fn load(w: &Weights<B>, c: &GenEmbedConfig) -> Result<Self> {
        Ok(Self {
            embedding: Embedding::load(w, "gen_embed", c.image_token_size, c.n_embed)?,
        })
    }

    /// Codes `[B, T]` to `[B, T, n_embed]`.
    pub fn forward(&self, codes: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embedding.forward(codes)
    }
}

/// `gen_head`: `vision_head(GELU(output_mlp_projector(h)))`.
#[derive(Debug, Clone)]
pub struct GenHead<B: Backend> {
    /// `output_mlp_projector` then `vision_head`.
    pub mlp: GeluMlp<B>,
}

impl<B: Backend> GenHead<B> {
    /// Loads `gen_head.output_mlp_projector.*` and `gen_head.vision_head.*`.
    pub fn load(w: &Weights<B>, c: &GenHeadConfig) -> Result<Self> {
        Ok(Self {
            mlp: GeluMlp::load(
                w,
                "gen_head.output_mlp_projector",
                "gen_head.vision_head",
                c.n_embed,
                c.image_token_embed,
                c.image_token_size,
            )?,
        })
    }

    /// Final LLM hidden states to image-code logits over the last dimension.
    pub fn forward<const D: usize>(&self, h: Tensor<B, D>) -> Tensor<B, D> {
        self.mlp.forward(h)
    }
}
