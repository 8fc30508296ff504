//! `janus serve`: load once, serve the OpenAI-compatible API and the web page
//! until SIGINT / SIGTERM.

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::Context;
use burn::prelude::Backend;
use janus_core::Precision;
use janus_pipeline::chat::Template;
use janus_server::{Limits, Server, ServerConfig};

use crate::args::{BackendArgs, ModelArgs, Task};
use crate::backend::{Job, dispatch};
use crate::{load, output, signals};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 route.
    #[arg(long, env = "JANUS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests queued or running at once; more get 429.
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    max_queue: usize,
    /// Chat template: `janus` or `pro` [default: from the checkpoint].
    #[arg(long, value_name = "janus|pro")]
    template: Option<Template>,
    /// Allow browser pages from this origin (CORS); `*` allows any.
    #[arg(long, value_parser = origin)]
    cors_origin: Option<String>,
    /// Connections one client address may hold at once (more are closed on
    /// arrival); raise it behind a reverse proxy, whose clients all share
    /// its address.
    #[arg(long, default_value_t = ServerConfig::default().max_connections_per_address, value_parser = at_least_one)]
    max_connections_per_address: usize,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes, value_parser = at_least_one)]
    max_body_bytes: usize,
    /// Images per chat request.
    #[arg(long, default_value_t = Limits::default().max_images, value_parser = at_least_one)]
    max_images: usize,
    /// Decoded pixels (width x height) per input image.
    #[arg(long, default_value_t = Limits::default().max_image_pixels, value_parser = at_least_one_u64)]
    max_image_pixels: u64,
    /// Largest `max_tokens` of a chat request (and its default).
    #[arg(long, default_value_t = Limits::default().max_tokens, value_parser = at_least_one)]
    max_tokens: usize,
    /// Largest `n` of an image request.
    #[arg(long, default_value_t = Limits::default().max_n, value_parser = at_least_one)]
    max_n: usize,
    /// Images generated together in one batch, over all requests.
    #[arg(long, default_value_t = Limits::default().max_batch_images, value_parser = at_least_one)]
    max_batch_images: usize,
    /// Bytes image generation may use beyond the weights (KV cache, logits,
    /// pixels), e.g. `4GB` or `3GiB` [default: the memory available].
    /// Requests that do not fit wait; one that does not fit alone gets 503.
    #[arg(long, value_name = "SIZE", value_parser = janus_pipeline::memory::parse_size)]
    max_memory: Option<u64>,
    #[command(flatten)]
    backend: BackendArgs,
}

struct Serve {
    args: Args,
}

impl Job for Serve {
    type Output = ();

    fn model(&self) -> Option<&str> {
        Some(&self.args.model.model)
    }

    fn run<B: Backend>(self, device: B::Device, precision: Precision) -> anyhow::Result<()> {
        let a = self.args;
        let a_key_was_empty = a.api_key.as_deref().is_some_and(str::is_empty);
        let config = ServerConfig {
            addr: resolve(&a.host, a.port)?,
            model_id: public_id(&a.model.model),
            api_key: a.api_key.filter(|k| !k.is_empty()),
            max_queue: a.max_queue,
            cors_origin: a.cors_origin,
            limits: Limits {
                max_body_bytes: a.max_body_bytes,
                max_images: a.max_images,
                max_image_pixels: a.max_image_pixels,
                max_tokens: a.max_tokens,
                max_n: a.max_n,
                max_batch_images: a.max_batch_images,
                max_memory: a.max_memory,
            },
            max_connections_per_address: a.max_connections_per_address,
            ..ServerConfig::default()
        };
        let keyed = config.api_key.is_some();
        if !keyed && a_key_was_empty {
            say!("warning: the API key given is empty: the API is open to anyone who can reach it");
        }
        let asked = config.max_connections;
        let server = Server::bind(config)?;
        if server.max_connections() < asked {
            say!(
                "note: serving at most {} connections at once (not {asked}): the limit on open \
                 files (ulimit -n) is lower",
                server.max_connections()
            );
        }
        let stop = server.shutdown_handle();
        signals::on_signal(move || {
            say!("\nstopping: no new requests, cancelling running ones");
            stop.trigger();
        });
        let addr = server.local_addr();
        say!(
            "loading {} (GET /health answers 503 until it is in memory)",
            a.model.model
        );
        let model = a.model.model;
        let template = a.template;
        server
            .run(
                move || {
                    load::janus::<B>(
                        &model,
                        template,
                        &device,
                        precision,
                        janus_pipeline::Modules::All,
                    )
                    .map(|(janus, _)| janus)
                    .map_err(|e| format!("{e:#}"))
                },
                move |_| {
                    let key = if keyed { " (API key required)" } else { "" };
                    let _ = output::println(&format!("listening on http://{addr}{key}"));
                },
            )
            .context("the server stopped with an error")?;
        say!("stopped");
        Ok(())
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let backend = args.backend;
    dispatch(backend, Task::Default, Serve { args })
}

/// A count flag that must be at least 1 (0 would refuse every request).
/// `--host` as an address: an IP address or a name such as `localhost`.
fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("--host {host}: not an address this machine resolves: {e}"))?
        .collect();
    // IPv4 first: `localhost` may list ::1 before 127.0.0.1.
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("--host {host}: resolves to no address"))
}

/// `--cors-origin`: `*` or an origin such as `https://app.example:8443`.
fn origin(s: &str) -> Result<String, String> {
    let host = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .map(|rest| rest.trim_end_matches('/'));
    let ok = s == "*"
        || host
            .is_some_and(|h| !h.is_empty() && !h.contains('/') && !h.contains(char::is_whitespace));
    if ok {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err("expected `*` or an origin such as https://app.example:8443".into())
    }
}

fn at_least_one_u64(s: &str) -> Result<u64, String> {
    at_least_one(s).map(|n| n as u64)
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The id clients see for `--model`: a hub id as given, a local directory by
/// its name (its path stays on the server: clients such as Open WebUI show
/// the id, and it would tell every client where the files are); a snapshot
/// of the Hugging Face cache (`models--ORG--NAME/snapshots/COMMIT`) by its
/// hub id.
fn public_id(model: &str) -> String {
    use std::path::{Component, Path};
    let path = Path::new(model);
    if !path.is_dir() {
        return model.to_string();
    }
    // `.` or `..` name no directory: the absolute path does (symbolic links
    // are not followed: a link is named as the user named it).
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut parts: Vec<String> = Vec::new();
    for c in absolute.components() {
        match c {
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    match parts.as_slice() {
        [.., repo, snapshots, _commit] if snapshots == "snapshots" => {
            match repo.strip_prefix("models--") {
                Some(id) => id.replacen("--", "/", 1),
                None => parts[parts.len() - 1].clone(),
            }
        }
        [.., name] => name.clone(),
        [] => model.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::public_id;

    #[test]
    fn a_local_model_is_named_by_its_directory() {
        let dir = std::env::temp_dir().join(format!("janus-id-{}", std::process::id()));
        let snapshot = dir.join("models--deepseek-ai--Janus-Pro-7B/snapshots/0123abcd");
        let plain = dir.join("Janus-Pro-1B");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(plain.join("sub")).unwrap();
        assert_eq!(
            public_id(snapshot.to_str().unwrap()),
            "deepseek-ai/Janus-Pro-7B"
        );
        assert_eq!(public_id(plain.to_str().unwrap()), "Janus-Pro-1B");
        let up = plain.join("sub").join("..");
        assert_eq!(public_id(up.to_str().unwrap()), "Janus-Pro-1B");
        assert_eq!(
            public_id("deepseek-ai/Janus-Pro-1B"),
            "deepseek-ai/Janus-Pro-1B"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
