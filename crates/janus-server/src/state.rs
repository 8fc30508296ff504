//! What every handler shares: the settings, the worker's queue, what is known
//! of the model once it is loaded, and the counters.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};

use axum::http::StatusCode;
use janus_pipeline::Processor;

use crate::Shutdown;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::worker::Work;

/// Facts about the loaded model the handlers check requests against.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Tokenizer and template (to check prompts before they queue).
    pub processor: Processor,
    /// Side of the generated images.
    pub image_size: usize,
    /// Codes per generated image.
    pub image_steps: usize,
    /// `max_position_embeddings`.
    pub context: usize,
}

/// Shared state of the HTTP side.
pub struct AppState {
    /// Settings.
    pub config: ServerConfig,
    /// Set once the model is loaded.
    pub model: OnceLock<ModelInfo>,
    /// The worker's queue.
    pub work: Mutex<Sender<Work>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Unix seconds at start.
    pub started: u64,
    /// Random per process: the first part of every response id, so two
    /// servers (replicas started in the same second) give different ids.
    pub id_base: u64,
    /// Response ids count up from here.
    pub next_id: std::sync::atomic::AtomicU64,
    /// Whether the server is stopping.
    pub shutdown: Shutdown,
}

/// A place in the queue, given back when its last clone is dropped: the
/// request holds one, and so does blocking work it started (decoding its
/// images goes on after its client left, and must count until it ends).
#[derive(Clone)]
pub struct Slot {
    _place: Arc<Place>,
}

struct Place(Arc<Metrics>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AppState {
    /// The model, or 503 while it loads.
    pub fn model(&self) -> Result<&ModelInfo, ApiError> {
        self.model.get().ok_or_else(|| {
            ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the model is still loading: retry when GET /health answers 200",
            )
            .code("loading")
        })
    }

    /// The 429 of a full queue, if it is full now.
    pub fn queue_full(&self) -> Result<(), ApiError> {
        if self.metrics.in_flight.load(Ordering::SeqCst) >= self.config.max_queue {
            return Err(self.full());
        }
        Ok(())
    }

    fn full(&self) -> ApiError {
        let max = self.config.max_queue;
        ApiError::status(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the queue is full ({max} requests queued or running, --max-queue): retry later"
            ),
        )
        .code("queue_full")
    }

    /// A queue place, or 429 when `--max-queue` requests are already in.
    pub fn admit(&self) -> Result<Slot, ApiError> {
        let max = self.config.max_queue;
        let m = &self.metrics.in_flight;
        let mut now = m.load(Ordering::SeqCst);
        loop {
            if now >= max {
                return Err(self.full());
            }
            match m.compare_exchange(now, now + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    return Ok(Slot {
                        _place: Arc::new(Place(self.metrics.clone())),
                    });
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Hands `work` to the worker.
    pub fn submit(&self, work: Work) -> Result<(), ApiError> {
        let gone = || {
            ApiError::status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        };
        self.work
            .lock()
            .map_err(|_| gone())?
            .send(work)
            .map_err(|_| gone())
    }

    /// A fresh response id with `prefix`.
    pub fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:016x}{n:06x}", self.id_base)
    }
}

/// The error for a request whose answer channel closed before its end: 503
/// while the server stops (running work is cancelled), else 500: the model
/// worker failed on this request (a panic, printed on the server's stderr and
/// counted in `janus_worker_failures_total`); it goes on with the next.
pub fn worker_gone(shutdown: &Shutdown) -> ApiError {
    if shutdown.is_triggered() {
        ApiError::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        )
    } else {
        ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error: the model worker failed on this request (the server's log has \
             the cause); other requests are not affected",
        )
        .code("internal_error")
    }
}

/// A number that differs between processes (std's randomly keyed hasher
/// over the time and the process id).
pub fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
