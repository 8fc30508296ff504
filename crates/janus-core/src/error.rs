//! The error type of the model crates: config problems, checkpoint problems, and
//! tensors that do not fit the model.

use std::path::PathBuf;

/// Everything that can go wrong while reading a Janus config or checkpoint.
///
/// Every variant names the file involved and, where it applies, the tensor key
/// and both shapes, so a user can tell at once what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A config file is malformed or holds an unsupported value.
    #[error("invalid config {path}: field `{field}`: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The dotted path of the field, e.g. `language_config.hidden_size`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A weight file cannot be read (bad header, truncated data, corrupt zip, ...).
    #[error(transparent)]
    Checkpoint(#[from] janus_checkpoint::Error),
    /// A tensor the model needs is not in the checkpoint.
    #[error("checkpoint {path}: missing tensor `{key}` (expected shape {expected:?})")]
    MissingTensor {
        /// The checkpoint (file or directory).
        path: PathBuf,
        /// The missing key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor has a different shape from the one the config implies.
    #[error(
        "checkpoint {path}: tensor `{key}` has shape {found:?}, the config implies {expected:?}"
    )]
    ShapeMismatch {
        /// The file holding the tensor.
        path: PathBuf,
        /// The key.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The checkpoint holds tensors the model does not know.
    #[error("checkpoint {path}: {} unexpected tensor(s): {}", keys.len(), first_keys(keys))]
    UnexpectedTensors {
        /// The checkpoint (file or directory).
        path: PathBuf,
        /// The unknown keys.
        keys: Vec<String>,
    },
    /// A user-supplied value is out of range (bad argument, bad code, bad image size).
    #[error("{0}")]
    Invalid(String),
}

/// The first few of `keys`, and how many more (a hostile file's 100k names
/// made a 1.4 MB error line).
fn first_keys(keys: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = keys[..keys.len().min(SHOWN)].join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    s
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
