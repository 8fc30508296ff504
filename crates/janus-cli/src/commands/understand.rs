//! `janus understand`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::Backend;
use janus_core::Precision;
use janus_pipeline::chat::{self, Message, Template};
use janus_pipeline::{Janus, Request, RgbImage, SamplingConfig, open_image};

use crate::args::{BackendArgs, Format, ModelArgs, Task};
use crate::backend::{Job, dispatch};
use crate::{load, output};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Image file; repeat for several images.
    #[arg(long = "image", value_name = "PATH")]
    images: Vec<PathBuf>,
    /// The question. Without `<image_placeholder>`, one placeholder per image is put in front.
    #[arg(
        long,
        required_unless_present = "conversation",
        conflicts_with = "conversation"
    )]
    prompt: Option<String>,
    /// A JSON list of messages (`role`, `content`, `images`) for multi-turn chats;
    /// the last assistant turn is generated. `system` messages replace the
    /// built-in system prompt. Relative image paths are looked up next to the
    /// file first, then in the current directory.
    #[arg(long, value_name = "FILE")]
    conversation: Option<PathBuf>,
    /// Chat template: `janus` or `pro` [default: from the checkpoint: `janus` for
    /// Janus-1.3B, else `pro`].
    #[arg(long, value_name = "janus|pro")]
    template: Option<Template>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Nucleus sampling threshold (1 disables).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f32,
    /// Keep only the K most likely tokens (0 disables).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Lowers a token's logit by this much per time it was generated already
    /// (-2 to 2; OpenAI's `frequency_penalty`).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// Lowers the logit of every token generated already by this much (-2 to
    /// 2; OpenAI's `presence_penalty`).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Output format: streamed text, or one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Decodes the images one at a time, each brought to the encoder's input
/// size at once (the later preprocessing leaves such an image as it is), so
/// only one full-size image is held; refuses, before decoding any, a prompt
/// that with its images leaves no room for an answer in the context.
fn open_images<B: Backend>(
    janus: &Janus<B>,
    messages: &[Message],
    paths: &[PathBuf],
) -> anyhow::Result<Vec<RgbImage>> {
    janus.check_understanding_fits(messages, paths.len(), None)?;
    let processor = janus.processor().image_processor();
    paths
        .iter()
        .map(|p| Ok(processor.resize_and_pad(&open_image(p)?)))
        .collect()
}

/// A conversation's image path: a relative one is looked up next to the
/// conversation file first, then in the current directory.
fn resolve_image(path: &str, base: &Path) -> PathBuf {
    let p = PathBuf::from(path);
    let beside = base.join(&p);
    if p.is_absolute() || beside.exists() || !p.exists() {
        beside
    } else {
        p
    }
}

struct Understand {
    model: String,
    template: Option<Template>,
    messages: Vec<Message>,
    /// From the conversation's system messages ([`chat::take_system`]).
    system_prompt: Option<String>,
    images: Vec<PathBuf>,
    sampling: SamplingConfig,
    max_new_tokens: usize,
    format: Format,
}

struct Output {
    token_ids: Vec<u32>,
    /// `stop` (end of sequence) or `length` (the token budget or the
    /// model's context ran out).
    finish_reason: &'static str,
    text: String,
    template: Template,
    load_s: f64,
    prefill_tokens: usize,
    prefill_s: f64,
    decode_s: f64,
}

impl Job for Understand {
    type Output = Output;

    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }

    fn run<B: Backend>(self, device: B::Device, precision: Precision) -> anyhow::Result<Output> {
        let (janus, load_s) = load::janus::<B>(
            &self.model,
            self.template,
            &device,
            precision,
            janus_pipeline::Modules::Understanding,
        )?;
        let image_tag = &janus.processor().tokenizer().image_tag;
        if self
            .system_prompt
            .as_ref()
            .is_some_and(|s| s.contains(image_tag.as_str()))
        {
            bail!("a system message cannot hold images (`{image_tag}`)");
        }
        let images = open_images(&janus, &self.messages, &self.images)?;
        let request = Request {
            messages: self.messages,
            images,
            sampling: self.sampling,
            max_new_tokens: self.max_new_tokens,
            system_prompt: self.system_prompt,
        };
        let t1 = Instant::now();
        let mut answer = janus.understand(&request)?;
        let mut first: Option<Instant> = None;
        let mut text = String::new();
        let stream = self.format == Format::Text;
        for delta in &mut answer {
            let delta = delta?;
            first.get_or_insert_with(Instant::now);
            if stream {
                output::print(&delta.text)?;
            }
            text.push_str(&delta.text);
        }
        if stream {
            output::println("")?;
        }
        let end = Instant::now();
        let first = first.unwrap_or(end);
        Ok(Output {
            token_ids: answer.token_ids().to_vec(),
            finish_reason: match answer.finish_reason() {
                Some(janus_pipeline::FinishReason::Stop) => "stop",
                _ => "length",
            },
            text,
            template: janus.processor().template(),
            load_s,
            prefill_tokens: answer.prompt_tokens(),
            prefill_s: (first - t1).as_secs_f64(),
            decode_s: (end - first).as_secs_f64(),
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut messages, image_paths) = match (&args.conversation, &args.prompt) {
        (Some(file), _) => {
            if !args.images.is_empty() {
                bail!(
                    "--image cannot be combined with --conversation: list images in the messages' `images`"
                );
            }
            let messages = chat::read_conversation(file)?;
            let base = file.parent().unwrap_or(Path::new("."));
            let paths = messages
                .iter()
                .flat_map(|m| m.images.iter().map(|i| resolve_image(i, base)))
                .collect();
            (messages, paths)
        }
        (None, Some(prompt)) => (vec![Message::new("user", prompt)], args.images.clone()),
        (None, None) => bail!("give --prompt or --conversation"),
    };
    if let Some(m) = messages
        .iter()
        .find(|m| chat::is_system_role(&m.role) && !m.images.is_empty())
    {
        bail!("a `{}` message cannot hold images", m.role);
    }
    // As the server: they replace the built-in system prompt.
    let system_prompt = chat::take_system(&mut messages);
    if messages.is_empty() {
        bail!("the conversation holds only system messages: nothing to answer");
    }
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        frequency_penalty: args.frequency_penalty,
        presence_penalty: args.presence_penalty,
    };
    sampling.validate()?;
    for path in &image_paths {
        // Before the model loads: a wrong path fails at once.
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => bail!("image {} is not a file", path.display()),
            // A relative conversation path was looked for in two places.
            Err(e) if args.conversation.is_some() => bail!(
                "cannot open image {} (a relative name is looked for next to the conversation \
                 file, then in the current directory): {e}",
                path.display()
            ),
            Err(e) => bail!("cannot open image {}: {e}", path.display()),
        }
    }
    let images = image_paths;
    let job = Understand {
        model: args.model.model,
        template: args.template,
        messages,
        system_prompt,
        images,
        sampling,
        max_new_tokens: args.max_new_tokens,
        format: args.format,
    };
    let out = dispatch(args.backend, Task::Default, job).context("understanding failed")?;
    let n = out.token_ids.len();
    say!(
        "prefill {} tokens in {:.2} s ({:.1} tok/s); decoded {n} tokens in {:.2} s ({:.2} tok/s)",
        out.prefill_tokens,
        out.prefill_s,
        out.prefill_tokens as f64 / out.prefill_s.max(1e-9),
        out.decode_s,
        n.saturating_sub(1) as f64 / out.decode_s.max(1e-9),
    );
    if out.finish_reason == "length" && n < args.max_new_tokens {
        say!(
            "note: the answer stopped after {n} tokens at the end of the model's context \
             (language_config.max_position_embeddings), before --max-new-tokens {}",
            args.max_new_tokens
        );
    }
    if args.format == Format::Json {
        let json = serde_json::json!({
            "text": out.text,
            "token_ids": out.token_ids,
            "finish_reason": out.finish_reason,
            "prompt_tokens": out.prefill_tokens,
            "template": format!("{:?}", out.template).to_lowercase(),
            "timings": {"load_s": out.load_s, "prefill_s": out.prefill_s, "decode_s": out.decode_s},
        });
        output::println(&json.to_string())?;
    }
    Ok(())
}
