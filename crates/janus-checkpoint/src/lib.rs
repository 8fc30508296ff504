//! Weight-file formats, knowing no model: `.safetensors` (single or sharded with
//! `model.safetensors.index.json`) and PyTorch zip checkpoints `pytorch_model.bin`
//! (single or sharded), read through a restricted pickle reader that builds data
//! and executes nothing; plus an atomic, deterministic safetensors writer.
//!
//! A [`Checkpoint`] is a memory-mapped index `key -> (shape, dtype, location)`.
//! Tensors are read one at a time and converted straight into the float type
//! asked for, so loading never holds more than the result plus one tensor.
//! [`Checkpoint::rename`] maps another key layout onto the names a model wants
//! (including split tensors fused along their first dimension).
//!
//! ```no_run
//! use janus_checkpoint::Checkpoint;
//!
//! # fn main() -> janus_checkpoint::Result<()> {
//! let ckpt = Checkpoint::open("model")?; // a directory, a weight file or an index
//! for key in ckpt.keys().take(3) {
//!     println!("{key}: {:?}", ckpt.info(key).unwrap().shape);
//! }
//! let norm: Vec<half::f16> = ckpt.read("language_model.model.norm.weight")?;
//! # Ok(()) }
//! ```

mod checkpoint;
mod dtype;
mod error;
mod pickle;
mod safetensors;
mod torch;
mod writer;

pub use checkpoint::{Checkpoint, Rename, WEIGHT_FILES, read_index};
pub use dtype::{FloatElem, StoredDType, TensorInfo};
pub use error::{Error, Result};
pub use pickle::{Value as PickleValue, parse as parse_pickle};
pub use writer::{
    CreatedDirs, create_dirs, partial_path, remove_stale_partials, write_safetensors,
};
