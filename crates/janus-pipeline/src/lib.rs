//! Janus end to end, generic over Burn's [`Backend`](burn::prelude::Backend):
//!
//! - [`JanusModel`]: every module of a checkpoint, loaded and checked;
//! - [`ImageProcessor`]: the reference's image preprocessing, bit-exact
//!   (Pillow-compatible bicubic resize, pad, normalise);
//! - [`JanusTokenizer`] and the [`chat`] templates (Janus-1.3B and Janus-Pro styles);
//! - [`PreparedPrompt`] / [`Batch`]: image-slot expansion and left-padded batches;
//! - text generation ([`JanusModel::generate_text`], greedy or sampled) and image
//!   generation with classifier-free guidance ([`JanusModel::generate_images`]).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use janus_pipeline::{chat, Batch, ImageProcessor, JanusModel, JanusTokenizer, PreparedPrompt, Sampler, SamplingConfig, RgbImage};
//!
//! # fn main() -> janus_pipeline::Result<()> {
//! let dir = "model";
//! let (model, _) = JanusModel::<Flex>::load_dir(dir, &Default::default(), DType::F32)?;
//! let tok = JanusTokenizer::from_dir(dir)?;
//! let proc = ImageProcessor::from_file(format!("{dir}/preprocessor_config.json"))?;
//!
//! let question = chat::place_images("What is in this picture?", 1, &tok.image_tag)?;
//! let text = chat::understanding_prompt(&[chat::Message::new("user", question)], chat::Template::Pro);
//! let prompt = PreparedPrompt::new(&tok, &text, model.config.vision.num_patches())?;
//! let batch = Batch::new(&[prompt], tok.ids.pad, tok.ids.image);
//! let pixels = model.pixel_tensor(&[proc.preprocess(&RgbImage::open("cat.png")?)])?;
//! let embeds = model.prepare_inputs_embeds(&batch, Some(model.image_embeds(pixels)?))?;
//! let mut sampler = Sampler::new(SamplingConfig::default())?; // greedy
//! let ids = model.generate_text(&batch, embeds, 64, tok.ids.eos, &mut sampler, |_, _| {});
//! println!("{}", tok.decode(&ids[0], true));
//! # Ok(()) }
//! ```

pub mod backend;
pub mod chat;
pub mod convert;
mod error;
mod generate;
#[cfg(feature = "hub")]
pub mod hub;
mod model;
mod preprocess;
mod processor;
mod resize;
mod sampling;
mod tokenizer;
mod understand;

pub use error::{PipelineError, Result};
pub use generate::{CfgLogits, ImageGenConfig, ImageGenSession};
pub use model::{JanusModel, LoadReport};
pub use preprocess::{ImageProcessor, RgbImage};
pub use processor::{Batch, PreparedPrompt};
pub use resize::resize_bicubic;
pub use sampling::{Sampler, SamplingConfig, argmax};
pub use tokenizer::{BOI_TAG, EOI_TAG, JanusTokenizer, SpecialIds};
