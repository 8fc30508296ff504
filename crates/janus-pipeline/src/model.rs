//! The whole Janus model, assembled from its parts.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use janus_checkpoint::Checkpoint;
use janus_core::{Precision, Weights};
use janus_gen_tokenizer::VqModel;
use janus_heads::{GenEmbed, GenHead, MlpProjector};
use janus_llm::Llama;
use janus_und_encoder::SiglipEncoder;

use crate::Result;
use crate::config::JanusConfig;
use crate::layout::{KNOWN_UNUSED, open_checkpoint, prefix};

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
    device: B::Device,
    precision: Precision,
}

impl<B: Backend> JanusModel<B> {
    /// Loads every module from `ckpt` (keys in the original layout, see
    /// [`crate::layout`]), converting weights to `precision` (a [`DType`], or
    /// one with a quantized format for the LLM's linears, `lm_head` and the
    /// gen head). Fails on any missing key, shape mismatch or unknown key.
    pub fn load(
        ckpt: &Checkpoint,
        config: &JanusConfig,
        device: &B::Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        let w = Weights::<B>::new(ckpt, device, precision);
        let model = Self::from_weights(&w, config)?;
        w.finish(&KNOWN_UNUSED)?;
        Ok(model)
    }

    /// Builds the model at the config's real sizes with seeded random weights (for
    /// benchmarks without downloads).
    pub fn random(
        config: &JanusConfig,
        device: &B::Device,
        precision: impl Into<Precision>,
        seed: u64,
    ) -> Result<Self> {
        Self::from_weights(&Weights::<B>::random(device, precision, seed), config)
    }

    /// Takes every module's tensors from `w` (the caller checks what is left).
    pub(crate) fn from_weights(w: &Weights<B>, config: &JanusConfig) -> Result<Self> {
        Ok(Self {
            vision: SiglipEncoder::load(&w.pp(prefix::VISION), &config.vision)?,
            aligner: MlpProjector::load(&w.pp(prefix::ALIGNER), &config.aligner)?.for_many_rows(),
            vq: VqModel::load(&w.pp(prefix::VQ), &config.vq)?,
            gen_aligner: MlpProjector::load(&w.pp(prefix::GEN_ALIGNER), &config.gen_aligner)?,
            gen_head: GenHead::load(&w.pp(prefix::GEN_HEAD), &config.gen_head)?,
            gen_embed: GenEmbed::load(&w.pp(prefix::GEN_EMBED), &config.gen_embed)?,
            llm: Llama::load(&w.pp(prefix::LLM), &config.language)?,
            config: config.clone(),
            device: w.device().clone(),
            precision: w.precision(),
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The runtime float dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.precision.dtype
    }

    /// The precision the model was loaded in (dtype and quantized format).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Loads `config.json` and the weights of a model directory.
    pub fn load_dir(
        dir: impl AsRef<Path>,
        device: &B::Device,
        precision: impl Into<Precision>,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = JanusConfig::from_file(dir.join("config.json"))?;
        let (ckpt, _) = open_checkpoint(dir)?;
        Self::load(&ckpt, &config, device, precision)
    }
}
