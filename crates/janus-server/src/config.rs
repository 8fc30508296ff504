//! What a server is started with: the address, the key, the queue and the
//! per-request limits.

use std::net::SocketAddr;
use std::time::Duration;

/// Server settings; [`ServerConfig::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind; `127.0.0.1:8080` by default (port 0 picks a free one).
    pub addr: SocketAddr,
    /// The id `/v1/models` lists and responses carry (the `--model` value).
    pub model_id: String,
    /// With a key, every `/v1/*` route needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Requests queued or running at once; more get 429.
    pub max_queue: usize,
    /// An origin allowed to call the API from a browser (CORS); none by default.
    pub cors_origin: Option<String>,
    /// Per-request limits.
    pub limits: Limits,
    /// How long a client may take to send a request's headers (an idle
    /// keep-alive connection is closed after it), the longest pause in a
    /// request body, and the longest a response waits for the client to
    /// read; 30 s by default.
    pub idle_timeout: Duration,
    /// Connections served at once (more wait to be accepted), 1024 by
    /// default: clients cannot use up the process's file descriptors.
    pub max_connections: usize,
    /// Connections one client address may hold at once (more are closed on
    /// arrival), 64 by default: one client cannot take every connection.
    pub max_connections_per_address: usize,
}

/// Per-request limits; each one exceeded is a 4xx naming it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request body bytes (`--max-body-bytes`), 20 MB by default.
    pub max_body_bytes: usize,
    /// Images in one chat request.
    pub max_images: usize,
    /// Decoded pixels (width x height) of one image.
    pub max_image_pixels: u64,
    /// `max_tokens` of one chat request.
    pub max_tokens: usize,
    /// Images of one generation request (`n`).
    pub max_n: usize,
    /// Images generated together in one batch (several requests share it).
    pub max_batch_images: usize,
    /// Bytes the image batch may use beyond the weights (KV cache, logits,
    /// pixels); also bounded by the memory available. `None`: what is available.
    pub max_memory: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 20_000_000,
            max_images: 8,
            max_image_pixels: 40_000_000,
            max_tokens: 4096,
            max_n: 16,
            max_batch_images: 32,
            max_memory: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model_id: "janus".into(),
            api_key: None,
            max_queue: 64,
            cors_origin: None,
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 64,
        }
    }
}
