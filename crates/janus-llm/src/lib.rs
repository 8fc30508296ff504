//! The Llama language backbone of Janus, generic over Burn's [`Backend`](burn::prelude::Backend).
//!
//! HF-compatible numerics: RMSNorm statistics in f32, `rotate_half` RoPE with f32
//! tables, SwiGLU MLP, MHA or GQA, untied `lm_head`. It runs from `inputs_embeds`
//! (so image features can be spliced in), keeps a [`KvCache`], and handles
//! left-padded batches the way HF derives positions and masks.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::prelude::*;
//! use burn::tensor::DType;
//! use janus_checkpoint::Checkpoint;
//! use janus_core::Weights;
//! use janus_llm::{Llama, LlamaConfig};
//!
//! # fn main() -> janus_core::Result<()> {
//! let device = Default::default();
//! let ckpt = Checkpoint::open("Janus-Pro-1B")?;
//! let w = Weights::new(&ckpt, &device, DType::F32);
//! let llm = Llama::<Flex>::load(&w.pp("language_model"), &LlamaConfig::janus_pro_1b())?;
//!
//! let ids = Tensor::<Flex, 2, Int>::from_data([[1, 2, 3]], &device);
//! let mut cache = llm.new_cache(1, 64);
//! let hidden = llm.forward(llm.embed(ids), None, &mut cache); // prefill
//! let logits = llm.logits(hidden); // [1, 3, vocab]
//! # Ok(()) }
//! ```

mod attention;
mod cache;
mod config;
mod layer;
mod mlp;
mod model;
mod rope;

pub use attention::LlamaAttention;
pub use cache::KvCache;
pub use config::{LlamaConfig, LlamaJson};
pub use layer::DecoderLayer;
pub use mlp::LlamaMlp;
pub use model::Llama;
pub use rope::Rope;
