//! The building blocks every Janus module is made of, generic over Burn's
//! [`Backend`](burn::prelude::Backend): [`Weights`] (checkpoint tensors handed out
//! by key, scoped by prefix, every key accounted for), the layers of [`nn`]
//! (linear, convolution, norms, attention, MLP, embedding) with the CPU kernels
//! behind them, [`RgbImage`], and the [`ConfigError`] every model config reports.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use janus_checkpoint::Checkpoint;
//! use janus_core::Weights;
//! use janus_core::nn::{Linear, RmsNorm};
//!
//! # fn main() -> janus_core::Result<()> {
//! let ckpt = Checkpoint::open("model")?; // safetensors or pytorch_model.bin, sharded or not
//! let w = Weights::<Flex>::new(&ckpt, &Default::default(), DType::F32);
//! let layer = w.pp("language_model.model.layers").pp(0);
//! let norm = RmsNorm::load(&layer.pp("input_layernorm"), 2048, 1e-6)?;
//! let q_proj = Linear::load_no_bias(&layer.pp("self_attn.q_proj"), 2048, 2048)?;
//! # Ok(()) }
//! ```

pub mod config;
mod cpu;
mod error;
mod host;
mod image;
pub mod nn;
pub mod quant;
mod weights;

pub use config::ConfigError;
pub use cpu::simd::{Level as SimdLevel, level as simd_level};
pub use cpu::{has_bf16_dot, is_flex, probe_read_bandwidth};
pub use error::{Error, Result};
pub use host::to_f32_vec;
pub use image::RgbImage;
pub use quant::{Precision, QuantFormat, QuantMatrix};
pub use weights::{KeyPattern, Weights};
