//! `janus generate`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::prelude::Backend;
use burn::tensor::DType;
use janus_gen_tokenizer::VqModel;
use janus_pipeline::chat;
use janus_pipeline::{ImageGenConfig, JanusModel, JanusTokenizer};

use crate::progress::Progress;
use crate::understand::template;
use crate::{Format, TemplateArg, model_dir};
use janus_pipeline::backend::{BackendArgs, BackendKind, DTypeArg, Job, dispatch};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a directory (original, transformers-port or converted layout) or a Hugging Face id.
    #[arg(long, default_value = "deepseek-ai/Janus-Pro-1B")]
    model: String,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// Chat template [default: from the checkpoint: `janus` for Janus-1.3B, else `pro`].
    #[arg(long, value_enum)]
    template: Option<TemplateArg>,
    /// Images generated together (one batch).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Classifier-free guidance weight.
    #[arg(long = "cfg", default_value_t = 5.0, allow_negative_numbers = true)]
    cfg_weight: f32,
    /// Sampling temperature over image codes; 0 picks the most likely code.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory for img_0.png, img_1.png, ...
    #[arg(long, default_value = "generated")]
    out: PathBuf,
    /// Output format: file list, or JSON with the codes.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Writes RGB bytes as a PNG.
pub fn save_png(path: &Path, img: &janus_gen_tokenizer::Rgb8) -> anyhow::Result<()> {
    image::save_buffer_with_format(
        path,
        &img.pixels,
        img.width as u32,
        img.height as u32,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot write {}", path.display()))
}

struct Generate {
    dir: PathBuf,
    ids: Vec<u32>,
    pad: u32,
    config: ImageGenConfig,
}

impl Job for Generate {
    type Output = (Vec<Vec<u32>>, Vec<janus_gen_tokenizer::Rgb8>);
    type Error = anyhow::Error;

    fn run<B: Backend>(self, device: B::Device, dtype: DType) -> anyhow::Result<Self::Output> {
        let t0 = Instant::now();
        let (model, _) = JanusModel::<B>::load_dir(&self.dir, &device, dtype)?;
        janus_core::cpu::retain_freed_memory();
        eprintln!(
            "loaded {} in {:.1} s ({dtype:?})",
            self.dir.display(),
            t0.elapsed().as_secs_f64()
        );
        let bar = Progress::new(format!("generating {} image(s)", self.config.parallel));
        let codes =
            model.generate_images(&self.ids, self.pad, &self.config, |d, n| bar.update(d, n))?;
        let t1 = Instant::now();
        let images = VqModel::<B>::to_rgb8(model.decode_images(&codes)?);
        eprintln!("decoded in {:.1} s", t1.elapsed().as_secs_f64());
        Ok((codes, images))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dir = model_dir(&args.model)?;
    let config = ImageGenConfig {
        parallel: args.parallel,
        cfg_weight: args.cfg_weight,
        temperature: args.temperature,
        seed: args.seed,
    };
    config.validate()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let probe = args.out.join(".janus-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", args.out.display()))?;
    let _ = std::fs::remove_file(&probe);
    let tok = JanusTokenizer::from_dir(&dir)?;
    let template = template(args.template, &dir, &args.model, &tok);
    let text = chat::generation_prompt(&args.prompt, template, janus_pipeline::BOI_TAG);
    let ids = tok.encode(&text)?;
    let job = Generate {
        dir,
        ids,
        pad: tok.ids.pad,
        config,
    };
    // On the CPU, 16-bit weights make each generation step faster than f32
    // (docs/benchmarks.md): bf16 where the CPU multiplies it natively, else f16.
    let mut backend = args.backend;
    if backend.dtype.is_none() && backend.backend == BackendKind::Cpu {
        backend.dtype = Some(if janus_core::cpu::has_bf16_dot() {
            DTypeArg::Bf16
        } else {
            DTypeArg::F16
        });
    }
    let (codes, images) = dispatch(backend, job).context("image generation failed")?;
    let mut files = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let path = args.out.join(format!("img_{i}.png"));
        save_png(&path, img)?;
        files.push(path.display().to_string());
    }
    match args.format {
        Format::Text => files.iter().for_each(|f| println!("{f}")),
        Format::Json => println!("{}", serde_json::json!({"images": files, "codes": codes})),
    }
    Ok(())
}
