//! Janus end to end, generic over Burn's [`Backend`](burn::prelude::Backend).
//!
//! [`Janus`] is the API most programs need: load once, then answer questions
//! about images with streamed text, or generate images:
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use janus_pipeline::{ImageRequest, Janus, Request, RgbImage};
//!
//! # fn main() -> janus_pipeline::Result<()> {
//! # let tiny = std::env::var("JANUS_TESTDATA")
//! #     .unwrap_or_else(|_| "../../../shared/testdata/janus-tiny".into());
//! # let model = tiny.as_str(); // this example runs on the tiny test checkpoint
//! # /*
//! let model = "deepseek-ai/Janus-Pro-1B"; // a hub id or a model directory
//! # */
//! let janus = Janus::<Flex>::load(model, &Default::default(), DType::F32)?;
//!
//! // A question about an image (`open_image("cat.png")?` reads one from a file).
//! let image = RgbImage { width: 64, height: 48, pixels: vec![200; 64 * 48 * 3] };
//! let request = Request::new("What is in this picture?").image(image).max_new_tokens(8);
//! let mut answer = String::new();
//! for delta in janus.understand(&request)? {
//!     answer.push_str(&delta?.text); // printed as it arrives, in a chat program
//! }
//!
//! // An image from a prompt.
//! let images = janus.generate_images(&ImageRequest::new("a red apple"), |_step, _steps| {})?;
//! assert_eq!(images[0].image.width, janus.config().vq.image_size);
//! # Ok(()) }
//! ```
//!
//! Underneath: [`JanusModel`] (every module of a checkpoint, loaded and checked
//! against its config), [`Processor`] (tokenizer, [`chat`] template and the
//! bit-exact [`ImageProcessor`]), [`TextSession`] / [`TextStream`] (text
//! generation and incremental detokenisation), [`ImageGenSession`] (image
//! generation with classifier-free guidance), [`convert`] (checkpoints to the
//! runtime format) and [`layout`] (the key layouts of Janus checkpoints).

mod batcher;
pub mod chat;
mod config;
pub mod convert;
mod error;
mod generate;
#[cfg(feature = "hub")]
pub mod hub;
mod janus;
pub mod layout;
pub mod memory;
mod model;
mod preprocess;
mod processor;
mod resize;
mod sampling;
mod text_batcher;
mod text_stream;
mod tokenizer;
mod understand;

pub use batcher::{BatchImage, ImageBatcher, ImageJob};
pub use config::JanusConfig;
pub use error::{PipelineError, Result};
pub use generate::{
    CfgLogits, ImageGenConfig, ImageGenSession, ImagePrompt, MAX_CFG_WEIGHT, MAX_PARALLEL,
    image_sampler,
};
pub use janus::{
    FinishReason, GeneratedImage, ImageRequest, Janus, LoadEvent, Request, TextDelta,
    Understanding, answer_context_fits, image_context_fits, resolve_model,
};
pub use janus_core::{Precision, QuantFormat};
pub use model::{JanusModel, Modules};
pub use preprocess::{
    ImageProcessor, MAX_IMAGE_PIXELS, RgbImage, declared_size, decode_image, decode_image_within,
    encode_png, open_image,
};
pub use processor::{Batch, Prepared, PreparedPrompt, Processor};
pub use resize::resize_bicubic;
pub use sampling::{MAX_PENALTY, Sampler, SamplingConfig, argmax};
pub use text_batcher::{TextBatcher, TextEvent};
pub use text_stream::TextStream;
pub use tokenizer::{BOI_TAG, EOI_TAG, SpecialIds, TextTokenizer};
pub use understand::TextSession;
