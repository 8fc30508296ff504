//! `config.json` of a Janus checkpoint, parsed into typed sub-configs.
//!
//! The real configs do not carry the ViT or VQ sizes (the reference code looks them
//! up by name); the tiny test checkpoints carry them as *extension keys*. The rule is:
//! use the extension keys when present, otherwise the real values (SigLIP-L/16 @384,
//! LlamaGen VQ-16). Absent `language_config` fields take the HF `LlamaConfig` defaults,
//! exactly as the reference does (Janus-Pro-7B's language config is sparse).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The whole model config.
#[derive(Debug, Clone, PartialEq)]
pub struct JanusConfig {
    /// SigLIP understanding encoder.
    pub vision: VisionConfig,
    /// Understanding aligner (`aligner`).
    pub aligner: ProjectorConfig,
    /// VQ-16 image tokenizer (`gen_vision_model`).
    pub vq: VqConfig,
    /// Generation aligner (`gen_aligner`).
    pub gen_aligner: ProjectorConfig,
    /// Generation head (`gen_head`).
    pub gen_head: GenHeadConfig,
    /// Generation embedding table (`gen_embed`): rows x dims.
    pub gen_embed: GenEmbedConfig,
    /// Llama language model.
    pub language: LlamaConfig,
}

/// SigLIP ViT sizes (after applying `select_layer`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// `params.model_name`, e.g. `siglip_large_patch16_384`.
    pub model_name: String,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Embedding width.
    pub width: usize,
    /// Number of transformer blocks actually run (depth after `select_layer`).
    pub layers: usize,
    /// Blocks present in the weights (before `select_layer`).
    pub total_layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden size.
    pub mlp_dim: usize,
}

impl VisionConfig {
    /// Tokens per image (`(image_size / patch_size)^2`).
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }
}

/// A `mlp_gelu` projector of depth 2: `Linear(input_dim, n_embed) -> GELU -> Linear(n_embed, n_embed)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorConfig {
    /// Input features.
    pub input_dim: usize,
    /// Output (and hidden) features.
    pub n_embed: usize,
}

/// LlamaGen VQ-16 sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct VqConfig {
    /// Codebook rows.
    pub codebook_size: usize,
    /// Codebook vector size.
    pub codebook_embed_dim: usize,
    /// Base channel count.
    pub ch: usize,
    /// Encoder channel multipliers per level.
    pub encoder_ch_mult: Vec<usize>,
    /// Decoder channel multipliers per level.
    pub decoder_ch_mult: Vec<usize>,
    /// Latent channels before `quant_conv`.
    pub z_channels: usize,
    /// Res blocks per encoder level (the decoder uses one more).
    pub num_res_blocks: usize,
    /// Generated image side in pixels.
    pub image_size: usize,
}

impl VqConfig {
    /// Spatial downsampling factor (`2^(levels-1)`).
    pub fn downsample(&self) -> usize {
        1 << (self.encoder_ch_mult.len().saturating_sub(1))
    }

    /// Side of the code grid for `image_size`.
    pub fn grid_side(&self) -> usize {
        self.image_size / self.downsample()
    }
}

/// `gen_head` sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct GenHeadConfig {
    /// Input (LLM hidden) size.
    pub n_embed: usize,
    /// Hidden size of the head's MLP.
    pub image_token_embed: usize,
    /// Number of image codes (logits).
    pub image_token_size: usize,
}

/// `gen_embed` sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEmbedConfig {
    /// Rows (image codes).
    pub image_token_size: usize,
    /// Vector size.
    pub n_embed: usize,
}

/// The Llama language model config with HF `LlamaConfig` defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Residual width.
    pub hidden_size: usize,
    /// SwiGLU hidden size.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA when smaller than `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Embedding rows / logits.
    pub vocab_size: usize,
    /// Per-head size.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Upper bound on positions.
    pub max_position_embeddings: usize,
}

/// Values of the real SigLIP-L/16 @384 tower, used when the config has no extension keys.
const SIGLIP_LARGE: (usize, usize, usize, usize, usize) = (16, 1024, 24, 16, 4);

impl JanusConfig {
    /// Reads and parses `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses a config from JSON text; `path` is only used in error messages.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Config {
            path: path.as_ref().to_path_buf(),
            field: "<root>".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&value, path)
    }

    /// Parses a config from a JSON value; `path` is only used in error messages.
    /// Both the original schema and the transformers port's `JanusConfig`
    /// (`text_config` / `vision_config` / `vq_config`) are accepted.
    pub fn from_json(value: &Value, path: impl AsRef<Path>) -> Result<Self> {
        let p = Parser {
            path: path.as_ref().to_path_buf(),
        };
        let root = p.object(value, "<root>")?;
        if !root.contains_key("language_config") && root.contains_key("text_config") {
            let translated = from_transformers(root);
            return Self::from_json(&translated, path);
        }
        let vision = p.vision(p.section(root, "vision_config")?)?;
        let aligner = p.projector(p.section(root, "aligner_config")?, "aligner_config")?;
        let gen_aligner =
            p.projector(p.section(root, "gen_aligner_config")?, "gen_aligner_config")?;
        let (vq, gen_embed) = p.vq(p.section(root, "gen_vision_config")?)?;
        let gen_head = p.gen_head(p.section(root, "gen_head_config")?)?;
        let language = p.llama(p.section(root, "language_config")?)?;
        let cfg = Self {
            vision,
            aligner,
            vq,
            gen_aligner,
            gen_head,
            gen_embed,
            language,
        };
        p.check_consistency(&cfg)?;
        Ok(cfg)
    }
}

impl JanusConfig {
    /// `deepseek-ai/Janus-1.3B`: the same sizes as Janus-Pro-1B.
    pub fn janus_1_3b() -> Self {
        Self::real(2048, LlamaConfig::with_width(2048, 5632, 16, 24))
    }

    /// `deepseek-ai/Janus-Pro-1B`.
    pub fn janus_pro_1b() -> Self {
        Self::real(2048, LlamaConfig::with_width(2048, 5632, 16, 24))
    }

    /// `deepseek-ai/Janus-Pro-7B` (its sparse language config takes the HF
    /// `LlamaConfig` defaults: 4096 wide, 11008 MLP, 32 heads).
    pub fn janus_pro_7b() -> Self {
        Self::real(4096, LlamaConfig::with_width(4096, 11008, 32, 30))
    }

    /// The modules every real checkpoint shares (SigLIP-L/16 @384, VQ-16) around
    /// an LLM of width `hidden`.
    fn real(hidden: usize, language: LlamaConfig) -> Self {
        let (patch, width, layers, heads, ratio) = SIGLIP_LARGE;
        let codes = 16384;
        Self {
            vision: VisionConfig {
                model_name: "siglip_large_patch16_384".into(),
                image_size: 384,
                patch_size: patch,
                width,
                layers,
                total_layers: layers,
                heads,
                mlp_dim: width * ratio,
            },
            aligner: ProjectorConfig {
                input_dim: width,
                n_embed: hidden,
            },
            vq: VqConfig {
                codebook_size: codes,
                codebook_embed_dim: 8,
                ch: 128,
                encoder_ch_mult: vec![1, 1, 2, 2, 4],
                decoder_ch_mult: vec![1, 1, 2, 2, 4],
                z_channels: 256,
                num_res_blocks: 2,
                image_size: 384,
            },
            gen_aligner: ProjectorConfig {
                input_dim: 8,
                n_embed: hidden,
            },
            gen_head: GenHeadConfig {
                n_embed: hidden,
                image_token_embed: hidden,
                image_token_size: codes,
            },
            gen_embed: GenEmbedConfig {
                image_token_size: codes,
                n_embed: 8,
            },
            language,
        }
    }
}

impl LlamaConfig {
    /// A Janus LLM (vocab 102400, 16384 positions, HF defaults otherwise).
    fn with_width(hidden: usize, intermediate: usize, heads: usize, layers: usize) -> Self {
        Self {
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_attention_heads: heads,
            num_key_value_heads: heads,
            num_hidden_layers: layers,
            vocab_size: 102400,
            head_dim: hidden / heads,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            max_position_embeddings: 16384,
        }
    }
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

struct Parser {
    path: PathBuf,
}

impl Parser {
    fn err(&self, field: &str, reason: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn object<'a>(&self, v: &'a Value, field: &str) -> Result<&'a Map<String, Value>> {
        v.as_object()
            .ok_or_else(|| self.err(field, "expected a JSON object"))
    }

    fn section<'a>(
        &self,
        root: &'a Map<String, Value>,
        name: &str,
    ) -> Result<&'a Map<String, Value>> {
        let v = root.get(name).ok_or_else(|| self.err(name, "missing"))?;
        self.object(v, name)
    }

    /// `section.params` (the reference nests sizes under `params`); an absent `params` is empty.
    fn params<'a>(
        &self,
        section: &'a Map<String, Value>,
        name: &str,
    ) -> Result<Option<&'a Map<String, Value>>> {
        match section.get("params") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.object(v, &format!("{name}.params")).map(Some),
        }
    }

    fn opt_usize(
        &self,
        m: Option<&Map<String, Value>>,
        key: &str,
        field: &str,
    ) -> Result<Option<usize>> {
        let Some(v) = m.and_then(|m| m.get(key)) else {
            return Ok(None);
        };
        if v.is_null() {
            return Ok(None);
        }
        match v.as_u64() {
            Some(0) => Err(self.err(field, "must be positive, got 0")),
            Some(n) => Ok(Some(n as usize)),
            None => Err(self.err(field, format!("expected a positive integer, got {v}"))),
        }
    }

    fn req_usize(&self, m: Option<&Map<String, Value>>, key: &str, field: &str) -> Result<usize> {
        self.opt_usize(m, key, field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn opt_f64(&self, m: &Map<String, Value>, key: &str, field: &str) -> Result<Option<f64>> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
                _ => Err(self.err(field, format!("expected a positive number, got {v}"))),
            },
        }
    }

    fn opt_usize_list(
        &self,
        m: Option<&Map<String, Value>>,
        key: &str,
        field: &str,
    ) -> Result<Option<Vec<usize>>> {
        let Some(v) = m.and_then(|m| m.get(key)) else {
            return Ok(None);
        };
        let arr = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
            self.err(
                field,
                format!("expected a non-empty list of positive integers, got {v}"),
            )
        })?;
        arr.iter()
            .map(|x| match x.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(self.err(field, format!("expected positive integers, got {x}"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn vision(&self, s: &Map<String, Value>) -> Result<VisionConfig> {
        let params = self.params(s, "vision_config")?;
        let f = |k: &str| format!("vision_config.params.{k}");
        let model_name = params
            .and_then(|p| p.get("model_name"))
            .and_then(Value::as_str)
            .unwrap_or("siglip_large_patch16_384")
            .to_string();
        let image_size = self
            .opt_usize(params, "image_size", &f("image_size"))?
            .unwrap_or(384);
        let (patch, width, layers, heads, ratio) = SIGLIP_LARGE;
        let has_ext = params.is_some_and(|p| p.contains_key("width"));
        if !has_ext && !model_name.starts_with("siglip_large_patch16") {
            return Err(self.err(
                &f("model_name"),
                format!("unknown vision tower `{model_name}` and no size keys (width, layers, heads, patch_size, mlp_ratio)"),
            ));
        }
        let patch_size = self
            .opt_usize(params, "patch_size", &f("patch_size"))?
            .unwrap_or(patch);
        let width = self
            .opt_usize(params, "width", &f("width"))?
            .unwrap_or(width);
        let total_layers = self
            .opt_usize(params, "layers", &f("layers"))?
            .unwrap_or(layers);
        let heads = self
            .opt_usize(params, "heads", &f("heads"))?
            .unwrap_or(heads);
        let mlp_ratio = match params.and_then(|p| p.get("mlp_ratio")) {
            None | Some(Value::Null) => ratio as f64,
            Some(v) => v.as_f64().filter(|x| *x > 0.0).ok_or_else(|| {
                self.err(
                    &f("mlp_ratio"),
                    format!("expected a positive number, got {v}"),
                )
            })?,
        };
        let select_layer = match params.and_then(|p| p.get("select_layer")) {
            None | Some(Value::Null) => -1,
            Some(v) => v.as_i64().ok_or_else(|| {
                self.err(&f("select_layer"), format!("expected an integer, got {v}"))
            })?,
        };
        if let Some(sel) = params
            .and_then(|p| p.get("select_feature"))
            .and_then(Value::as_str)
            && sel != "same"
        {
            return Err(self.err(
                &f("select_feature"),
                format!("only \"same\" is supported, got \"{sel}\""),
            ));
        }
        // create_siglip_vit: depth = min(L, L + select_layer + 1) if select_layer <= 0 else min(L, select_layer).
        let l = total_layers as i64;
        let depth = if select_layer <= 0 {
            l.min(l + select_layer + 1)
        } else {
            l.min(select_layer)
        };
        if depth <= 0 {
            return Err(self.err(
                &f("select_layer"),
                format!("{select_layer} leaves no ViT block of {total_layers}"),
            ));
        }
        if image_size % patch_size != 0 {
            return Err(self.err(
                &f("image_size"),
                format!("{image_size} is not a multiple of patch_size {patch_size}"),
            ));
        }
        if width % heads != 0 {
            return Err(self.err(
                &f("heads"),
                format!("width {width} is not divisible by {heads} heads"),
            ));
        }
        Ok(VisionConfig {
            model_name,
            image_size,
            patch_size,
            width,
            layers: depth as usize,
            total_layers,
            heads,
            mlp_dim: (width as f64 * mlp_ratio) as usize,
        })
    }

    fn projector(&self, s: &Map<String, Value>, name: &str) -> Result<ProjectorConfig> {
        let params = self.params(s, name)?;
        let f = |k: &str| format!("{name}.params.{k}");
        if let Some(t) = params
            .and_then(|p| p.get("projector_type"))
            .and_then(Value::as_str)
            && t != "mlp_gelu"
        {
            return Err(self.err(
                &f("projector_type"),
                format!("only \"mlp_gelu\" is supported, got \"{t}\""),
            ));
        }
        let depth = self.opt_usize(params, "depth", &f("depth"))?.unwrap_or(2);
        if depth != 2 {
            return Err(self.err(
                &f("depth"),
                format!("only depth 2 is supported, got {depth}"),
            ));
        }
        Ok(ProjectorConfig {
            input_dim: self.req_usize(params, "input_dim", &f("input_dim"))?,
            n_embed: self.req_usize(params, "n_embed", &f("n_embed"))?,
        })
    }

    fn vq(&self, s: &Map<String, Value>) -> Result<(VqConfig, GenEmbedConfig)> {
        let params = self.params(s, "gen_vision_config")?;
        let f = |k: &str| format!("gen_vision_config.params.{k}");
        let image_token_size = self
            .opt_usize(params, "image_token_size", &f("image_token_size"))?
            .unwrap_or(16384);
        let n_embed = self
            .opt_usize(params, "n_embed", &f("n_embed"))?
            .unwrap_or(8);
        let mult = vec![1, 1, 2, 2, 4];
        let vq = VqConfig {
            codebook_size: self
                .opt_usize(params, "codebook_size", &f("codebook_size"))?
                .unwrap_or(16384),
            codebook_embed_dim: self
                .opt_usize(params, "codebook_embed_dim", &f("codebook_embed_dim"))?
                .unwrap_or(8),
            ch: self.opt_usize(params, "ch", &f("ch"))?.unwrap_or(128),
            encoder_ch_mult: self
                .opt_usize_list(params, "encoder_ch_mult", &f("encoder_ch_mult"))?
                .unwrap_or_else(|| mult.clone()),
            decoder_ch_mult: self
                .opt_usize_list(params, "decoder_ch_mult", &f("decoder_ch_mult"))?
                .unwrap_or(mult),
            z_channels: self
                .opt_usize(params, "z_channels", &f("z_channels"))?
                .unwrap_or(256),
            num_res_blocks: self
                .opt_usize(params, "num_res_blocks", &f("num_res_blocks"))?
                .unwrap_or(2),
            image_size: self
                .opt_usize(params, "image_size", &f("image_size"))?
                .unwrap_or(384),
        };
        if !vq.image_size.is_multiple_of(vq.downsample()) {
            return Err(self.err(
                &f("image_size"),
                format!(
                    "{} is not a multiple of the downsampling factor {}",
                    vq.image_size,
                    vq.downsample()
                ),
            ));
        }
        for (k, mult) in [
            ("encoder_ch_mult", &vq.encoder_ch_mult),
            ("decoder_ch_mult", &vq.decoder_ch_mult),
        ] {
            if let Some(c) = mult.iter().map(|m| m * vq.ch).find(|c| c % 32 != 0) {
                return Err(self.err(
                    &f(k),
                    format!("channel count {c} is not divisible by the 32 GroupNorm groups"),
                ));
            }
        }
        Ok((
            vq,
            GenEmbedConfig {
                image_token_size,
                n_embed,
            },
        ))
    }

    fn gen_head(&self, s: &Map<String, Value>) -> Result<GenHeadConfig> {
        let params = self.params(s, "gen_head_config")?;
        let f = |k: &str| format!("gen_head_config.params.{k}");
        Ok(GenHeadConfig {
            n_embed: self.req_usize(params, "n_embed", &f("n_embed"))?,
            image_token_embed: self.req_usize(
                params,
                "image_token_embed",
                &f("image_token_embed"),
            )?,
            image_token_size: self.req_usize(params, "image_token_size", &f("image_token_size"))?,
        })
    }

    fn llama(&self, m: &Map<String, Value>) -> Result<LlamaConfig> {
        let f = |k: &str| format!("language_config.{k}");
        let get = |k: &str, default: usize| -> Result<usize> {
            Ok(self.opt_usize(Some(m), k, &f(k))?.unwrap_or(default))
        };
        let hidden_size = get("hidden_size", 4096)?;
        let num_attention_heads = get("num_attention_heads", 32)?;
        let num_key_value_heads = get("num_key_value_heads", num_attention_heads)?;
        if hidden_size % num_attention_heads != 0 {
            return Err(self.err(
                &f("num_attention_heads"),
                format!(
                    "hidden_size {hidden_size} is not divisible by {num_attention_heads} heads"
                ),
            ));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(self.err(
                &f("num_key_value_heads"),
                format!("{num_attention_heads} attention heads are not a multiple of {num_key_value_heads} KV heads"),
            ));
        }
        let head_dim = get("head_dim", hidden_size / num_attention_heads)?;
        if head_dim % 2 != 0 {
            return Err(self.err(
                &f("head_dim"),
                format!("RoPE needs an even head_dim, got {head_dim}"),
            ));
        }
        if let Some(act) = m.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(self.err(
                &f("hidden_act"),
                format!("only \"silu\" is supported, got \"{act}\""),
            ));
        }
        if let Some(v) = m.get("rope_scaling")
            && !v.is_null()
        {
            return Err(self.err(
                &f("rope_scaling"),
                format!("RoPE scaling is not supported, got {v}"),
            ));
        }
        for key in ["attention_bias", "mlp_bias", "tie_word_embeddings"] {
            if m.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(self.err(
                    &f(key),
                    "Janus checkpoints use `false`; `true` is not supported",
                ));
            }
        }
        if let Some(t) = m.get("model_type").and_then(Value::as_str)
            && t != "llama"
        {
            return Err(self.err(&f("model_type"), format!("expected \"llama\", got \"{t}\"")));
        }
        Ok(LlamaConfig {
            hidden_size,
            intermediate_size: get("intermediate_size", 11008)?,
            num_attention_heads,
            num_key_value_heads,
            num_hidden_layers: get("num_hidden_layers", 32)?,
            vocab_size: get("vocab_size", 32000)?,
            head_dim,
            rms_norm_eps: self
                .opt_f64(m, "rms_norm_eps", &f("rms_norm_eps"))?
                .unwrap_or(1e-6),
            rope_theta: self
                .opt_f64(m, "rope_theta", &f("rope_theta"))?
                .unwrap_or(10000.0),
            max_position_embeddings: get("max_position_embeddings", 2048)?,
        })
    }

    fn check_consistency(&self, c: &JanusConfig) -> Result<()> {
        let h = c.language.hidden_size;
        let pairs = [
            (
                "aligner_config.params.input_dim",
                c.aligner.input_dim,
                c.vision.width,
                "the ViT width",
            ),
            (
                "aligner_config.params.n_embed",
                c.aligner.n_embed,
                h,
                "language_config.hidden_size",
            ),
            (
                "gen_aligner_config.params.n_embed",
                c.gen_aligner.n_embed,
                h,
                "language_config.hidden_size",
            ),
            (
                "gen_aligner_config.params.input_dim",
                c.gen_aligner.input_dim,
                c.gen_embed.n_embed,
                "gen_vision_config.params.n_embed",
            ),
            (
                "gen_head_config.params.n_embed",
                c.gen_head.n_embed,
                h,
                "language_config.hidden_size",
            ),
        ];
        for (field, got, want, what) in pairs {
            if got != want {
                return Err(self.err(field, format!("is {got} but must equal {what} ({want})")));
            }
        }
        Ok(())
    }
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
        assert_eq!((c.aligner.input_dim, c.aligner.n_embed), (1024, 2048));
        assert_eq!(
            (c.vq.codebook_size, c.vq.z_channels, c.vq.grid_side()),
            (16384, 256, 24)
        );
        assert_eq!(
            (c.gen_head.image_token_embed, c.gen_embed.n_embed),
            (2048, 8)
        );
    }
}
