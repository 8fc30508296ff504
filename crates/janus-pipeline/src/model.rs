//! The whole Janus model, assembled from its parts.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use janus_core::{Checkpoint, JanusConfig, Result, Weights};
use janus_gen_tokenizer::VqModel;
use janus_heads::{GenEmbed, GenHead, MlpProjector};
use janus_llm::Llama;
use janus_und_encoder::SiglipEncoder;

/// `MultiModalityCausalLM`: every module of a Janus checkpoint.
#[derive(Debug, Clone)]
pub struct JanusModel<B: Backend> {
    /// `vision_model`: SigLIP understanding encoder.
    pub vision: SiglipEncoder<B>,
    /// `aligner`: ViT features to LLM width.
    pub aligner: MlpProjector<B>,
    /// `gen_vision_model`: VQ-16 tokenizer.
    pub vq: VqModel<B>,
    /// `gen_aligner`: code embeddings to LLM width.
    pub gen_aligner: MlpProjector<B>,
    /// `gen_head`: hidden states to code logits.
    pub gen_head: GenHead<B>,
    /// `gen_embed`: code embedding table.
    pub gen_embed: GenEmbed<B>,
    /// `language_model`: the Llama backbone.
    pub llm: Llama<B>,
    /// The config.
    pub config: JanusConfig,
}

/// What loading found besides the model.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Tensors present but knowingly unused (attention pool, `codebook_used`, ...).
    pub skipped: Vec<String>,
}

impl<B: Backend> JanusModel<B> {
    /// Loads every module from `ckpt`, converting weights to `dtype`. Fails on any
    /// missing key, shape mismatch or unknown key.
    pub fn load(
        ckpt: &Checkpoint,
        config: &JanusConfig,
        device: &B::Device,
        dtype: DType,
    ) -> Result<(Self, LoadReport)> {
        Self::from_weights(Weights::<B>::new(ckpt, device, dtype), config)
    }

    /// Builds the model at the config's real sizes with seeded random weights (for
    /// benchmarks without downloads).
    pub fn random(
        config: &JanusConfig,
        device: &B::Device,
        dtype: DType,
        seed: u64,
    ) -> Result<Self> {
        Ok(Self::from_weights(Weights::<B>::random(device, dtype, seed), config)?.0)
    }

    fn from_weights(w: Weights<B>, config: &JanusConfig) -> Result<(Self, LoadReport)> {
        let model = Self {
            vision: SiglipEncoder::load(&w, &config.vision)?,
            aligner: MlpProjector::load(&w, MlpProjector::<B>::ALIGNER, &config.aligner)?
                .for_many_rows(),
            vq: VqModel::load(&w, &config.vq)?,
            gen_aligner: MlpProjector::load(
                &w,
                MlpProjector::<B>::GEN_ALIGNER,
                &config.gen_aligner,
            )?,
            gen_head: GenHead::load(&w, &config.gen_head)?,
            gen_embed: GenEmbed::load(&w, &config.gen_embed)?,
            llm: Llama::load(&w, &config.language)?,
            config: config.clone(),
        };
        let skipped = w.finish(&[])?;
        Ok((model, LoadReport { skipped }))
    }

    /// Loads `config.json` and the weights of a model directory.
    pub fn load_dir(
        dir: impl AsRef<Path>,
        device: &B::Device,
        dtype: DType,
    ) -> Result<(Self, LoadReport)> {
        let dir = dir.as_ref();
        let config = JanusConfig::from_file(dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        Self::load(&ckpt, &config, device, dtype)
    }
}
