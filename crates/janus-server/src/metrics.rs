//! Counters for `GET /metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shared counters; every field is updated lock-free but the per-route map.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests queued or running.
    pub in_flight: AtomicUsize,
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    tokens: AtomicU64,
    token_nanos: AtomicU64,
    image_steps: AtomicU64,
    step_nanos: AtomicU64,
    steps: AtomicU64,
    last_step_nanos: AtomicU64,
    worker_failures: AtomicU64,
}

impl Metrics {
    /// Counts a finished request.
    pub fn request(&self, endpoint: &str, status: u16) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((endpoint.to_string(), status)).or_default() += 1;
        }
    }

    /// Counts a panic of the model worker (the requests it was running fail).
    pub fn worker_failed(&self) {
        self.worker_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one scheduler step: `tokens` text tokens and `image_rows`
    /// image codes produced in `nanos`.
    pub fn step(&self, tokens: u64, images: u64, nanos: u64) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.step_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.last_step_nanos.store(nanos, Ordering::Relaxed);
        if tokens > 0 {
            self.tokens.fetch_add(tokens, Ordering::Relaxed);
            self.token_nanos.fetch_add(nanos, Ordering::Relaxed);
        }
        self.image_steps.fetch_add(images, Ordering::Relaxed);
    }

    /// The Prometheus exposition.
    pub fn render(&self, queue_depth: usize, ready: bool) -> String {
        let mut out = String::new();
        let secs = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "# HELP janus_ready 1 once the model is loaded.");
        let _ = writeln!(out, "# TYPE janus_ready gauge\njanus_ready {}", ready as u8);
        let _ = writeln!(
            out,
            "# HELP janus_queue_depth Requests queued or running.\n# TYPE janus_queue_depth gauge\njanus_queue_depth {queue_depth}"
        );
        let _ = writeln!(
            out,
            "# HELP janus_requests_total Requests answered, by endpoint and status.\n# TYPE janus_requests_total counter"
        );
        if let Ok(map) = self.requests.lock() {
            for ((endpoint, status), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "janus_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP janus_worker_failures_total Panics of the model worker (each failed the requests it ran).\n# TYPE janus_worker_failures_total counter\njanus_worker_failures_total {}",
            self.worker_failures.load(Ordering::Relaxed)
        );
        let tokens = self.tokens.load(Ordering::Relaxed);
        let images = self.image_steps.load(Ordering::Relaxed);
        let token_s = secs(&self.token_nanos);
        let step_s = secs(&self.step_nanos);
        let steps = self.steps.load(Ordering::Relaxed);
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let _ = writeln!(
            out,
            "# HELP janus_generated_tokens_total Text tokens generated.\n# TYPE janus_generated_tokens_total counter\njanus_generated_tokens_total {tokens}"
        );
        let _ = writeln!(
            out,
            "# HELP janus_tokens_per_second Text tokens per second of step time.\n# TYPE janus_tokens_per_second gauge\njanus_tokens_per_second {:.3}",
            rate(tokens, token_s)
        );
        let _ = writeln!(
            out,
            "# HELP janus_image_steps_total Image codes generated (one per image per step).\n# TYPE janus_image_steps_total counter\njanus_image_steps_total {images}"
        );
        let _ = writeln!(
            out,
            "# HELP janus_image_steps_per_second Image codes per second of step time.\n# TYPE janus_image_steps_per_second gauge\njanus_image_steps_per_second {:.3}",
            rate(images, step_s)
        );
        let _ = writeln!(
            out,
            "# HELP janus_step_seconds Scheduler step latency.\n# TYPE janus_step_seconds summary\njanus_step_seconds_sum {step_s:.6}\njanus_step_seconds_count {steps}"
        );
        let _ = writeln!(
            out,
            "# HELP janus_last_step_seconds Latency of the latest step.\n# TYPE janus_last_step_seconds gauge\njanus_last_step_seconds {:.6}",
            secs(&self.last_step_nanos)
        );
        out
    }
}
