//! `janus vq encode` / `janus vq decode`: the image tokenizer alone.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::prelude::*;
use burn::tensor::TensorData;
use janus_core::Precision;
use janus_core::Weights;
use janus_gen_tokenizer::VqModel;
use janus_pipeline::JanusConfig;
use janus_pipeline::layout::{open_checkpoint, prefix};
use janus_pipeline::{ImageProcessor, RgbImage, open_image, resolve_model};

use crate::args::{BackendArgs, Format, ModelArgs, Task};
use crate::backend::{Job, dispatch};
use crate::{alloc, output, progress};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Image to codes (preprocessed as for understanding, at the VQ image size).
    Encode {
        #[command(flatten)]
        model: ModelArgs,
        /// Image file.
        #[arg(long)]
        image: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Codes (a JSON list, raster order) to a PNG.
    Decode {
        #[command(flatten)]
        model: ModelArgs,
        /// JSON file: a list of codes, or `{"codes": [...]}` as `vq encode --format json` prints.
        #[arg(long)]
        codes: PathBuf,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

enum Work {
    Encode(Vec<f32>),
    Decode(Vec<u32>),
}

struct VqJob {
    dir: PathBuf,
    config: JanusConfig,
    work: Work,
}

enum VqOut {
    Codes(Vec<u32>),
    Image(RgbImage),
}

impl Job for VqJob {
    type Output = VqOut;

    fn run<B: Backend>(self, device: B::Device, precision: Precision) -> anyhow::Result<VqOut> {
        let (ckpt, _) = open_checkpoint(&self.dir)?;
        let dtype = precision.dtype;
        let w = Weights::new(&ckpt, &device, dtype);
        let vq = VqModel::<B>::load(&w.pp(prefix::VQ), &self.config.vq)?;
        alloc::retain_freed_memory();
        match self.work {
            Work::Encode(pixels) => {
                let s = self.config.vq.image_size;
                let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [1, 3, s, s]), &device)
                    .cast(dtype);
                Ok(VqOut::Codes(vq.encode(x)?.remove(0)))
            }
            Work::Decode(codes) => {
                let img = VqModel::<B>::to_rgb8(vq.decode(&[codes], vq.grid())?).remove(0);
                Ok(VqOut::Image(img))
            }
        }
    }
}

/// The codes in `path`: what `vq encode` prints (JSON `{"codes", "grid"}` or
/// the text format, codes separated by spaces), a JSON list, or `generate
/// --format json`'s output when it holds one image. A `grid` given must be
/// the model's `grid` x `grid`.
fn read_codes(path: &PathBuf, grid: usize) -> anyhow::Result<Vec<u32>> {
    // Ten bytes per code is plenty for any format above; more is not codes
    // (and /dev/zero or a FIFO must not be read forever).
    let limit = (grid * grid * 10 + 4096) as u64;
    // Checked before opening: opening a FIFO waits for a writer.
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, limit + 1), &mut text)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.len() as u64 > limit {
        bail!(
            "{} is over {limit} bytes: more than the codes of one {grid}x{grid} image",
            path.display()
        );
    }
    // A byte-order mark, as some editors save text (line ends are spaces).
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.is_empty() && words.iter().all(|w| w.bytes().all(|b| b.is_ascii_digit())) {
        return words
            .iter()
            .map(|w| {
                w.parse::<u32>()
                    .with_context(|| format!("{}: `{w}` is not a code", path.display()))
            })
            .collect();
    }
    let v: serde_json::Value = serde_json::from_str(text).with_context(|| {
        format!(
            "{} is neither JSON nor codes separated by spaces",
            path.display()
        )
    })?;
    if let Some(g) = v.get("grid") {
        let want = serde_json::json!([grid, grid]);
        if *g != want {
            bail!(
                "{}: `grid` is {g}, but this model's codes form a {grid}x{grid} grid",
                path.display()
            );
        }
    }
    let list = v.get("codes").unwrap_or(&v);
    let list = match list.as_array() {
        Some(a) if a.len() == 1 && a[0].is_array() => a[0].as_array().unwrap(),
        Some(a) if a.len() > 1 && a.iter().all(|c| c.is_array()) => bail!(
            "{}: holds the codes of {} images; decode one at a time (a file with one list)",
            path.display(),
            a.len()
        ),
        Some(a) => a,
        None => bail!("{}: expected a JSON list of codes", path.display()),
    };
    list.iter()
        .map(|c| {
            c.as_u64()
                .filter(|c| *c <= u32::MAX as u64)
                .map(|c| c as u32)
                .with_context(|| {
                    format!(
                        "{}: `{c}` is not a code (a non-negative integer)",
                        path.display()
                    )
                })
        })
        .collect()
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Encode {
            model,
            image,
            format,
            backend,
        } => {
            crate::load::watch_hub_cache(&model.model);
            let dir = resolve_model(&model.model, progress::on_load())?;
            let config = JanusConfig::from_file(dir.join("config.json"))?;
            let processor = ImageProcessor::from_dir(&dir)?.with_size(config.vq.image_size);
            let pixels = processor.preprocess(&open_image(&image)?);
            let grid = config.vq.grid_side();
            let VqOut::Codes(codes) = dispatch(
                backend,
                Task::Default,
                VqJob {
                    dir,
                    config,
                    work: Work::Encode(pixels),
                },
            )?
            else {
                anyhow::bail!("internal error: unexpected VQ job result")
            };
            match format {
                Format::Json => output::println(
                    &serde_json::json!({"codes": codes, "grid": [grid, grid]}).to_string(),
                )?,
                Format::Text => output::println(
                    &codes
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                )?,
            }
            Ok(())
        }
        Command::Decode {
            model,
            codes,
            out,
            backend,
        } => {
            let is_png = out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            if !is_png {
                bail!(
                    "--out {}: the decoder writes PNG files (name it *.png)",
                    out.display()
                );
            }
            crate::load::watch_hub_cache(&model.model);
            let dir = resolve_model(&model.model, progress::on_load())?;
            let config = JanusConfig::from_file(dir.join("config.json"))?;
            let codes = read_codes(&codes, config.vq.grid_side())?;
            let VqOut::Image(img) = dispatch(
                backend,
                Task::Default,
                VqJob {
                    dir,
                    config,
                    work: Work::Decode(codes),
                },
            )?
            else {
                anyhow::bail!("internal error: unexpected VQ job result")
            };
            crate::signals::watch(
                out.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new(".")),
            );
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            output::save_png(&out, &img)?;
            output::println(&out.display().to_string())?;
            Ok(())
        }
    }
}
