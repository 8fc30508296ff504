//! The router: routes, API-key check, CORS, limits, and OpenAI-shaped answers
//! for everything that goes wrong before a handler runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::config::Limits;
use crate::connections::IdleTimeoutBody;
use crate::error::ApiError;
use crate::state::{AppState, Slot};

/// The web page, embedded.
const INDEX_HTML: &str = include_str!("web/index.html");

/// Every route of the server.
pub fn router(app: Arc<AppState>) -> Router {
    let limit = app.config.limits.max_body_bytes;
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/chat/completions", post(crate::chat::completions))
        .route("/v1/images/generations", post(crate::images::generations))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies up to twice the limit are read whole before the 413
        // ([`body_bytes`]): a client still sending then reads the answer
        // instead of a reset connection. Larger ones are cut off at once.
        .layer(DefaultBodyLimit::max(limit.saturating_mul(2)))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// API key on `/v1/*`, CORS when an origin is configured.
async fn guard(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let cors = app.config.cors_origin.clone();
    let origin = req.headers().get(header::ORIGIN).cloned();
    if req.method() == Method::OPTIONS && cors.is_some() {
        let mut r = StatusCode::NO_CONTENT.into_response();
        add_cors(&mut r, cors.as_deref(), origin.as_ref());
        // The headers the preflight asks for (the OpenAI SDKs send their own
        // `x-stainless-*` ones with every request).
        if r.headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            && let Some(asked) = req
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .filter(|v| is_header_list(v.as_bytes()))
        {
            r.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            r.headers_mut().insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r.headers_mut().insert(
                header::VARY,
                HeaderValue::from_static("origin, access-control-request-headers"),
            );
        }
        return r;
    }
    let path = req.uri().path().to_string();
    if let Some(key) = &app.config.api_key
        && path.starts_with("/v1/")
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| key.trim());
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            let e = ApiError::status(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key: send `Authorization: Bearer KEY`",
            )
            .code("invalid_api_key");
            let mut r = finish(&app, endpoint_of(&path), e.into_response());
            add_cors(&mut r, cors.as_deref(), origin.as_ref());
            return r;
        }
    }
    // Compressed bodies are not decoded: say so rather than "not valid JSON".
    if let Some(encoding) = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .filter(|e| !e.is_empty() && !e.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        let e = ApiError::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {} is not supported: send the body uncompressed",
                String::from_utf8_lossy(encoding.as_bytes())
            ),
        )
        .code("unsupported_encoding");
        let mut r = finish(&app, endpoint_of(&path), e.into_response());
        add_cors(&mut r, cors.as_deref(), origin.as_ref());
        return r;
    }
    // A client waiting for `100 Continue` before sending a body declared over
    // the limit gets its 413 now, not after uploading it.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let expects = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let endpoint = endpoint_of(&path);
    if expects && matches!(endpoint, "chat" | "images") {
        // Nor one the full queue would refuse after the upload.
        let refused = if declared.is_some_and(|n| n > app.config.limits.max_body_bytes as u64) {
            Some(too_large(&app.config.limits))
        } else {
            app.queue_full().err()
        };
        if let Some(e) = refused {
            let mut r = finish(&app, endpoint, e.into_response());
            add_cors(&mut r, cors.as_deref(), origin.as_ref());
            return r;
        }
    }
    let idle = app.config.idle_timeout;
    let req = req.map(|body| Body::new(IdleTimeoutBody::new(body, idle)));
    let mut r = next.run(req).await;
    add_cors(&mut r, cors.as_deref(), origin.as_ref());
    r
}

fn add_cors(r: &mut Response, allowed: Option<&str>, origin: Option<&HeaderValue>) {
    let Some(allowed) = allowed else { return };
    let value = match (allowed, origin) {
        ("*", _) => HeaderValue::from_static("*"),
        (a, Some(o)) if o.as_bytes() == a.as_bytes() => o.clone(),
        _ => return,
    };
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
}

/// Whether `v` is a comma-separated list of header names (nothing else is
/// echoed back).
fn is_header_list(v: &[u8]) -> bool {
    v.len() <= 1024
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b',' | b' '))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat",
        "/v1/images/generations" => "images",
        p if p.starts_with("/v1/models") => "models",
        _ => "other",
    }
}

/// Counts the response under `endpoint` and passes it on.
pub fn finish(app: &AppState, endpoint: &str, response: Response) -> Response {
    app.metrics.request(endpoint, response.status().as_u16());
    response
}

/// Heavy blocking preparations running at once: each may hold a few hundred
/// MB (a long prompt being tokenized, an image being decoded), so their
/// memory must not grow with the number of clients.
static PREPARING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// What a blocking preparation may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Milliseconds and a few MB (a short prompt, a PNG of a few megapixels):
    /// runs at once, so it never waits behind heavy ones.
    Light,
    /// Seconds or hundreds of MB: [`PREPARING`] at a time.
    Heavy,
}

impl Weight {
    /// Light for a `size` up to `light`, heavy past it.
    pub fn of(size: u64, light: usize) -> Self {
        if size <= light as u64 {
            Self::Light
        } else {
            Self::Heavy
        }
    }
}

/// Text up to this many bytes is tokenized as [`Weight::Light`] work.
pub const LIGHT_TEXT_BYTES: usize = 64 << 10;

/// Images up to this many pixels in all (every generated size) are encoded
/// as [`Weight::Light`] work.
pub const LIGHT_PIXELS: usize = 4 << 20;

/// A request's images up to this many declared pixels in all are decoded as
/// [`Weight::Light`] work (decoding may take their pixels at 16-bit RGBA and
/// a few MB of metadata).
pub const LIGHT_DECODE_PIXELS: usize = 1 << 20;

/// How long a stream waits for its request's first event from the worker
/// before it starts anyway (with keep-alives): a refusal within it is the
/// response's status.
pub const FIRST_EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `f` on tokio's blocking threads (tokenizing a long prompt, decoding
/// images, encoding PNGs: work that would stall every connection served by
/// the async threads meanwhile); [`Weight::Heavy`] work [`PREPARING`] at a
/// time. The request's queue place ([`AppState::admit`]) and the heavy slot
/// are held by the blocking work itself: work whose client left runs on to
/// its end and counts until then (else leaving clients could start any
/// number at once).
pub async fn off_async<T: Send + 'static>(
    weight: Weight,
    slot: &Slot,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = match weight {
        Weight::Light => None,
        Weight::Heavy => Some(PREPARING.acquire().await.map_err(|_| {
            ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
        })?),
    };
    let held = slot.clone();
    tokio::task::spawn_blocking(move || {
        let result = f();
        drop((permit, held));
        result
    })
    .await
    .map_err(|_| {
        ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request's preparation failed",
        )
    })?
}

/// An event stream's keep-alive: a comment line (which clients skip) every
/// 15 s, so proxies do not cut a stream that is quiet for minutes (a request
/// waiting in the queue, an image without progress events).
pub fn keep_alive() -> axum::response::sse::KeepAlive {
    axum::response::sse::KeepAlive::new().interval(std::time::Duration::from_secs(15))
}

/// A handler's result, counted under `endpoint`.
pub fn respond(app: &AppState, endpoint: &str, result: Result<Response, ApiError>) -> Response {
    finish(
        app,
        endpoint,
        result.unwrap_or_else(IntoResponse::into_response),
    )
}

/// The JSON body as `T`: 413 over the limit, 400 naming the field otherwise.
pub fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limits: &Limits,
) -> Result<T, ApiError> {
    crate::openai::parse(&body_bytes(body, limits)?)
}

/// The body, or 413 / 400 in OpenAI's shape.
fn body_bytes(body: Result<Bytes, BytesRejection>, limits: &Limits) -> Result<Bytes, ApiError> {
    let too_large = || too_large(limits);
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::status(e.status(), format!("cannot read the request body: {e}"))
        }
    })?;
    if bytes.len() > limits.max_body_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The 413 for a body over `--max-body-bytes`.
fn too_large(limits: &Limits) -> ApiError {
    ApiError::status(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is over {} bytes (--max-body-bytes)",
            limits.max_body_bytes
        ),
    )
    .code("body_too_large")
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    if app.model.get().is_some() {
        // The page reads the limits to keep a chat's history within them.
        let l = &app.config.limits;
        axum::Json(json!({
            "status": "ok",
            "max_images": l.max_images,
            "max_body_bytes": l.max_body_bytes,
            "max_tokens": l.max_tokens,
        }))
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let depth = app.metrics.in_flight.load(Ordering::SeqCst);
    let text = app.metrics.render(depth, app.model.get().is_some());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn model_object(app: &AppState) -> serde_json::Value {
    json!({
        "id": app.config.model_id,
        "object": "model",
        "created": app.started,
        "owned_by": "janus-rs",
    })
}

async fn models(State(app): State<Arc<AppState>>) -> Response {
    let body = json!({"object": "list", "data": [model_object(&app)]});
    finish(&app, "models", axum::Json(body).into_response())
}

/// Any id names the one model served.
async fn model(State(app): State<Arc<AppState>>) -> Response {
    finish(
        &app,
        "models",
        axum::Json(model_object(&app)).into_response(),
    )
}

async fn not_found(req: Request) -> Response {
    ApiError::status(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
    .code("not_found")
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError::status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .code("method_not_allowed")
    .into_response()
}
