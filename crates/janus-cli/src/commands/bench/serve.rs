//! `janus bench --serve`: an in-process `janus serve` on a free port, loaded
//! by concurrent image and chat clients; throughput and P50/P95 latency against
//! the same requests sent one at a time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use burn::prelude::Backend;
use janus_core::Precision;
use janus_pipeline::{Janus, JanusConfig, JanusModel, Processor};
use janus_server::{Server, ServerConfig};
use serde_json::{Value, json};

use super::Args;
use crate::args::Task;
use crate::backend::{Job, dispatch};

struct ServeBench {
    model: Option<PathBuf>,
    tokenizer: PathBuf,
    config: JanusConfig,
}

impl Job for ServeBench {
    type Output = (std::net::SocketAddr, janus_server::Shutdown);

    fn model(&self) -> Option<&str> {
        self.model.as_deref().and_then(|m| m.to_str())
    }

    fn run<B: Backend>(
        self,
        device: B::Device,
        precision: Precision,
    ) -> anyhow::Result<Self::Output> {
        let server = Server::bind(ServerConfig {
            addr: "127.0.0.1:0".parse()?,
            model_id: "bench".into(),
            max_queue: 1024,
            // Every client of the benchmark comes from this machine.
            max_connections_per_address: 4096,
            ..Default::default()
        })?;
        let addr = server.local_addr();
        let shutdown = server.shutdown_handle();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let failed_tx = ready_tx.clone();
        std::thread::spawn(move || {
            let load = move || -> Result<Janus<B>, String> {
                let c = &self.config;
                let model = match &self.model {
                    Some(dir) => JanusModel::<B>::load_dir(dir, &device, precision),
                    None => JanusModel::<B>::random(c, &device, precision, 1234),
                }
                .map_err(|e| e.to_string())?;
                // Random weights borrow only the tokenizer (its directory's
                // image settings are for its own sizes).
                let processor = match &self.model {
                    Some(_) => Processor::from_dir(&self.tokenizer, "bench", &c.vision, None),
                    None => Processor::with_tokenizer_of(&self.tokenizer, &c.vision, None),
                }
                .map_err(|e| e.to_string())?;
                Ok(Janus::from_parts(model, processor, self.tokenizer.clone()))
            };
            if let Err(e) = server.run(load, move |_| {
                let _ = ready_tx.send(Ok(()));
            }) {
                let _ = failed_tx.send(Err(e.to_string()));
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(1800)) {
            Ok(Ok(())) => Ok((addr, shutdown)),
            Ok(Err(e)) => bail!("the server did not start: {e}"),
            Err(e) => bail!("the server did not get ready: {e}"),
        }
    }
}

fn post(addr: std::net::SocketAddr, path: &str, body: &Value) -> anyhow::Result<f64> {
    let t = Instant::now();
    let resp = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(7200))
        .build()
        .post(&format!("http://{addr}{path}"))
        .send_string(&body.to_string());
    match resp {
        Ok(r) => {
            let _ = r.into_string()?;
            Ok(t.elapsed().as_secs_f64())
        }
        Err(ureq::Error::Status(code, r)) => bail!("{path}: {code} {}", r.into_string()?),
        Err(e) => bail!("{path}: {e}"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `clients` requests at once, then the same one at a time.
fn load(addr: std::net::SocketAddr, path: &str, bodies: &[Value]) -> anyhow::Result<Value> {
    let t = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|b| s.spawn(move || post(addr, path, b)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
            .collect::<anyhow::Result<Vec<f64>>>()
    })?;
    let concurrent = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut alone = Vec::new();
    for b in bodies {
        alone.push(post(addr, path, b)?);
    }
    let sequential = t.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    alone.sort_by(f64::total_cmp);
    Ok(json!({
        "clients": bodies.len(),
        "concurrent_wall_s": concurrent,
        "sequential_wall_s": sequential,
        "p50_s": percentile(&latencies, 0.5),
        "p95_s": percentile(&latencies, 0.95),
        "alone_p50_s": percentile(&alone, 0.5),
        "concurrent_over_one": concurrent / percentile(&alone, 0.5),
        "speedup_over_sequential": sequential / concurrent,
    }))
}

pub fn run(args: Args, config: JanusConfig) -> anyhow::Result<()> {
    let chat_tokens = args.chat_tokens.unwrap_or(super::DEFAULT_CHAT_TOKENS);
    let tokenizer = match (&args.tokenizer, &args.model) {
        (Some(t), _) => t.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => bail!("--serve --random-weights needs --tokenizer DIR (tokenizer files)"),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let backend = args.backend;
    let precision = backend.precision(
        Task::Default,
        args.model.as_deref().and_then(|m| m.to_str()),
    )?;
    let steps = config.vq.grid_side().pow(2);
    let what = match &args.model {
        Some(dir) => dir.display().to_string(),
        None => format!("{:?} (random weights)", args.variant),
    };
    say!(
        "bench --serve: {what}, {:?} {precision}, {threads} threads, {steps} steps per image",
        backend.backend
    );
    let job = ServeBench {
        model: args.model.clone(),
        tokenizer,
        config,
    };
    let (addr, shutdown) = dispatch(backend, Task::Default, job)?;
    // Warm-up.
    post(
        addr,
        "/v1/images/generations",
        &json!({"prompt": "warm up", "seed": 0}),
    )?;
    let mut rows = Vec::new();
    for &c in args.clients.as_deref().unwrap_or(&super::DEFAULT_CLIENTS) {
        let images: Vec<Value> = (0..c)
            .map(|i| json!({"prompt": format!("a picture of thing number {i}"), "seed": i}))
            .collect();
        say!("  images, {c} client(s)");
        let mut r = load(addr, "/v1/images/generations", &images)?;
        r["kind"] = json!("image");
        rows.push(r);
        let chats: Vec<Value> = (0..c)
            .map(|i| {
                json!({
                    "messages": [{"role": "user", "content": format!("Tell me about number {i}.")}],
                    "max_tokens": chat_tokens,
                    "temperature": 0,
                })
            })
            .collect();
        say!("  chat, {c} client(s)");
        let mut r = load(addr, "/v1/chat/completions", &chats)?;
        r["kind"] = json!("chat");
        rows.push(r);
    }
    shutdown.trigger();
    out!(
        "| requests | clients | concurrent wall | one alone (P50) | concurrent / one | P50 | P95 | sequential wall | speed-up |"
    );
    out!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        out!(
            "| {} | {} | {:.2} s | {:.2} s | {:.2}x | {:.2} s | {:.2} s | {:.2} s | {:.2}x |",
            r["kind"].as_str().unwrap_or(""),
            r["clients"],
            f("concurrent_wall_s"),
            f("alone_p50_s"),
            f("concurrent_over_one"),
            f("p50_s"),
            f("p95_s"),
            f("sequential_wall_s"),
            f("speedup_over_sequential"),
        );
    }
    let report = json!({
        "variant": args.model.is_none().then(|| format!("{:?}", args.variant)),
        "model": args.model.as_ref().map(|m| m.display().to_string()),
        "backend": format!("{:?}", backend.backend),
        "dtype": precision.to_string(),
        "threads": threads,
        "steps_per_image": steps,
        "chat_tokens": chat_tokens,
        "serve": rows,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    say!("wrote {}", args.out.display());
    Ok(())
}
