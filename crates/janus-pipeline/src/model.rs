//! The whole Janus model, assembled from its parts.

use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;
use janus_checkpoint::Checkpoint;
use janus_core::nn::Linear;
use janus_core::{KeyPattern, Precision, Weights};
use janus_gen_tokenizer::VqModel;
use janus_heads::{GenEmbed, GenHead, MlpProjector};
use janus_llm::Llama;
use janus_und_encoder::SiglipEncoder;

use crate::config::JanusConfig;
use crate::layout::{KNOWN_UNUSED, open_checkpoint, prefix};
use crate::{PipelineError, Result};

/// Which modules a model loads: a command loads only what it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Modules {
    /// Every module (both directions).
    #[default]
    All,
    /// Understanding only: no VQ tokenizer, gen aligner, gen head or gen
    /// embedding.
    Understanding,
    /// Image generation only: no SigLIP encoder, understanding aligner or
    /// `lm_head`.
    Generation,
}

impl Modules {
    /// Whether the understanding modules (SigLIP, aligner, `lm_head`) load.
    pub fn understanding(self) -> bool {
        self != Self::Generation
    }

    /// Whether the generation modules (VQ, gen aligner, head, embedding) load.
    pub fn generation(self) -> bool {
        self != Self::Understanding
    }

    /// The checkpoint keys left unread: known-unused ones and those of the
    /// modules not loaded.
    pub fn unused_keys(self) -> Vec<KeyPattern> {
        let mut keys = KNOWN_UNUSED.to_vec();
        if !self.understanding() {
            keys.extend([
                KeyPattern::Prefix("vision_model."),
                KeyPattern::Prefix("aligner."),
                KeyPattern::Prefix("language_model.lm_head."),
            ]);
        }
        if !self.generation() {
            keys.extend([
                KeyPattern::Prefix("gen_vision_model."),
                KeyPattern::Prefix("gen_aligner."),
                KeyPattern::Prefix("gen_head."),
                KeyPattern::Prefix("gen_embed."),
            ]);
        }
        keys
    }
}

/// `MultiModalityCausalLM`: the modules of a Janus checkpoint (those of the
/// other direction are `None` when loaded for one direction, see [`Modules`]).
#[derive(Debug, Clone)]
pub struct JanusModel<B: Backend> {
    /// `vision_model`: SigLIP understanding encoder.
    pub vision: Option<SiglipEncoder<B>>,
    /// `aligner`: ViT features to LLM width.
    pub aligner: Option<MlpProjector<B>>,
    /// `gen_vision_model`: VQ-16 tokenizer.
    pub vq: Option<VqModel<B>>,
    /// `gen_aligner`: code embeddings to LLM width.
    pub gen_aligner: Option<MlpProjector<B>>,
    /// `gen_head`: hidden states to code logits.
    pub gen_head: Option<GenHead<B>>,
    /// `gen_embed`: code embedding table.
    pub gen_embed: Option<GenEmbed<B>>,
    /// `language_model`: the Llama backbone (without `lm_head` for
    /// [`Modules::Generation`]).
    pub llm: Llama<B>,
    /// The config.
    pub config: JanusConfig,
    device: B::Device,
    precision: Precision,
    modules: Modules,
    weight_bytes: u64,
}

/// The module `m` of a model, or the error that says it was not loaded.
fn loaded<'a, T>(m: &'a Option<T>, name: &str, modules: Modules) -> Result<&'a T> {
    m.as_ref().ok_or_else(|| {
        PipelineError::Invalid(format!(
            "this model was loaded for {} only, without `{name}`",
            match modules {
                Modules::Generation => "image generation",
                _ => "understanding",
            }
        ))
    })
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
        Self::load_modules(ckpt, config, device, precision, Modules::All)
    }

    /// [`JanusModel::load`] of only `modules` (the other modules' keys are
    /// left unread, never converted).
    pub fn load_modules(
        ckpt: &Checkpoint,
        config: &JanusConfig,
        device: &B::Device,
        precision: impl Into<Precision>,
        modules: Modules,
    ) -> Result<Self> {
        let w = Weights::<B>::new(ckpt, device, precision);
        let model = Self::from_weights_of(&w, config, modules)?;
        w.finish(&modules.unused_keys())?;
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

    /// [`JanusModel::random`] of only `modules`.
    pub fn random_modules(
        config: &JanusConfig,
        device: &B::Device,
        precision: impl Into<Precision>,
        seed: u64,
        modules: Modules,
    ) -> Result<Self> {
        Self::from_weights_of(
            &Weights::<B>::random(device, precision, seed),
            config,
            modules,
        )
    }

    /// Takes every module's tensors from `w` (the caller checks what is left).
    pub(crate) fn from_weights(w: &Weights<B>, config: &JanusConfig) -> Result<Self> {
        Self::from_weights_of(w, config, Modules::All)
    }

    /// Takes the tensors of `modules` from `w`.
    pub(crate) fn from_weights_of(
        w: &Weights<B>,
        config: &JanusConfig,
        modules: Modules,
    ) -> Result<Self> {
        let (und, generating) = (modules.understanding(), modules.generation());
        let vision = und
            .then(|| SiglipEncoder::load(&w.pp(prefix::VISION), &config.vision))
            .transpose()?;
        let aligner = und
            .then(|| MlpProjector::load(&w.pp(prefix::ALIGNER), &config.aligner))
            .transpose()?
            .map(MlpProjector::for_many_rows);
        // On the CPU the VQ model runs in f32 whatever the runtime dtype: its
        // convolutions and norms work in f32 anyway, and 16-bit tensors between
        // them only add conversions (f16 decoding was 1.25x slower than f32) for
        // 72M parameters (+143 MB).
        let vq_weights = if janus_core::is_flex::<B>() {
            w.pp(prefix::VQ).with_dtype(DType::F32)
        } else {
            w.pp(prefix::VQ)
        };
        let vq = generating
            .then(|| VqModel::load(&vq_weights, &config.vq))
            .transpose()?;
        let gen_aligner = generating
            .then(|| MlpProjector::load(&w.pp(prefix::GEN_ALIGNER), &config.gen_aligner))
            .transpose()?;
        let gen_head = generating
            .then(|| GenHead::load(&w.pp(prefix::GEN_HEAD), &config.gen_head))
            .transpose()?;
        let gen_embed = generating
            .then(|| GenEmbed::load(&w.pp(prefix::GEN_EMBED), &config.gen_embed))
            .transpose()?;
        let llm = match und {
            true => Llama::load(&w.pp(prefix::LLM), &config.language)?,
            false => Llama::load_without_head(&w.pp(prefix::LLM), &config.language)?,
        };
        Ok(Self {
            vision,
            aligner,
            vq,
            gen_aligner,
            gen_head,
            gen_embed,
            llm,
            config: config.clone(),
            device: w.device().clone(),
            // What the model runs in: a block format no matrix could take
            // is not one.
            precision: match w.precision() {
                p if w.quantized_matrices() == 0 => Precision { quant: None, ..p },
                p => p,
            },
            modules,
            weight_bytes: w.bytes_taken(),
        })
    }

    /// The SigLIP encoder (an error for a generation-only model).
    pub fn vision(&self) -> Result<&SiglipEncoder<B>> {
        loaded(&self.vision, "vision_model", self.modules)
    }

    /// The understanding aligner (an error for a generation-only model).
    pub fn aligner(&self) -> Result<&MlpProjector<B>> {
        loaded(&self.aligner, "aligner", self.modules)
    }

    /// The VQ tokenizer (an error for an understanding-only model).
    pub fn vq(&self) -> Result<&VqModel<B>> {
        loaded(&self.vq, "gen_vision_model", self.modules)
    }

    /// The generation aligner (an error for an understanding-only model).
    pub fn gen_aligner(&self) -> Result<&MlpProjector<B>> {
        loaded(&self.gen_aligner, "gen_aligner", self.modules)
    }

    /// The generation head (an error for an understanding-only model).
    pub fn gen_head(&self) -> Result<&GenHead<B>> {
        loaded(&self.gen_head, "gen_head", self.modules)
    }

    /// The code embedding (an error for an understanding-only model).
    pub fn gen_embed(&self) -> Result<&GenEmbed<B>> {
        loaded(&self.gen_embed, "gen_embed", self.modules)
    }

    /// The LLM's text head (an error for a generation-only model).
    pub fn lm_head(&self) -> Result<&Linear<B>> {
        loaded(&self.llm.lm_head, "language_model.lm_head", self.modules)
    }

    /// The modules loaded.
    pub fn modules(&self) -> Modules {
        self.modules
    }

    /// Bytes of weights held (as loaded: quantized, 16-bit or f32).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
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
        Self::load_dir_modules(dir, device, precision, Modules::All)
    }

    /// [`JanusModel::load_dir`] of only `modules`.
    pub fn load_dir_modules(
        dir: impl AsRef<Path>,
        device: &B::Device,
        precision: impl Into<Precision>,
        modules: Modules,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = JanusConfig::from_file(dir.join("config.json"))?;
        let (ckpt, _) = open_checkpoint(dir)?;
        Self::load_modules(&ckpt, &config, device, precision, modules)
    }
}
