//! The key layouts of Janus checkpoints, in one place: the original
//! `deepseek-ai/Janus` names every loader reads, the transformers port
//! (`deepseek-community/Janus-Pro-*`) mapped back onto them when a checkpoint is
//! opened (reference §10.4: renamed prefixes, split ViT `q/k/v` projections
//! re-fused into `qkv`, the squeezed `pos_embed` given back its leading
//! dimension), and the keys real checkpoints hold that inference never uses.

use std::path::Path;

use janus_checkpoint::{Checkpoint, Rename, TensorInfo};
use janus_core::KeyPattern;

use crate::Result;

/// Where each module's tensors live in the original layout.
pub mod prefix {
    /// SigLIP tower ([`janus_und_encoder::SiglipEncoder`]).
    pub const VISION: &str = "vision_model.vision_tower";
    /// Understanding aligner.
    pub const ALIGNER: &str = "aligner";
    /// VQ-16 tokenizer ([`janus_gen_tokenizer::VqModel`]).
    pub const VQ: &str = "gen_vision_model";
    /// Generation aligner.
    pub const GEN_ALIGNER: &str = "gen_aligner";
    /// Generation head.
    pub const GEN_HEAD: &str = "gen_head";
    /// Generation embedding table.
    pub const GEN_EMBED: &str = "gen_embed";
    /// Llama backbone ([`janus_llm::Llama`]).
    pub const LLM: &str = "language_model";
}

/// Key prefixes and suffixes that real checkpoints hold but inference never uses.
/// They are skipped on purpose; every other unused key is an error.
pub const KNOWN_UNUSED: [KeyPattern; 3] = [
    KeyPattern::Prefix("vision_model.vision_tower.attn_pool."),
    KeyPattern::Exact("gen_vision_model.quantize.codebook_used"),
    KeyPattern::Suffix("rotary_emb.inv_freq"),
];

/// Key layout of the weight files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// The original `deepseek-ai/Janus` names.
    Original,
    /// The transformers port (`deepseek-community/Janus-Pro-*`), mapped to the original names.
    Transformers,
}

impl KeyLayout {
    /// The name recorded in converted checkpoints (`original`, `transformers`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Transformers => "transformers",
        }
    }
}

/// Opens the weights of a model directory (or one weight file, or an index) with
/// the keys in the original layout, whichever layout the files use.
pub fn open_checkpoint(path: impl AsRef<Path>) -> Result<(Checkpoint, KeyLayout)> {
    let ckpt = Checkpoint::open(path).map_err(janus_core::Error::from)?;
    crate::convert::check_format(&ckpt)?;
    to_original(ckpt)
}

/// The block format a local model directory's weights are stored in
/// (`convert --quant`), if any: read from the weight files' headers alone.
pub fn stored_quant(dir: impl AsRef<Path>) -> Option<janus_core::QuantFormat> {
    let dir = dir.as_ref();
    // Only `convert --quant` writes block formats, always as safetensors: a
    // directory of pickles (15 GB for 7B) is not opened for this.
    let safetensors = ["model.safetensors.index.json", "model.safetensors"];
    if !safetensors.iter().any(|f| dir.join(f).is_file()) {
        return None;
    }
    let ckpt = Checkpoint::open(dir).ok()?;
    [janus_core::QuantFormat::Q8_0, janus_core::QuantFormat::Q4_0]
        .into_iter()
        .find(|f| {
            let suffix = format!(".{}.qs", f.name());
            ckpt.keys().any(|k| k.ends_with(&suffix))
        })
}

/// Maps a checkpoint in either layout onto the original keys.
pub fn to_original(ckpt: Checkpoint) -> Result<(Checkpoint, KeyLayout)> {
    let transformers = ckpt.keys().any(|k| {
        k.starts_with("model.vision_model.")
            || k.starts_with("model.language_model.")
            || k.starts_with("model.vqmodel.")
    });
    if !transformers {
        return Ok((ckpt, KeyLayout::Original));
    }
    let ckpt = ckpt
        .rename(rename_transformers_key)
        .map_err(janus_core::Error::from)?;
    Ok((ckpt, KeyLayout::Transformers))
}

/// Where one transformers-port tensor goes in the original layout.
fn rename_transformers_key(key: &str, info: &TensorInfo) -> std::result::Result<Rename, String> {
    if let Some(orig) = original_key(key) {
        let shape = (orig == "vision_model.vision_tower.pos_embed" && info.shape.len() == 2)
            .then(|| [&[1][..], &info.shape].concat());
        return Ok(Rename::To { key: orig, shape });
    }
    // model.vision_model.encoder.layers.N.self_attn.{q,k,v}_proj.{weight,bias}
    let rest = key
        .strip_prefix("model.vision_model.encoder.layers.")
        .ok_or_else(|| format!("unexpected key `{key}`"))?;
    let (n, tail) = rest
        .split_once(".self_attn.")
        .ok_or_else(|| format!("unexpected key `{key}`"))?;
    let (which, param) = tail
        .split_once("_proj.")
        .ok_or_else(|| format!("unexpected key `{key}`"))?;
    let index = ["q", "k", "v"]
        .iter()
        .position(|p| *p == which)
        .ok_or_else(|| format!("unexpected key `{key}`"))?;
    Ok(Rename::Part {
        key: format!("vision_model.vision_tower.blocks.{n}.attn.qkv.{param}"),
        index,
        count: 3,
    })
}

/// The original name of a transformers-port key (`None` for the split q/k/v
/// projections, which are fused separately).
pub fn original_key(key: &str) -> Option<String> {
    let vit = "vision_model.vision_tower";
    if let Some(rest) = key.strip_prefix("model.vision_model.") {
        if let Some(r) = rest.strip_prefix("embeddings.patch_embedding.") {
            return Some(format!("{vit}.patch_embed.proj.{r}"));
        }
        if rest == "embeddings.position_embedding.weight" {
            return Some(format!("{vit}.pos_embed"));
        }
        if let Some(r) = rest.strip_prefix("post_layernorm.") {
            return Some(format!("{vit}.norm.{r}"));
        }
        if let Some(r) = rest.strip_prefix("encoder.layers.") {
            let (n, tail) = r.split_once('.')?;
            let tail = if tail.starts_with("self_attn.q_proj.")
                || tail.starts_with("self_attn.k_proj.")
                || tail.starts_with("self_attn.v_proj.")
            {
                return None;
            } else if let Some(t) = tail.strip_prefix("layer_norm1.") {
                format!("norm1.{t}")
            } else if let Some(t) = tail.strip_prefix("layer_norm2.") {
                format!("norm2.{t}")
            } else if let Some(t) = tail.strip_prefix("self_attn.projection_layer.") {
                format!("attn.proj.{t}")
            } else {
                tail.to_string()
            };
            return Some(format!("{vit}.blocks.{n}.{tail}"));
        }
        return Some(format!("{vit}.{rest}"));
    }
    for (hf, orig) in [
        ("model.aligner.fc1.", "aligner.layers.0."),
        ("model.aligner.hidden_layers.0.", "aligner.layers.2."),
        ("model.generation_aligner.fc1.", "gen_aligner.layers.0."),
        (
            "model.generation_aligner.hidden_layers.0.",
            "gen_aligner.layers.2.",
        ),
        (
            "model.generation_head.proj_out.",
            "gen_head.output_mlp_projector.",
        ),
        (
            "model.generation_head.vision_head.",
            "gen_head.vision_head.",
        ),
        ("model.generation_embeddings.", "gen_embed."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ] {
        if let Some(r) = key.strip_prefix(hf) {
            return Some(format!("{orig}{r}"));
        }
    }
    if let Some(rest) = key.strip_prefix("model.vqmodel.") {
        let mut parts: Vec<String> = rest.split('.').map(str::to_string).collect();
        for i in 0..parts.len() {
            let prev = if i > 0 { parts[i - 1].as_str() } else { "" };
            let new = match (prev, parts[i].as_str()) {
                ("encoder", "down") | ("decoder", "up") => Some("conv_blocks"),
                (_, "block") if i >= 2 && parts[i - 2] == "conv_blocks" => Some("res"),
                ("mid", "block_1") => Some("0"),
                ("mid", "attn_1") => Some("1"),
                ("mid", "block_2") => Some("2"),
                _ => None,
            };
            if let Some(n) = new {
                parts[i] = n.to_string();
            }
        }
        return Some(format!("gen_vision_model.{}", parts.join(".")));
    }
    Some(key.to_string())
}

#[cfg(test)]
mod tests {
    use super::original_key;

    #[test]
    fn maps_reference_examples() {
        let cases = [
            (
                "model.vision_model.encoder.layers.3.layer_norm1.weight",
                "vision_model.vision_tower.blocks.3.norm1.weight",
            ),
            (
                "model.vision_model.encoder.layers.0.self_attn.projection_layer.bias",
                "vision_model.vision_tower.blocks.0.attn.proj.bias",
            ),
            (
                "model.vision_model.encoder.layers.1.mlp.fc2.weight",
                "vision_model.vision_tower.blocks.1.mlp.fc2.weight",
            ),
            (
                "model.vision_model.post_layernorm.bias",
                "vision_model.vision_tower.norm.bias",
            ),
            (
                "model.aligner.hidden_layers.0.weight",
                "aligner.layers.2.weight",
            ),
            (
                "model.generation_head.proj_out.bias",
                "gen_head.output_mlp_projector.bias",
            ),
            (
                "model.vqmodel.encoder.down.2.block.0.nin_shortcut.weight",
                "gen_vision_model.encoder.conv_blocks.2.res.0.nin_shortcut.weight",
            ),
            (
                "model.vqmodel.decoder.up.0.attn.2.q.weight",
                "gen_vision_model.decoder.conv_blocks.0.attn.2.q.weight",
            ),
            (
                "model.vqmodel.decoder.mid.attn_1.proj_out.bias",
                "gen_vision_model.decoder.mid.1.proj_out.bias",
            ),
            (
                "model.vqmodel.quantize.embedding.weight",
                "gen_vision_model.quantize.embedding.weight",
            ),
            (
                "model.language_model.layers.1.mlp.up_proj.weight",
                "language_model.model.layers.1.mlp.up_proj.weight",
            ),
            ("lm_head.weight", "language_model.lm_head.weight"),
        ];
        for (hf, orig) in cases {
            assert_eq!(original_key(hf).as_deref(), Some(orig), "{hf}");
        }
        assert_eq!(
            original_key("model.vision_model.encoder.layers.0.self_attn.k_proj.weight"),
            None
        );
    }
}
