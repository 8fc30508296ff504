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
//! use janus_core::Weights;
//! use janus_heads::{GenEmbed, GenEmbedConfig, GenHead, GenHeadConfig, MlpProjector, ProjectorConfig};
//!
//! # fn main() -> janus_core::Result<()> {
//! let ckpt = Checkpoint::open("Janus-Pro-1B")?;
//! let w = Weights::<Flex>::new(&ckpt, &Default::default(), DType::F32);
//! let gen_embed = GenEmbed::load(&w.pp("gen_embed"), &GenEmbedConfig { num_codes: 16384, code_dim: 8 })?;
//! let gen_aligner = MlpProjector::load(&w.pp("gen_aligner"), &ProjectorConfig { input_dim: 8, output_dim: 2048 })?;
//! let gen_head = GenHead::load(&w.pp("gen_head"), &GenHeadConfig { hidden_size: 2048, mlp_dim: 2048, num_codes: 16384 })?;
//! let codes = Tensor::<Flex, 2, Int>::from_data([[7]], &Default::default());
//! let next_input = gen_aligner.forward(gen_embed.forward(codes)); // [1, 1, 2048]
//! let logits = gen_head.forward(next_input); // [1, 1, 16384]
//! # Ok(()) }
//! ```

mod config;

use burn::prelude::*;
use janus_core::nn::{Embedding, GeluMlp, Linear};
use janus_core::{Result, Weights};

pub use config::{GenEmbedConfig, GenHeadConfig, GenHeadParams, ProjectorConfig, ProjectorParams};

/// `mlp_gelu` projector of depth 2: `layers.0` Linear, exact GELU, `layers.2` Linear.
#[derive(Debug, Clone)]
pub struct MlpProjector<B: Backend> {
    /// The two layers.
    pub mlp: GeluMlp<B>,
}

impl<B: Backend> MlpProjector<B> {
    /// Loads `layers.0.*` and `layers.2.*` under `w` (`aligner` or
    /// `gen_aligner` in a Janus checkpoint).
    pub fn load(w: &Weights<B>, c: &ProjectorConfig) -> Result<Self> {
        let layers = w.pp("layers");
        Ok(Self {
            mlp: GeluMlp::new(
                Linear::load(&layers.pp(0), c.input_dim, c.output_dim)?,
                Linear::load(&layers.pp(2), c.output_dim, c.output_dim)?,
            ),
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
    /// Loads `weight` under `w` (`gen_embed` in a Janus checkpoint).
    pub fn load(w: &Weights<B>, c: &GenEmbedConfig) -> Result<Self> {
        Ok(Self {
            embedding: Embedding::load(w, c.num_codes, c.code_dim)?,
        })
    }

    /// Codes `[B, T]` to `[B, T, code_dim]`.
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
    /// Loads `output_mlp_projector.*` and `vision_head.*` under `w` (`gen_head`
    /// in a Janus checkpoint).
    pub fn load(w: &Weights<B>, c: &GenHeadConfig) -> Result<Self> {
        Ok(Self {
            mlp: GeluMlp::new(
                Linear::load_quantizable(
                    &w.pp("output_mlp_projector"),
                    c.hidden_size,
                    c.mlp_dim,
                    true,
                )?,
                Linear::load_quantizable(&w.pp("vision_head"), c.mlp_dim, c.num_codes, true)?,
            ),
        })
    }

    /// Final LLM hidden states to image-code logits over the last dimension.
    pub fn forward<const D: usize>(&self, h: Tensor<B, D>) -> Tensor<B, D> {
        self.mlp.forward(h)
    }
}
