//! What the per-model configs share: [`ConfigError`], naming the field (its
//! path within the model's section of `config.json`) and what is wrong with it,
//! and the range checks every size goes through before anything is built.

/// A config value that is missing, mistyped or out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct ConfigError {
    /// The dotted path of the field, e.g. `params.width`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error with `prefix.` put in front of the field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Checks `1 <= value <= max` for a size read from a config: absurd sizes are
/// refused here, before any allocation they would imply.
pub fn check_size(field: &str, value: usize, max: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be positive, got 0"));
    }
    if value > max {
        return Err(ConfigError::new(
            field,
            format!("{value} is larger than the supported maximum {max}"),
        ));
    }
    Ok(value)
}

/// Checks that a float setting is finite and positive.
pub fn check_positive(field: &str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::new(
            field,
            format!("expected a positive number, got {value}"),
        ))
    }
}

/// Checks that `a` is a multiple of `b`.
pub fn check_multiple(field: &str, a: usize, b: usize, what: &str) -> Result<(), ConfigError> {
    if b == 0 || !a.is_multiple_of(b) {
        return Err(ConfigError::new(
            field,
            format!("{a} is not a multiple of {what} {b}"),
        ));
    }
    Ok(())
}
