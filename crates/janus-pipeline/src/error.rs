//! The error type of the end-to-end pipeline.

/// Errors of the end-to-end pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Config, checkpoint or tensor-shape problems.
    #[error(transparent)]
    Core(#[from] janus_core::Error),
    /// An image could not be read or decoded.
    #[error("{0}")]
    Image(String),
    /// The tokenizer files are missing or inconsistent.
    #[error("{0}")]
    Tokenizer(String),
    /// A prompt or conversation does not fit the template (e.g. placeholder count).
    #[error("{0}")]
    Prompt(String),
    /// A prompt (with its images, or the image it asks for) does not fit the
    /// model's context.
    #[error("{0}")]
    Context(String),
    /// The work does not fit the memory available.
    #[error("{0}")]
    Memory(String),
    /// An argument is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for results carrying [`PipelineError`].
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

impl From<janus_checkpoint::Error> for PipelineError {
    fn from(e: janus_checkpoint::Error) -> Self {
        Self::Core(e.into())
    }
}
