//! `config.json` of a Janus checkpoint: the schema that puts the modules'
//! configs together (each module crate owns its own section), the transformers
//! port's schema mapped onto it, the cross-module checks, and presets for the
//! real variants. Every error names the file and the field path.

use std::path::Path;

use janus_core::{ConfigError, Error};
use janus_gen_tokenizer::{VqConfig, VqParams};
use janus_heads::{GenEmbedConfig, GenHeadConfig, GenHeadParams, ProjectorConfig, ProjectorParams};
use janus_llm::{LlamaConfig, LlamaJson};
use janus_und_encoder::{SiglipConfig, SiglipParams};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Result;

/// The most weights a config may describe (Janus-Pro-7B has about 7.4e9).
const MAX_PARAMETERS: u64 = 40_000_000_000;

/// The whole model config.
#[derive(Debug, Clone, PartialEq)]
pub struct JanusConfig {
    /// SigLIP understanding encoder (`vision_model`).
    pub vision: SiglipConfig,
    /// Understanding aligner (`aligner`).
    pub aligner: ProjectorConfig,
    /// VQ-16 image tokenizer (`gen_vision_model`).
    pub vq: VqConfig,
    /// Generation aligner (`gen_aligner`).
    pub gen_aligner: ProjectorConfig,
    /// Generation head (`gen_head`).
    pub gen_head: GenHeadConfig,
    /// Generation embedding table (`gen_embed`).
    pub gen_embed: GenEmbedConfig,
    /// Llama language model (`language_model`).
    pub language: LlamaConfig,
}

/// A `{"params": {...}}` section (`params` may be absent: all defaults).
#[derive(Debug, Deserialize)]
struct Section<T> {
    #[serde(default)]
    params: Option<T>,
}

/// `config.json` in the original schema.
#[derive(Debug, Deserialize)]
struct RawConfig {
    vision_config: Section<SiglipParams>,
    aligner_config: Section<ProjectorParams>,
    gen_vision_config: Section<VqParams>,
    gen_aligner_config: Section<ProjectorParams>,
    gen_head_config: Section<GenHeadParams>,
    language_config: LlamaJson,
}

impl JanusConfig {
    /// Reads and parses `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses a config from JSON text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        // A byte-order mark, as some editors save JSON, is not JSON.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let value: Value = serde_json::from_str(text).map_err(|e| {
            config_error(
                path.as_ref(),
                ConfigError::new("<root>", format!("not valid JSON: {e}")),
            )
        })?;
        Self::from_json(&value, path)
    }

    /// Parses a config from a JSON value; `path` is only used in error messages.
    /// Both the original schema and the transformers port's `JanusConfig`
    /// (`text_config` / `vision_config` / `vq_config`) are accepted.
    pub fn from_json(value: &Value, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let root = value.as_object().ok_or_else(|| {
            config_error(path, ConfigError::new("<root>", "expected a JSON object"))
        })?;
        if !root.contains_key("language_config") && root.contains_key("text_config") {
            return Self::from_json(&from_transformers(root), path);
        }
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            // A field missing from the top level has the path `.`.
            let field = match e.path().to_string() {
                p if p == "." => "<root>".to_string(),
                p => p,
            };
            config_error(path, ConfigError::new(field, e.into_inner().to_string()))
        })?;
        Self::from_raw(raw).map_err(|e| config_error(path, e))
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let params = |name: &str| format!("{name}.params");
        let vision = raw
            .vision_config
            .params
            .unwrap_or_default()
            .into_config()
            .map_err(|e| e.within(&params("vision_config")))?;
        let aligner = raw
            .aligner_config
            .params
            .unwrap_or_default()
            .into_config()
            .map_err(|e| e.within(&params("aligner_config")))?;
        let gen_aligner = raw
            .gen_aligner_config
            .params
            .unwrap_or_default()
            .into_config()
            .map_err(|e| e.within(&params("gen_aligner_config")))?;
        let vq_params = raw.gen_vision_config.params.unwrap_or_default();
        let gen_embed = GenEmbedConfig::new(
            vq_params.image_token_size.map_or(16384, |n| n.get()),
            vq_params.n_embed.map_or(8, |n| n.get()),
        )
        .map_err(|e| e.within(&params("gen_vision_config")))?;
        let vq = vq_params
            .into_config()
            .map_err(|e| e.within(&params("gen_vision_config")))?;
        let gen_head = raw
            .gen_head_config
            .params
            .unwrap_or_default()
            .into_config()
            .map_err(|e| e.within(&params("gen_head_config")))?;
        let language = raw
            .language_config
            .into_config()
            .map_err(|e| e.within("language_config"))?;
        let config = Self {
            vision,
            aligner,
            vq,
            gen_aligner,
            gen_head,
            gen_embed,
            language,
        };
        config.check_consistency()?;
        let params = config.parameter_count();
        if params > MAX_PARAMETERS {
            return Err(ConfigError::new(
                "<root>",
                format!(
                    "the config describes about {:.1}e9 parameters, more than the {:.0}e9 supported \
                     (Janus-Pro-7B has 7.4e9)",
                    params as f64 / 1e9,
                    MAX_PARAMETERS as f64 / 1e9
                ),
            ));
        }
        Ok(config)
    }

    /// About how many weights the config describes (the LLM, ViT and VQ blocks;
    /// norms and biases left out), to refuse absurd configs before building.
    pub fn parameter_count(&self) -> u64 {
        let l = &self.language;
        let (h, q, kv) = (
            l.hidden_size as u64,
            (l.num_attention_heads * l.head_dim) as u64,
            (l.num_key_value_heads * l.head_dim) as u64,
        );
        let layer = h * (2 * q + 2 * kv) + 3 * h * l.intermediate_size as u64;
        let llm = l.num_hidden_layers as u64 * layer + 2 * l.vocab_size as u64 * h;
        let v = &self.vision;
        let w = v.width as u64;
        let vit = v.total_layers as u64 * (4 * w * w + 2 * w * v.mlp_dim as u64);
        let c = &self.vq;
        let conv = |m: &usize| {
            let ch = (m * c.base_channels) as u64;
            (c.num_res_blocks as u64 + 1) * 2 * 9 * ch * ch
        };
        let vq: u64 = c
            .encoder_ch_mult
            .iter()
            .chain(&c.decoder_ch_mult)
            .map(conv)
            .sum();
        let heads = (self.gen_head.hidden_size * self.gen_head.mlp_dim
            + self.gen_head.mlp_dim * self.gen_head.num_codes) as u64;
        llm + vit + vq + heads
    }

    /// The widths that must agree across modules.
    fn check_consistency(&self) -> Result<(), ConfigError> {
        let h = self.language.hidden_size;
        let hidden = "language_config.hidden_size";
        let pairs = [
            (
                "aligner_config.params.input_dim",
                self.aligner.input_dim,
                self.vision.width,
                "the ViT width",
            ),
            (
                "aligner_config.params.n_embed",
                self.aligner.output_dim,
                h,
                hidden,
            ),
            (
                "gen_aligner_config.params.n_embed",
                self.gen_aligner.output_dim,
                h,
                hidden,
            ),
            (
                "gen_aligner_config.params.input_dim",
                self.gen_aligner.input_dim,
                self.gen_embed.code_dim,
                "gen_vision_config.params.n_embed",
            ),
            (
                "gen_head_config.params.n_embed",
                self.gen_head.hidden_size,
                h,
                hidden,
            ),
        ];
        for (field, got, want, what) in pairs {
            if got != want {
                return Err(ConfigError::new(
                    field,
                    format!("is {got} but must equal {what} ({want})"),
                ));
            }
        }
        Ok(())
    }

    /// `deepseek-ai/Janus-1.3B` (the same sizes as Janus-Pro-1B).
    pub fn janus_1_3b() -> Self {
        Self::janus_pro_1b()
    }

    /// `deepseek-ai/Janus-Pro-1B`.
    pub fn janus_pro_1b() -> Self {
        Self::real(LlamaConfig::janus_pro_1b())
    }

    /// `deepseek-ai/Janus-Pro-7B`.
    pub fn janus_pro_7b() -> Self {
        Self::real(LlamaConfig::janus_pro_7b())
    }

    /// SigLIP-L/16 @384 and VQ-16 around `language`, as in every real checkpoint.
    fn real(language: LlamaConfig) -> Self {
        let vision = SiglipConfig::siglip_large_patch16_384();
        let vq = VqConfig::vq16();
        let h = language.hidden_size;
        Self {
            aligner: ProjectorConfig {
                input_dim: vision.width,
                output_dim: h,
            },
            gen_aligner: ProjectorConfig {
                input_dim: vq.code_dim,
                output_dim: h,
            },
            gen_head: GenHeadConfig {
                hidden_size: h,
                mlp_dim: h,
                num_codes: vq.codebook_size,
            },
            gen_embed: GenEmbedConfig {
                num_codes: vq.codebook_size,
                code_dim: vq.code_dim,
            },
            vision,
            vq,
            language,
        }
    }
}

fn config_error(path: &Path, e: ConfigError) -> crate::PipelineError {
    Error::Config {
        path: path.to_path_buf(),
        field: e.field,
        reason: e.reason,
    }
    .into()
}

/// Rewrites a transformers-port `JanusConfig` into the original schema (with the
/// extension keys for the ViT and VQ sizes). Absent fields take that port's defaults.
fn from_transformers(root: &Map<String, Value>) -> Value {
    let empty = Map::new();
    let sec = |k: &str| root.get(k).and_then(Value::as_object).unwrap_or(&empty);
    let (text, vision, vq) = (sec("text_config"), sec("vision_config"), sec("vq_config"));
    let get = |m: &Map<String, Value>, k: &str, d: Value| {
        m.get(k).cloned().filter(|v| !v.is_null()).unwrap_or(d)
    };
    let hidden = get(text, "hidden_size", Value::from(4096));
    let width = get(vision, "hidden_size", Value::from(1024));
    let embed_dim = get(vq, "embed_dim", Value::from(8));
    let codes = get(vq, "num_embeddings", Value::from(16384));
    let mult = get(vq, "channel_multiplier", serde_json::json!([1, 1, 2, 2, 4]));
    let image_size = get(vision, "image_size", Value::from(384));
    serde_json::json!({
        "language_config": Value::Object(text.clone()),
        "vision_config": {"params": {
            "model_name": "siglip_large_patch16_384",
            "image_size": image_size,
            "patch_size": get(vision, "patch_size", Value::from(16)),
            "width": width,
            "layers": get(vision, "num_hidden_layers", Value::from(24)),
            "heads": get(vision, "num_attention_heads", Value::from(16)),
            "mlp_ratio": get(vision, "mlp_ratio", Value::from(4.0)),
            "select_layer": -1,
            "select_feature": "same",
        }},
        "aligner_config": {"params": {
            "projector_type": "mlp_gelu", "depth": 2,
            "input_dim": width,
            "n_embed": get(vision, "projection_dim", hidden.clone()),
        }},
        "gen_vision_config": {"params": {
            "image_token_size": codes.clone(),
            "n_embed": embed_dim.clone(),
            "codebook_size": codes.clone(),
            "codebook_embed_dim": embed_dim.clone(),
            "ch": get(vq, "base_channels", Value::from(128)),
            "encoder_ch_mult": mult.clone(),
            "decoder_ch_mult": mult,
            "z_channels": get(vq, "latent_channels", Value::from(256)),
            "num_res_blocks": get(vq, "num_res_blocks", Value::from(2)),
            "image_size": image_size,
        }},
        "gen_aligner_config": {"params": {
            "projector_type": "mlp_gelu", "depth": 2,
            "input_dim": embed_dim,
            "n_embed": get(vq, "projection_dim", hidden.clone()),
        }},
        "gen_head_config": {"params": {
            "n_embed": hidden.clone(),
            "image_token_embed": get(vq, "image_token_embed_dim", hidden),
            "image_token_size": codes,
        }},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transformers_port_config_maps_to_the_original_schema() {
        let hf = serde_json::json!({
            "text_config": {"hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 16,
                            "num_key_value_heads": 16, "num_hidden_layers": 24, "vocab_size": 102400,
                            "model_type": "llama"},
            "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                              "patch_size": 16, "image_size": 384, "mlp_ratio": 4.0, "projection_dim": 2048},
            "vq_config": {"embed_dim": 8, "num_embeddings": 16384, "base_channels": 128,
                          "channel_multiplier": [1, 1, 2, 2, 4], "latent_channels": 256,
                          "num_res_blocks": 2, "projection_dim": 2048, "image_token_embed_dim": 2048},
            "image_token_id": 100581
        });
        let c = JanusConfig::from_json(&hf, "config.json").unwrap();
        assert_eq!(
            (c.language.hidden_size, c.language.num_hidden_layers),
            (2048, 24)
        );
        assert_eq!(
            (c.vision.width, c.vision.layers, c.vision.num_patches()),
            (1024, 24, 576)
        );
        assert_eq!((c.aligner.input_dim, c.aligner.output_dim), (1024, 2048));
        assert_eq!(
            (c.vq.codebook_size, c.vq.latent_channels, c.vq.grid_side()),
            (16384, 256, 24)
        );
        assert_eq!((c.gen_head.mlp_dim, c.gen_embed.code_dim), (2048, 8));
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let path = janus_tests::testdata_dir().join("config.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let plain = JanusConfig::from_json_str(&text, &path).unwrap();
        let marked = JanusConfig::from_json_str(&format!("\u{feff}{text}"), &path).unwrap();
        assert_eq!(format!("{plain:?}"), format!("{marked:?}"));
    }

    #[test]
    fn errors_name_the_field_path() {
        let path = janus_tests::testdata_dir().join("config.json");
        let base: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let cases = [
            (
                "/language_config/hidden_size",
                serde_json::json!("wide"),
                "language_config.hidden_size",
            ),
            (
                "/language_config/hidden_size",
                serde_json::json!(0),
                "language_config.hidden_size",
            ),
            (
                "/language_config/num_hidden_layers",
                serde_json::json!(1_000_000),
                "language_config.num_hidden_layers",
            ),
            (
                "/vision_config/params/image_size",
                serde_json::json!(65536),
                "vision_config.params.image_size",
            ),
            (
                "/gen_vision_config/params/image_size",
                serde_json::json!(1_048_576),
                "gen_vision_config.params.image_size",
            ),
            (
                "/aligner_config/params/n_embed",
                serde_json::json!(7),
                "aligner_config.params.n_embed",
            ),
            (
                "/language_config/vocab_size",
                serde_json::json!(1u64 << 62),
                "language_config.vocab_size",
            ),
            (
                "/vision_config/params/image_size",
                serde_json::json!(16384),
                "vision_config.params.image_size",
            ),
            (
                "/gen_vision_config/params/image_size",
                serde_json::json!(4096),
                "gen_vision_config.params.image_size",
            ),
        ];
        for (pointer, value, field) in cases {
            let mut v = base.clone();
            *v.pointer_mut(pointer).expect(pointer) = value.clone();
            let err = JanusConfig::from_json(&v, "config.json")
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{pointer} = {value}: {err}");
        }
        // A section missing from the top level.
        let mut v = base.clone();
        v.as_object_mut().unwrap().remove("language_config");
        let err = JanusConfig::from_json(&v, "config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("field `<root>`: missing field `language_config`"),
            "{err}"
        );
    }
}
