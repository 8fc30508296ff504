//! The vision tower's config: `vision_config.params` as `config.json` writes it
//! and the checked [`SiglipConfig`] the encoder runs.
//!
//! The real configs name the tower (`siglip_large_patch16_384`) and carry no
//! sizes (the reference looks them up by name); the tiny test checkpoints carry
//! them as extension keys (`width`, `layers`, `heads`, `patch_size`,
//! `mlp_ratio`). Present extension keys win; otherwise the named tower's sizes.

use std::num::NonZeroUsize;

use janus_core::ConfigError;
use janus_core::config::{check_multiple, check_positive, check_size};
use serde::Deserialize;

/// Largest input side accepted (the real tower takes 384).
const MAX_IMAGE_SIZE: usize = 2048;
const MAX_WIDTH: usize = 1 << 14;
const MAX_LAYERS: usize = 256;

/// `vision_config.params` as written in `config.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SiglipParams {
    /// e.g. `siglip_large_patch16_384`.
    pub model_name: Option<String>,
    /// Input side in pixels (384).
    pub image_size: Option<NonZeroUsize>,
    /// Patch side (extension key).
    pub patch_size: Option<NonZeroUsize>,
    /// Embedding width (extension key).
    pub width: Option<NonZeroUsize>,
    /// Blocks stored (extension key).
    pub layers: Option<NonZeroUsize>,
    /// Attention heads (extension key).
    pub heads: Option<NonZeroUsize>,
    /// MLP width over embedding width (extension key).
    pub mlp_ratio: Option<f64>,
    /// Which block's output is the feature (-1: the last).
    pub select_layer: Option<i64>,
    /// Must be `same`.
    pub select_feature: Option<String>,
}

/// The SigLIP ViT's sizes, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipConfig {
    /// The tower's name, a label.
    pub model_name: String,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Embedding width.
    pub width: usize,
    /// Transformer blocks run (depth after `select_layer`).
    pub layers: usize,
    /// Blocks present in the weights.
    pub total_layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden size.
    pub mlp_dim: usize,
}

impl SiglipConfig {
    /// `siglip_large_patch16_384`, the tower of every real Janus checkpoint.
    pub fn siglip_large_patch16_384() -> Self {
        Self {
            model_name: "siglip_large_patch16_384".into(),
            image_size: 384,
            patch_size: 16,
            width: 1024,
            layers: 24,
            total_layers: 24,
            heads: 16,
            mlp_dim: 4096,
        }
    }

    /// Tokens per image (`(image_size / patch_size)^2`).
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }
}

impl SiglipParams {
    /// Applies the rule above and checks every value; errors name the field.
    pub fn into_config(self) -> Result<SiglipConfig, ConfigError> {
        let large = SiglipConfig::siglip_large_patch16_384();
        let model_name = self.model_name.unwrap_or_else(|| large.model_name.clone());
        if self.width.is_none() && !model_name.starts_with("siglip_large_patch16") {
            return Err(ConfigError::new(
                "model_name",
                format!(
                    "unknown vision tower `{model_name}` and no size keys (width, layers, heads, patch_size, mlp_ratio)"
                ),
            ));
        }
        let get = |v: Option<NonZeroUsize>, default: usize| v.map_or(default, NonZeroUsize::get);
        let image_size = check_size("image_size", get(self.image_size, 384), MAX_IMAGE_SIZE)?;
        let patch_size = check_size(
            "patch_size",
            get(self.patch_size, large.patch_size),
            image_size,
        )?;
        let width = check_size("width", get(self.width, large.width), MAX_WIDTH)?;
        let total_layers = check_size("layers", get(self.layers, large.total_layers), MAX_LAYERS)?;
        let heads = check_size("heads", get(self.heads, large.heads), width)?;
        let mlp_ratio = check_positive(
            "mlp_ratio",
            self.mlp_ratio
                .unwrap_or(large.mlp_dim as f64 / large.width as f64),
        )?;
        if let Some(sel) = self.select_feature.filter(|s| s != "same") {
            return Err(ConfigError::new(
                "select_feature",
                format!("only \"same\" is supported, got \"{sel}\""),
            ));
        }
        // create_siglip_vit: depth = min(L, L + select_layer + 1) if select_layer <= 0
        // else min(L, select_layer).
        let select_layer = self.select_layer.unwrap_or(-1);
        let l = total_layers as i64;
        let depth = if select_layer <= 0 {
            l.min(l.saturating_add(select_layer).saturating_add(1))
        } else {
            l.min(select_layer)
        };
        if depth <= 0 {
            return Err(ConfigError::new(
                "select_layer",
                format!("{select_layer} leaves no ViT block of {total_layers}"),
            ));
        }
        check_multiple("image_size", image_size, patch_size, "patch_size")?;
        check_multiple("heads", width, heads, "the heads of width")?;
        // Checked as the product (0.0001 read "must be positive, got 0",
        // 1e308 as 2^64 - 1).
        let mlp = width as f64 * mlp_ratio;
        if !(1.0..=(8 * MAX_WIDTH) as f64).contains(&mlp) {
            return Err(ConfigError::new(
                "mlp_ratio",
                format!(
                    "{mlp_ratio} x width {width} = {mlp} MLP units: must be from 1 to {}",
                    8 * MAX_WIDTH
                ),
            ));
        }
        let mlp_dim = mlp as usize;
        Ok(SiglipConfig {
            model_name,
            image_size,
            patch_size,
            width,
            layers: depth as usize,
            total_layers,
            heads,
            mlp_dim,
        })
    }
}
