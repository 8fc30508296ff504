//! Janus end to end, generic over Burn's [`Backend`](burn::prelude::Backend): loading a
//! whole checkpoint ([`JanusModel`]); image preprocessing, tokenizer and chat
//! templates, text generation (understanding) and image generation with
//! classifier-free guidance are built on top of it, and the `janus` CLI drives them.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use janus_pipeline::JanusModel;
//!
//! # fn main() -> janus_core::Result<()> {
//! let (model, report) = JanusModel::<Flex>::load_dir("model", &Default::default(), DType::F32)?;
//! println!("skipped {} unused tensors", report.skipped.len());
//! # Ok(()) }
//! ```

mod model;

pub use model::{JanusModel, LoadReport};
