//! Request bodies of the OpenAI API as this server reads them. Unknown fields
//! are ignored (clients send many); the ones read are type-checked, and errors
//! name the field's path.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `POST /v1/chat/completions` (`model` is not read: the one model is served).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Token budget (legacy name).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Token budget.
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// 0 (the default) is greedy.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Extension: keep the K most likely tokens.
    #[serde(default)]
    pub top_k: Option<u64>,
    /// Sampling seed (random when absent).
    #[serde(default)]
    pub seed: Option<i64>,
    /// OpenAI's frequency penalty (-2 to 2).
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    /// OpenAI's presence penalty (-2 to 2).
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    /// Refused unless only `text`.
    #[serde(default)]
    pub modalities: Option<Vec<String>>,
    /// Audio output: refused when given.
    #[serde(default)]
    pub audio: Option<serde_json::Value>,
    /// Stop strings.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `include_usage`.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Choices; only 1.
    #[serde(default)]
    pub n: Option<u64>,
    /// Refused when true (see [`ChatRequest::unsupported`]).
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Refused when given.
    #[serde(default)]
    pub top_logprobs: Option<serde_json::Value>,
    /// Refused when not empty.
    #[serde(default)]
    pub tools: Option<serde_json::Value>,
    /// Refused unless `{"type": "text"}`.
    #[serde(default)]
    pub response_format: Option<serde_json::Value>,
    /// The legacy `tools`: refused when not empty.
    #[serde(default)]
    pub functions: Option<serde_json::Value>,
    /// Refused unless `none` or `auto`.
    #[serde(default)]
    pub tool_choice: Option<serde_json::Value>,
    /// The legacy `tool_choice`: refused unless `none` or `auto`.
    #[serde(default)]
    pub function_call: Option<serde_json::Value>,
    /// Refused when not empty.
    #[serde(default)]
    pub logit_bias: Option<serde_json::Value>,
}

impl ChatRequest {
    /// A 400 naming the first field asking for what this server cannot give
    /// (log-probabilities, tool calls, JSON output, logit biases, audio): an answer
    /// without it would look like one that honoured it. Their neutral values
    /// (null, `false`, 0, `[]`, `{}`, `none`, `auto`, `{"type": "text"}`)
    /// pass.
    pub fn unsupported(&self) -> Result<(), ApiError> {
        use serde_json::Value;
        let given = |v: &Option<Value>| match v {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(Value::String(s)) => !matches!(s.as_str(), "none" | "auto"),
            Some(Value::Bool(true)) => true,
        };
        let refuse = |field: &str, what: &str| {
            Err(ApiError::invalid(
                Some(field.to_string()),
                format!("`{field}`: {what} are not supported by this server"),
            )
            .code("unsupported_parameter"))
        };
        if self.logprobs == Some(true) {
            return refuse("logprobs", "log-probabilities");
        }
        if let Some(other) = self
            .modalities
            .iter()
            .flatten()
            .find(|m| m.as_str() != "text")
        {
            return Err(ApiError::invalid(
                Some("modalities".into()),
                format!(
                    "`modalities`: only text is answered, not {}",
                    crate::error::excerpt(other)
                ),
            )
            .code("unsupported_parameter"));
        }
        // Tools the client forbids calling (`tool_choice: "none"`) ask for
        // nothing more than a text answer.
        let none = |choice: &Option<Value>| choice.as_ref().and_then(Value::as_str) == Some("none");
        let tools_off = none(&self.tool_choice);
        let functions_off = none(&self.function_call);
        let no_value = None;
        for (field, value, what) in [
            ("top_logprobs", &self.top_logprobs, "log-probabilities"),
            (
                "tools",
                if tools_off { &no_value } else { &self.tools },
                "tool calls",
            ),
            (
                "functions",
                if functions_off {
                    &no_value
                } else {
                    &self.functions
                },
                "function calls",
            ),
            ("tool_choice", &self.tool_choice, "tool calls"),
            ("function_call", &self.function_call, "function calls"),
            ("logit_bias", &self.logit_bias, "logit biases"),
            ("audio", &self.audio, "audio answers"),
        ] {
            if given(value) {
                return refuse(field, what);
            }
        }
        if let Some(f) = self.response_format.as_ref().filter(|v| !v.is_null()) {
            let kind = f.get("type").and_then(serde_json::Value::as_str);
            if kind != Some("text") {
                return refuse(
                    "response_format",
                    "response formats other than {\"type\": \"text\"} (JSON output)",
                );
            }
        }
        Ok(())
    }
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    /// A last chunk with the usage.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The strings, empty ones dropped.
    pub fn strings(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

/// One message; `content` is checked by [`crate::content`].
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string, a list of parts, or null.
    #[serde(default)]
    pub content: serde_json::Value,
}

/// `POST /v1/images/generations` (`model` is not read).
#[derive(Debug, Deserialize)]
pub struct ImagesRequest {
    /// What to draw.
    pub prompt: String,
    /// Images.
    #[serde(default)]
    pub n: Option<u64>,
    /// Must be the model's native `SxS` when given.
    #[serde(default)]
    pub size: Option<String>,
    /// `b64_json` only.
    #[serde(default)]
    pub response_format: Option<String>,
    /// Extension: guidance weight (default 5).
    #[serde(default)]
    pub cfg_weight: Option<f64>,
    /// Extension: temperature (default 1; 0 = argmax).
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Extension: seed.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Partial previews per image when streaming (0-3).
    #[serde(default)]
    pub partial_images: Option<u64>,
    /// Extension: `image_generation.progress` events while streaming (off by
    /// default: OpenAI's clients know only its own event types).
    #[serde(default)]
    pub progress: Option<bool>,
    /// `auto` or `opaque` (the images have no alpha channel).
    #[serde(default)]
    pub background: Option<String>,
    /// `png` only.
    #[serde(default)]
    pub output_format: Option<String>,
}

impl ImagesRequest {
    /// A 400 naming the first field asking for an image this server cannot
    /// give (a transparent background, JPEG or WebP): an opaque PNG would look
    /// like an answer to it. `quality`, `style` and `moderation` are hints
    /// with nothing to tune here and are not read.
    pub fn unsupported(&self) -> Result<(), ApiError> {
        let refuse = |field: &str, what: String| {
            Err(ApiError::invalid(Some(field.to_string()), what).code("unsupported_parameter"))
        };
        match self.background.as_deref() {
            None | Some("auto" | "opaque") => {}
            Some(other) => {
                return refuse(
                    "background",
                    format!(
                        "`background` {} is not supported: the images are opaque (auto or opaque)",
                        crate::error::excerpt(other)
                    ),
                );
            }
        }
        match self.output_format.as_deref() {
            None | Some("png") => Ok(()),
            Some(other) => refuse(
                "output_format",
                format!(
                    "`output_format` {} is not supported: the images are PNGs (png)",
                    crate::error::excerpt(other)
                ),
            ),
        }
    }
}

/// Parses a JSON body into `T`, a 400 naming the field on failure.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::invalid(
            None,
            "the body must be a JSON object".to_string(),
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing field is named as the field at fault.
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field);
        match (path.as_str(), missing) {
            (".", missing) => ApiError::invalid(missing.map(str::to_string), inner),
            (path, Some(field)) => {
                let at = format!("{path}.{field}");
                ApiError::invalid(Some(at.clone()), format!("`{at}` is missing"))
            }
            (path, None) => ApiError::invalid(Some(path.to_string()), format!("`{path}`: {inner}")),
        }
    })
}

/// A number field in `[lo, hi]`.
pub fn in_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<f64, ApiError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::invalid(
            Some(name.to_string()),
            format!("`{name}` must be in [{lo}, {hi}], got {v}"),
        ))
    }
}
