//! `janus generate`.

use std::path::PathBuf;

use anyhow::Context;
use burn::prelude::Backend;
use janus_core::Precision;
use janus_pipeline::chat::Template;
use janus_pipeline::{GeneratedImage, ImageGenConfig, ImageRequest, Janus, Modules};

use crate::args::{BackendArgs, Format, ModelArgs, Task};
use crate::backend::{Job, dispatch};
use crate::progress::Progress;
use crate::{load, output};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// Chat template: `janus` or `pro` [default: from the checkpoint: `janus` for
    /// Janus-1.3B, else `pro`].
    #[arg(long, value_name = "janus|pro")]
    template: Option<Template>,
    /// Images generated together (one batch).
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Classifier-free guidance weight (0 to 100).
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
    /// Memory the whole process may use (e.g. `6GB`, `7.5G`, `8GiB`) [default:
    /// what the machine has available]. Images that do not fit at once are
    /// generated in chunks; a run where not even one fits is refused before
    /// loading.
    #[arg(long, value_name = "SIZE", value_parser = janus_pipeline::memory::parse_size)]
    max_memory: Option<u64>,
    /// Output format: file list, or JSON with the codes.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    backend: BackendArgs,
}

struct Generate {
    model: String,
    template: Option<Template>,
    request: ImageRequest,
    max_memory: Option<u64>,
    out: PathBuf,
}

/// An image written to disk, and its codes.
struct Written {
    path: PathBuf,
    codes: Vec<u32>,
}

impl Job for Generate {
    type Output = Vec<Written>;

    fn model(&self) -> Option<&str> {
        Some(&self.model)
    }

    fn run<B: Backend>(
        self,
        device: B::Device,
        precision: Precision,
    ) -> anyhow::Result<Self::Output> {
        load::watch_hub_cache(&self.model);
        let plan = Janus::<B>::plan_generation(
            &self.model,
            precision,
            self.template,
            &self.request,
            self.max_memory,
            crate::progress::on_load(),
        )?;
        say!("{}", plan.summary());
        plan.check()?;
        let (mut janus, _) = load::janus::<B>(
            &self.model,
            self.template,
            &device,
            precision,
            Modules::Generation,
        )?;
        janus.set_memory_limit(self.max_memory);
        let parallel = self.request.config.parallel;
        let bar = Progress::new(format!("generating {parallel} image(s)"));
        // Each chunk's images are written as soon as they are decoded: an
        // interrupted run keeps the chunks it finished.
        let mut written = Vec::with_capacity(parallel);
        janus.generate_images_with(
            &self.request,
            |d, n| {
                bar.update(d, n);
                // The VQ decoder's part can take a while for many images.
                if d == n {
                    say!("decoding the last codes to pixels (VQ decoder)");
                }
            },
            |i, image: GeneratedImage| -> anyhow::Result<()> {
                let path = self.out.join(format!("img_{i}.png"));
                output::save_png(&path, &image.image)?;
                written.push(Written {
                    path,
                    codes: image.codes,
                });
                Ok(())
            },
        )?;
        Ok(written)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = ImageGenConfig {
        parallel: args.parallel,
        cfg_weight: args.cfg_weight,
        temperature: args.temperature,
        seed: args.seed,
    };
    config.validate()?;
    crate::signals::watch(&args.out);
    if args.out.exists() && !args.out.is_dir() {
        anyhow::bail!("--out {} exists and is not a directory", args.out.display());
    }
    // A run that fails before writing an image leaves no empty directories.
    let _created = janus_checkpoint::create_dirs(&args.out)
        .with_context(|| format!("cannot create output directory {}", args.out.display()))?;
    let probe = args
        .out
        .join(format!(".janus-write-test.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output directory {} is not writable", args.out.display()))?;
    let _ = std::fs::remove_file(&probe);
    // What killed runs left (a signal's clean-up removes its own).
    for stale in janus_checkpoint::remove_stale_partials(&args.out) {
        say!(
            "removed {} (left by a run that was killed)",
            stale.display()
        );
    }
    let job = Generate {
        model: args.model.model,
        template: args.template,
        request: ImageRequest::new(args.prompt).config(config),
        max_memory: args.max_memory,
        out: args.out.clone(),
    };
    let images = dispatch(args.backend, Task::Generate, job).context("image generation failed")?;
    let files: Vec<String> = images
        .iter()
        .map(|w| w.path.display().to_string())
        .collect();
    let stale: Vec<String> = (images.len()..)
        .map(|i| args.out.join(format!("img_{i}.png")))
        .take_while(|p| p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !stale.is_empty() {
        // A few names, not a line of a thousand.
        let named = match stale.len() {
            1..=3 => stale.join(", "),
            n => format!("{}, ... {} ({n} files)", stale[0], stale[n - 1]),
        };
        say!(
            "note: {} also holds {named} from an earlier run (not written now)",
            args.out.display(),
        );
    }
    match args.format {
        Format::Text => output::println(&files.join("\n"))?,
        Format::Json => {
            let codes: Vec<&Vec<u32>> = images.iter().map(|w| &w.codes).collect();
            output::println(&serde_json::json!({"images": files, "codes": codes}).to_string())?
        }
    }
    Ok(())
}
