//! The error type of the checkpoint readers and the writer.

use std::path::PathBuf;

/// Everything that can go wrong while reading or writing a weight file.
///
/// Every variant names the file and, where it applies, the tensor key.
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
    /// A file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A weight file or index is malformed (bad header, truncated data, corrupt zip, ...).
    #[error("invalid checkpoint {path}: {reason}")]
    Malformed {
        /// The weight file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor asked for is not in the checkpoint.
    #[error("checkpoint {path}: no tensor `{key}`")]
    MissingTensor {
        /// The checkpoint (file or directory).
        path: PathBuf,
        /// The missing key.
        key: String,
    },
    /// A tensor is stored with a dtype that cannot be read as asked.
    #[error("checkpoint {path}: tensor `{key}` has unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The file holding the tensor.
        path: PathBuf,
        /// The key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A caller passed inconsistent data (e.g. to the writer).
    #[error("{0}")]
    Invalid(String),
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

    /// Builds an [`Error::Write`].
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Malformed`].
    pub fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
