//! The VQ tokenizer's config: `gen_vision_config.params` as `config.json` writes
//! it and the checked [`VqConfig`] the model runs. The real configs carry only
//! `image_token_size` and `n_embed` (the reference builds `VQ_16` by name); the
//! tiny test checkpoints carry the other sizes as extension keys.

use std::num::NonZeroUsize;

use janus_core::ConfigError;
use janus_core::config::check_size;
use serde::Deserialize;

/// GroupNorm groups of every VQ-16 norm.
pub const GROUPS: usize = 32;

const MAX_IMAGE_SIZE: usize = 2048;
const MAX_CHANNELS: usize = 1 << 12;
const MAX_CODES: usize = 1 << 22;
const MAX_LEVELS: usize = 8;
const MAX_BLOCKS: usize = 16;

/// `gen_vision_config.params` as written in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct VqParams {
    /// Image codes of the generation embedding (16384).
    pub image_token_size: Option<NonZeroUsize>,
    /// Width of the generation embedding (8).
    pub n_embed: Option<NonZeroUsize>,
    /// Codebook rows (extension key).
    pub codebook_size: Option<NonZeroUsize>,
    /// Codebook vector size (extension key).
    pub codebook_embed_dim: Option<NonZeroUsize>,
    /// Base channels (extension key).
    pub ch: Option<NonZeroUsize>,
    /// Encoder channel multipliers (extension key).
    pub encoder_ch_mult: Option<Vec<NonZeroUsize>>,
    /// Decoder channel multipliers (extension key).
    pub decoder_ch_mult: Option<Vec<NonZeroUsize>>,
    /// Latent channels (extension key).
    pub z_channels: Option<NonZeroUsize>,
    /// Res blocks per encoder level (extension key).
    pub num_res_blocks: Option<NonZeroUsize>,
    /// Image side (extension key).
    pub image_size: Option<NonZeroUsize>,
}

/// The LlamaGen VQ-16 sizes, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqConfig {
    /// Codebook rows.
    pub codebook_size: usize,
    /// Codebook vector size.
    pub code_dim: usize,
    /// Base channel count.
    pub base_channels: usize,
    /// Encoder channel multipliers per level.
    pub encoder_ch_mult: Vec<usize>,
    /// Decoder channel multipliers per level.
    pub decoder_ch_mult: Vec<usize>,
    /// Latent channels before `quant_conv`.
    pub latent_channels: usize,
    /// Res blocks per encoder level (the decoder uses one more).
    pub num_res_blocks: usize,
    /// Image side in pixels.
    pub image_size: usize,
}

impl VqConfig {
    /// VQ-16 of every real Janus checkpoint (384-pixel images, 24x24 codes).
    pub fn vq16() -> Self {
        Self {
            codebook_size: 16384,
            code_dim: 8,
            base_channels: 128,
            encoder_ch_mult: vec![1, 1, 2, 2, 4],
            decoder_ch_mult: vec![1, 1, 2, 2, 4],
            latent_channels: 256,
            num_res_blocks: 2,
            image_size: 384,
        }
    }

    /// Spatial downsampling factor (`2^(levels-1)`).
    pub fn downsample(&self) -> usize {
        1 << (self.encoder_ch_mult.len().saturating_sub(1))
    }

    /// Side of the code grid for `image_size`.
    pub fn grid_side(&self) -> usize {
        self.image_size / self.downsample()
    }
}

fn mults(field: &str, v: Option<Vec<NonZeroUsize>>) -> Result<Option<Vec<usize>>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    if v.is_empty() || v.len() > MAX_LEVELS {
        return Err(ConfigError::new(
            field,
            format!(
                "expected 1 to {MAX_LEVELS} positive integers, got {}",
                v.len()
            ),
        ));
    }
    Ok(Some(v.into_iter().map(NonZeroUsize::get).collect()))
}

impl VqParams {
    /// Fills VQ-16's sizes for absent keys and checks every value; errors name
    /// the field.
    pub fn into_config(self) -> Result<VqConfig, ConfigError> {
        let real = VqConfig::vq16();
        let get = |v: Option<NonZeroUsize>, default: usize| v.map_or(default, NonZeroUsize::get);
        let c = VqConfig {
            codebook_size: check_size(
                "codebook_size",
                get(self.codebook_size, real.codebook_size),
                MAX_CODES,
            )?,
            code_dim: check_size(
                "codebook_embed_dim",
                get(self.codebook_embed_dim, real.code_dim),
                MAX_CHANNELS,
            )?,
            base_channels: check_size("ch", get(self.ch, real.base_channels), MAX_CHANNELS)?,
            encoder_ch_mult: mults("encoder_ch_mult", self.encoder_ch_mult)?
                .unwrap_or_else(|| real.encoder_ch_mult.clone()),
            decoder_ch_mult: mults("decoder_ch_mult", self.decoder_ch_mult)?
                .unwrap_or_else(|| real.decoder_ch_mult.clone()),
            latent_channels: check_size(
                "z_channels",
                get(self.z_channels, real.latent_channels),
                MAX_CHANNELS,
            )?,
            num_res_blocks: check_size(
                "num_res_blocks",
                get(self.num_res_blocks, real.num_res_blocks),
                MAX_BLOCKS,
            )?,
            image_size: check_size(
                "image_size",
                get(self.image_size, real.image_size),
                MAX_IMAGE_SIZE,
            )?,
        };
        if !c.image_size.is_multiple_of(c.downsample()) {
            return Err(ConfigError::new(
                "image_size",
                format!(
                    "{} is not a multiple of the downsampling factor {}",
                    c.image_size,
                    c.downsample()
                ),
            ));
        }
        for (field, mult) in [
            ("encoder_ch_mult", &c.encoder_ch_mult),
            ("decoder_ch_mult", &c.decoder_ch_mult),
        ] {
            for m in mult {
                let channels = check_size(field, m.saturating_mul(c.base_channels), MAX_CHANNELS)?;
                if channels % GROUPS != 0 {
                    return Err(ConfigError::new(
                        field,
                        format!(
                            "channel count {channels} is not divisible by the {GROUPS} GroupNorm groups"
                        ),
                    ));
                }
            }
        }
        Ok(c)
    }
}
