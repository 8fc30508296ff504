//! `janus understand`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::Backend;
use burn::tensor::DType;
use janus_core::JanusConfig;
use janus_pipeline::chat::{self, Message, Template};
use janus_pipeline::{
    Batch, ImageProcessor, JanusModel, JanusTokenizer, PreparedPrompt, RgbImage, Sampler,
    SamplingConfig,
};

use crate::{Format, TemplateArg, model_dir};
use janus_pipeline::backend::{BackendArgs, Job, dispatch};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a directory (original, transformers-port or converted layout) or a Hugging Face id.
    #[arg(long, default_value = "deepseek-ai/Janus-Pro-1B")]
    model: String,
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
    /// the last assistant turn is generated.
    #[arg(long, value_name = "FILE")]
    conversation: Option<PathBuf>,
    /// Chat template [default: from the checkpoint: `janus` for Janus-1.3B, else `pro`].
    #[arg(long, value_enum)]
    template: Option<TemplateArg>,
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
    /// Output format: streamed text, or one JSON object.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Picks the template: the flag, else from the model name and tokenizer.
pub fn template(
    arg: Option<TemplateArg>,
    dir: &Path,
    model: &str,
    tok: &JanusTokenizer,
) -> Template {
    match arg {
        Some(TemplateArg::Janus) => Template::Janus,
        Some(TemplateArg::Pro) => Template::Pro,
        None => {
            let name = format!(
                "{model} {}",
                dir.canonicalize().unwrap_or(dir.to_path_buf()).display()
            );
            Template::for_model(&name, tok.token_to_id("<|User|>").is_some())
        }
    }
}

/// Image processor of a model dir (defaults when the file is absent), at `size`.
pub fn image_processor(dir: &Path, size: usize) -> anyhow::Result<ImageProcessor> {
    let path = dir.join("preprocessor_config.json");
    let p = if path.is_file() {
        ImageProcessor::from_file(&path)?
    } else {
        ImageProcessor::default()
    };
    Ok(p.with_size(size))
}

fn resolve_image(path: &str, base: &Path) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() || p.exists() {
        p
    } else {
        base.join(p)
    }
}

struct Understand {
    dir: PathBuf,
    batch: Batch,
    pixels: Vec<Vec<f32>>,
    tok: JanusTokenizer,
    sampling: SamplingConfig,
    max_new_tokens: usize,
    format: Format,
}

struct Output {
    token_ids: Vec<u32>,
    text: String,
    load_s: f64,
    prefill_tokens: usize,
    prefill_s: f64,
    decode_s: f64,
}

impl Job for Understand {
    type Output = Output;
    type Error = anyhow::Error;

    fn run<B: Backend>(self, device: B::Device, dtype: DType) -> anyhow::Result<Output> {
        let t0 = Instant::now();
        let (model, _) = JanusModel::<B>::load_dir(&self.dir, &device, dtype)?;
        janus_core::cpu::retain_freed_memory();
        let load_s = t0.elapsed().as_secs_f64();
        eprintln!("loaded {} in {load_s:.1} s ({dtype:?})", self.dir.display());
        let mut sampler = Sampler::new(self.sampling)?;
        let t1 = Instant::now();
        let features = if self.pixels.is_empty() {
            None
        } else {
            Some(model.image_embeds(model.pixel_tensor(&self.pixels)?)?)
        };
        let embeds = model.prepare_inputs_embeds(&self.batch, features)?;
        let mut first: Option<Instant> = None;
        let mut ids = Vec::new();
        let mut printed = String::new();
        let stream = self.format == Format::Text;
        let eos = self.tok.ids.eos;
        model.generate_text(
            &self.batch,
            embeds,
            self.max_new_tokens,
            eos,
            &mut sampler,
            |_, id| {
                first.get_or_insert_with(Instant::now);
                ids.push(id);
                if stream {
                    let text = self.tok.decode(&ids, true);
                    if let Some(new) = text.strip_prefix(printed.as_str()) {
                        print!("{new}");
                        let _ = std::io::stdout().flush();
                        printed = text;
                    }
                }
            },
        );
        let end = Instant::now();
        let first = first.unwrap_or(end);
        let text = self.tok.decode(&ids, true);
        if stream {
            if let Some(rest) = text.strip_prefix(printed.as_str()) {
                print!("{rest}");
            }
            println!();
        }
        Ok(Output {
            token_ids: ids,
            text,
            load_s,
            prefill_tokens: self.batch.len(),
            prefill_s: (first - t1).as_secs_f64(),
            decode_s: (end - first).as_secs_f64(),
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = model_dir(&args.model)?;
    let config = JanusConfig::from_file(dir.join("config.json"))?;
    let tok = JanusTokenizer::from_dir(&dir)?;
    let template = template(args.template, &dir, &args.model, &tok);
    let (messages, image_paths) = match (&args.conversation, &args.prompt) {
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
        (None, Some(prompt)) => {
            let question = chat::place_images(prompt, args.images.len(), &tok.image_tag)?;
            (vec![Message::new("user", question)], args.images.clone())
        }
        (None, None) => bail!("give --prompt or --conversation"),
    };
    let text = chat::understanding_prompt(&messages, template);
    let prompt = PreparedPrompt::new(&tok, &text, config.vision.num_patches())?;
    prompt.expect_images(image_paths.len())?;
    let processor = image_processor(&dir, config.vision.image_size)?;
    let pixels = image_paths
        .iter()
        .map(|p| Ok(processor.preprocess(&RgbImage::open(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling.validate()?;
    let batch = Batch::new(&[prompt], tok.ids.pad, tok.ids.image);
    let job = Understand {
        dir,
        batch,
        pixels,
        tok,
        sampling,
        max_new_tokens: args.max_new_tokens,
        format: args.format,
    };
    let out = dispatch(args.backend, job).context("understanding failed")?;
    let n = out.token_ids.len();
    eprintln!(
        "prefill {} tokens in {:.2} s ({:.1} tok/s); decoded {n} tokens in {:.2} s ({:.2} tok/s)",
        out.prefill_tokens,
        out.prefill_s,
        out.prefill_tokens as f64 / out.prefill_s.max(1e-9),
        out.decode_s,
        n.saturating_sub(1) as f64 / out.decode_s.max(1e-9),
    );
    if args.format == Format::Json {
        let json = serde_json::json!({
            "text": out.text,
            "token_ids": out.token_ids,
            "prompt_tokens": out.prefill_tokens,
            "template": format!("{template:?}").to_lowercase(),
            "timings": {"load_s": out.load_s, "prefill_s": out.prefill_s, "decode_s": out.decode_s},
        });
        println!("{json}");
    }
    Ok(())
}
