//! How close a measurement is to the memory wall: the bytes of weights each
//! decode token or generation step reads (the machine's read bandwidth is
//! [`janus_core::probe_read_bandwidth`]).

use burn::tensor::DType;
use janus_core::Precision;
use janus_pipeline::JanusConfig;

/// Bytes per weight of `dtype` as the model stores it.
fn bytes_per_weight(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 8.0,
        DType::F32 => 4.0,
        _ => 2.0,
    }
}

/// Bytes per weight of the layers a quantized format applies to (the LLM's
/// linears, `lm_head`, the gen head).
fn quantizable_bytes_per_weight(p: Precision) -> f64 {
    match p.quant {
        Some(q) => q.bits_per_weight() / 8.0,
        None => bytes_per_weight(p.dtype),
    }
}

/// Weights of the decoder layers (attention and MLP projections; norms are
/// negligible).
fn llm_layer_weights(c: &JanusConfig) -> f64 {
    let l = &c.language;
    let (h, kv) = (l.hidden_size, l.num_key_value_heads * l.head_dim);
    let q = l.num_attention_heads * l.head_dim;
    let per_layer = h * q + 2 * h * kv + q * h + 3 * h * l.intermediate_size;
    (per_layer * l.num_hidden_layers) as f64
}

/// Bytes of weights one greedy decode token reads: the decoder layers and
/// `lm_head` (the embedding is one row).
pub fn decode_bytes(c: &JanusConfig, p: Precision) -> f64 {
    let l = &c.language;
    (llm_layer_weights(c) + (l.vocab_size * l.hidden_size) as f64) * quantizable_bytes_per_weight(p)
}

/// Bytes of weights one image-generation step reads: the decoder layers, the
/// gen head and the gen aligner.
pub fn gen_step_bytes(c: &JanusConfig, p: Precision) -> f64 {
    let g = &c.gen_head;
    let a = &c.gen_aligner;
    let head = g.hidden_size * g.mlp_dim + g.mlp_dim * g.num_codes;
    let aligner = a.input_dim * a.output_dim + a.output_dim * a.output_dim;
    (llm_layer_weights(c) + head as f64) * quantizable_bytes_per_weight(p)
        + aligner as f64 * bytes_per_weight(p.dtype)
}

/// Bytes of the f32 LLM the quantization error is measured against: the
/// decoder layers, the embedding and `lm_head` (a lower bound: norms and the
/// understanding encoder come on top).
pub fn f32_reference_bytes(c: &JanusConfig) -> u64 {
    let l = &c.language;
    let embed = (l.vocab_size * l.hidden_size) as f64 * 4.0;
    (decode_bytes(c, DType::F32.into()) + embed) as u64
}

/// A lower bound of the bytes a model in `p` holds: the decoder layers and
/// the embedding, plus `lm_head` when it `understands` and the gen head when
/// it `generates` (the encoders, the VQ decoder and norms come on top).
pub fn model_bytes_at_least(
    c: &JanusConfig,
    p: Precision,
    understands: bool,
    generates: bool,
) -> u64 {
    let l = &c.language;
    let g = &c.gen_head;
    let vocab = (l.vocab_size * l.hidden_size) as f64;
    let head = (g.hidden_size * g.mlp_dim + g.mlp_dim * g.num_codes) as f64;
    let quantized = llm_layer_weights(c)
        + if understands { vocab } else { 0.0 }
        + if generates { head } else { 0.0 };
    (quantized * quantizable_bytes_per_weight(p) + vocab * bytes_per_weight(p.dtype)) as u64
}
