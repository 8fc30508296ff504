//! Shared foundations of janus-rs: config parsing, checkpoint reading and the
//! neural-network building blocks (linear, norms, attention, MLP) that every
//! Janus module is made of. Everything is generic over Burn's [`Backend`](burn::prelude::Backend).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use janus_checkpoint::Checkpoint;
//! use janus_core::{JanusConfig, Weights};
//!
//! # fn main() -> janus_core::Result<()> {
//! let config = JanusConfig::from_file("model/config.json")?;
//! let ckpt = Checkpoint::open("model")?; // safetensors or pytorch_model.bin, sharded or not
//! let weights = Weights::<Flex>::new(&ckpt, &Default::default(), DType::F32);
//! let norm = weights.tensor("language_model.model.norm.weight", [config.language.hidden_size])?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod cpu;
mod error;
mod image;
pub mod nn;
pub mod weights;

pub use config::{
    GenEmbedConfig, GenHeadConfig, JanusConfig, LlamaConfig, ProjectorConfig, VisionConfig,
    VqConfig,
};
pub use error::{Error, Result};
pub use image::RgbImage;
pub use weights::{KeyPattern, Weights};
