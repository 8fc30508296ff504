//! `janus serve`: one resident Janus model behind an OpenAI-compatible HTTP
//! API for both directions, with a web page at `/`.
//!
//! - `GET /health` (503 until loaded), `GET /v1/models`, `GET /metrics`
//!   (Prometheus text);
//! - `POST /v1/chat/completions`: messages with text and inline `data:` images,
//!   greedy by default, streamed as SSE chunks when `stream` is set;
//! - `POST /v1/images/generations`: PNGs as `b64_json`, streamed as OpenAI's
//!   image events with per-step progress when `stream` is set.
//!
//! One worker thread owns the model: every running chat gets a token and the
//! image batch a step per turn, image requests join the running batch at a
//! step boundary ([`janus_pipeline::ImageBatcher`]), and a client that goes
//! away is dropped within a step.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::DType;
//! use janus_pipeline::Janus;
//! use janus_server::{Server, ServerConfig};
//!
//! # fn main() -> Result<(), janus_server::ServerError> {
//! # let tiny = std::env::var("JANUS_TESTDATA")
//! #     .unwrap_or_else(|_| "../../../shared/testdata/janus-tiny".into());
//! # let model = tiny.clone(); // this example runs on the tiny test checkpoint
//! # /*
//! let model = "deepseek-ai/Janus-Pro-1B".to_string(); // a hub id or a model directory
//! # */
//! let config = ServerConfig {
//!     addr: "127.0.0.1:0".parse().unwrap(), // any free port; 8080 by default
//!     model_id: model.clone(),
//!     ..Default::default()
//! };
//! let server = Server::bind(config)?;
//! let stop = server.shutdown_handle(); // e.g. for a signal handler
//! server.run(
//!     move || Janus::<Flex>::load(&model, &Default::default(), DType::F32).map_err(|e| e.to_string()),
//!     move |addr| {
//!         println!("listening on http://{addr}");
//!         stop.trigger(); // this example stops at once; `janus serve` waits for SIGINT/SIGTERM
//!     },
//! )
//! # }
//! ```

mod chat;
mod config;
mod connections;
mod content;
mod error;
mod http;
mod images;
mod metrics;
mod openai;
mod state;
mod stop;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};

use burn::prelude::Backend;
use janus_pipeline::Janus;

pub use config::{Limits, ServerConfig};
pub use error::{ApiError, ServerError};

use crate::state::{AppState, ModelInfo};
use crate::worker::Work;

/// Stops a running [`Server`]: it stops accepting, drops what is running (its
/// clients' streams end with an error) and [`Server::run`] returns.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<ShutdownInner>);

#[derive(Default)]
struct ShutdownInner {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
    work: Mutex<Option<Sender<Work>>>,
}

impl Shutdown {
    /// Asks the server to stop; callable from any thread, any number of times.
    pub fn trigger(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
        if let Ok(work) = self.0.work.lock()
            && let Some(tx) = work.as_ref()
        {
            let _ = tx.send(Work::Shutdown);
        }
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_triggered() {
                return;
            }
            notified.await;
        }
    }
}

/// A bound server, not yet serving.
pub struct Server {
    listener: std::net::TcpListener,
    config: ServerConfig,
    shutdown: Shutdown,
}

impl Server {
    /// Binds `config.addr` (port 0 picks a free port). The process's soft
    /// limit on open files is raised for `config.max_connections`; where the
    /// hard limit is lower, fewer connections are served
    /// ([`Server::max_connections`]).
    pub fn bind(mut config: ServerConfig) -> Result<Self, ServerError> {
        config.max_connections = connections::connections_allowed(config.max_connections);
        let addr = config.addr;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ServerError::Bind { addr, source })?;
        Ok(Self {
            listener,
            config,
            shutdown: Shutdown::default(),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.config.addr)
    }

    /// Connections served at once: `ServerConfig::max_connections`, or fewer
    /// where the limit on open files does not allow it.
    pub fn max_connections(&self) -> usize {
        self.config.max_connections
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until [`Shutdown::trigger`]: the HTTP side starts at once (`/health`
    /// answers 503), `load` runs on the worker thread, `on_ready` is called with
    /// the address once the model is in memory.
    pub fn run<B, L, R>(self, load: L, on_ready: R) -> Result<(), ServerError>
    where
        B: Backend,
        L: FnOnce() -> Result<Janus<B>, String> + Send + 'static,
        R: FnOnce(SocketAddr) + Send + 'static,
    {
        let addr = self.local_addr();
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut w) = self.shutdown.0.work.lock() {
            *w = Some(tx.clone());
        }
        let app = Arc::new(AppState {
            model: OnceLock::new(),
            work: Mutex::new(tx),
            metrics: Default::default(),
            started: state::unix_now(),
            id_base: state::random_u64(),
            next_id: Default::default(),
            shutdown: self.shutdown.clone(),
            config: self.config,
        });
        let shutdown = self.shutdown.clone();
        let worker_app = app.clone();
        let worker = std::thread::Builder::new()
            .name("janus-worker".into())
            .spawn(move || -> Result<(), String> {
                let janus = match load() {
                    Ok(j) => j,
                    Err(e) => {
                        shutdown.trigger();
                        return Err(e);
                    }
                };
                let c = janus.config();
                let info = ModelInfo {
                    processor: janus.processor().clone(),
                    image_size: c.vq.image_size,
                    image_steps: c.vq.grid_side().pow(2),
                    context: c.language.max_position_embeddings,
                };
                let _ = worker_app.model.set(info);
                on_ready(addr);
                let limits = worker_app.config.limits.clone();
                // A panic drops the requests running then (their clients get
                // an error); the model itself is untouched, so serving goes on.
                while !shutdown.is_triggered() {
                    let metrics = worker_app.metrics.clone();
                    let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker::run(&janus, &rx, metrics, &limits)
                    }));
                    if turn.is_ok() {
                        break;
                    }
                    worker_app.metrics.worker_failed();
                }
                Ok(())
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let served = runtime.block_on(async {
            let listener = tokio::net::TcpListener::from_std(self.listener)?;
            let router = http::router(app.clone());
            let bounds = connections::Bounds {
                idle: app.config.idle_timeout,
                connections: app.config.max_connections,
                per_address: app.config.max_connections_per_address,
            };
            connections::serve(listener, router, self.shutdown.clone(), bounds).await;
            Ok(())
        });
        self.shutdown.trigger();
        runtime.shutdown_background();
        // While the model is still loading the worker is left to the process's exit.
        if app.model.get().is_some() || worker.is_finished() {
            match worker.join() {
                Ok(Err(e)) => return Err(ServerError::Load(e)),
                Err(_) => return Err(ServerError::Load("the worker thread panicked".into())),
                Ok(Ok(())) => {}
            }
        }
        served.map_err(ServerError::Io)
    }
}
