//! The SigLIP ViT that Janus uses to *understand* images, generic over Burn's
//! [`Backend`](burn::prelude::Backend): patch conv, learned position embedding, pre-norm
//! blocks with fused `qkv` and exact GELU, and the final LayerNorm (eps 1e-6). The
//! attention-pool head stored in the checkpoints is never run. Sizes come from the
//! config (real checkpoints: `siglip_large_patch16_384`).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::prelude::*;
//! use burn::tensor::DType;
//! use janus_checkpoint::Checkpoint;
//! use janus_core::Weights;
//! use janus_und_encoder::{SiglipConfig, SiglipEncoder};
//!
//! # fn main() -> janus_core::Result<()> {
//! let config = SiglipConfig::siglip_large_patch16_384();
//! let ckpt = Checkpoint::open("Janus-Pro-1B")?;
//! let w = Weights::new(&ckpt, &Default::default(), DType::F32);
//! let vit = SiglipEncoder::<Flex>::load(&w.pp("vision_model.vision_tower"), &config)?;
//! let s = config.image_size;
//! let pixels = Tensor::<Flex, 4>::zeros([1, 3, s, s], &Default::default()); // in [-1, 1]
//! let features = vit.encode(pixels)?; // [1, tokens, width]
//! # Ok(()) }
//! ```

mod block;
mod config;

use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use janus_core::nn::LayerNorm;
use janus_core::{Error, Result, Weights};

pub use block::VitBlock;
pub use config::{SiglipConfig, SiglipParams};

/// LayerNorm epsilon of every SigLIP norm in Janus.
pub const LN_EPS: f64 = 1e-6;

/// The SigLIP vision tower (`vision_model.vision_tower.*`).
#[derive(Debug, Clone)]
pub struct SiglipEncoder<B: Backend> {
    /// Patch conv weight `[width, 3, p, p]`.
    pub patch_weight: Tensor<B, 4>,
    /// Patch conv bias `[width]`.
    pub patch_bias: Tensor<B, 1>,
    /// `[1, tokens, width]`.
    pub pos_embed: Tensor<B, 3>,
    /// Transformer blocks.
    pub blocks: Vec<VitBlock<B>>,
    /// Final norm.
    pub norm: LayerNorm<B>,
    config: SiglipConfig,
}

impl<B: Backend> SiglipEncoder<B> {
    /// Loads `patch_embed.proj`, `pos_embed`, `blocks.N` and `norm` under `w`
    /// (`vision_model.vision_tower` in a Janus checkpoint).
    pub fn load(w: &Weights<B>, c: &SiglipConfig) -> Result<Self> {
        let patch = w.pp("patch_embed.proj");
        let blocks = w.pp("blocks");
        // The blocks past the selected layer (`select_layer` below -1) never
        // run: their weights are left in the checkpoint, as the reference
        // leaves them.
        for i in c.layers..c.total_layers {
            blocks.skip(i);
        }
        Ok(Self {
            patch_weight: patch.tensor("weight", [c.width, 3, c.patch_size, c.patch_size])?,
            patch_bias: patch.tensor("bias", [c.width])?,
            pos_embed: w.tensor("pos_embed", [1, c.num_patches(), c.width])?,
            blocks: (0..c.layers)
                .map(|i| VitBlock::load(&blocks.pp(i), c))
                .collect::<Result<_>>()?,
            norm: LayerNorm::load(&w.pp("norm"), c.width, LN_EPS)?,
            config: c.clone(),
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &SiglipConfig {
        &self.config
    }

    /// Patch embedding plus position embedding: `[B, 3, S, S]` to `[B, tokens, width]`.
    pub fn embed(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let [b, c, h, w] = pixels.dims();
        let s = self.config.image_size;
        if c != 3 || h != s || w != s {
            return Err(Error::Invalid(format!(
                "the vision encoder takes [N, 3, {s}, {s}] pixels, got [{b}, {c}, {h}, {w}]"
            )));
        }
        let p = self.config.patch_size;
        let x = conv2d(
            pixels,
            self.patch_weight.clone(),
            Some(self.patch_bias.clone()),
            ConvOptions::new([p, p], [0, 0], [1, 1], 1),
        );
        let [_, width, gh, gw] = x.dims();
        Ok(x.reshape([b, width, gh * gw]).swap_dims(1, 2) + self.pos_embed.clone())
    }

    /// Encodes preprocessed images `[B, 3, S, S]` (values in [-1, 1]) to features
    /// `[B, tokens, width]` with the final LayerNorm applied.
    ///
    /// On the CPU backend the tower's activations stay in f32 whatever the
    /// weights' dtype (16-bit weights are widened a panel at a time inside the
    /// products); the features come back in the weights' dtype. Converting
    /// 16-bit activations at every product, norm and GELU made f16 and bf16
    /// about 15 % slower than f32 there.
    pub fn encode(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let mut x = self.embed(pixels)?;
        let dtype = x.dtype();
        let widen = janus_core::is_flex::<B>() && dtype != DType::F32;
        if widen {
            x = x.cast(DType::F32);
        }
        for block in &self.blocks {
            x = block.forward(x);
        }
        let y = self.norm.forward(x);
        Ok(if widen { y.cast(dtype) } else { y })
    }
}
