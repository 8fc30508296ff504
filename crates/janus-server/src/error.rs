//! Errors: [`ServerError`] for the library's caller, [`ApiError`] for HTTP
//! clients (OpenAI's `{"error": {message, type, param, code}}`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The model failed to load.
    #[error("the model failed to load: {0}")]
    Load(String),
    /// The HTTP runtime failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, naming the field or limit.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A short machine-readable code.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: param.into(),
            code: None,
        }
    }

    /// An error with `status`.
    pub fn status(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// Sets the code.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// Names `param` as the field at fault of a `context_length_exceeded`
    /// error (OpenAI names `messages` for a chat).
    pub fn on_context_param(mut self, param: &str) -> Self {
        if self.code == Some("context_length_exceeded") && self.param.is_none() {
            self.param = Some(param.to_string());
        }
        self
    }

    /// OpenAI's error type for the status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            503 => "service_unavailable",
            _ => "server_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        // A full queue (429) or a model still loading (503): when to try again
        // (not for a request that can never fit in memory).
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) && self.code != Some("out_of_memory")
        {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if self.code == Some("out_of_memory") {
            // The OpenAI SDKs retry a 503 unless told not to.
            r.headers_mut().insert(
                axum::http::HeaderName::from_static("x-should-retry"),
                axum::http::HeaderValue::from_static("false"),
            );
        }
        r
    }
}

impl From<janus_pipeline::PipelineError> for ApiError {
    fn from(e: janus_pipeline::PipelineError) -> Self {
        use janus_pipeline::PipelineError as P;
        let status = match e {
            P::Image(_)
            | P::Prompt(_)
            | P::Invalid(_)
            | P::Tokenizer(_)
            | P::Memory(_)
            | P::Context(_) => StatusCode::BAD_REQUEST,
            P::Core(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let context = matches!(e, P::Context(_));
        let error = Self::status(status, e.to_string());
        if context {
            error.code("context_length_exceeded")
        } else {
            error
        }
    }
}

/// A client's string as an error message quotes it: at most 64 characters
/// (a 5 MB `role` came back whole in the error).
pub fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_string(),
    }
}
