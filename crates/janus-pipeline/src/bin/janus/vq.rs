//! `janus vq encode` / `janus vq decode`: the image tokenizer alone.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use janus_core::{Checkpoint, JanusConfig, Weights};
use janus_gen_tokenizer::VqModel;
use janus_pipeline::RgbImage;

use crate::generate::save_png;
use crate::understand::image_processor;
use crate::{Format, model_dir};
use janus_pipeline::backend::{BackendArgs, Job, dispatch};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Image to codes (preprocessed as for understanding, at the VQ image size).
    Encode {
        /// Model: a directory (original, transformers-port or converted layout) or a Hugging Face id.
        #[arg(long, default_value = "deepseek-ai/Janus-Pro-1B")]
        model: String,
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
        /// Model: a directory (original, transformers-port or converted layout) or a Hugging Face id.
        #[arg(long, default_value = "deepseek-ai/Janus-Pro-1B")]
        model: String,
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
    Image(janus_gen_tokenizer::Rgb8),
}

impl Job for VqJob {
    type Output = VqOut;
    type Error = anyhow::Error;

    fn run<B: Backend>(self, device: B::Device, dtype: DType) -> anyhow::Result<VqOut> {
        let ckpt = Checkpoint::open(&self.dir)?;
        let vq = VqModel::<B>::load(&Weights::new(&ckpt, &device, dtype), &self.config.vq)?;
        janus_core::cpu::retain_freed_memory();
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

fn read_codes(path: &PathBuf) -> anyhow::Result<Vec<u32>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let list = v.get("codes").unwrap_or(&v);
    let list = match list.as_array() {
        Some(a) if a.len() == 1 && a[0].is_array() => a[0].as_array().unwrap(),
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
            let dir = model_dir(&model)?;
            let config = JanusConfig::from_file(dir.join("config.json"))?;
            let processor = image_processor(&dir, config.vq.image_size)?;
            let pixels = processor.preprocess(&RgbImage::open(&image)?);
            let grid = config.vq.grid_side();
            let VqOut::Codes(codes) = dispatch(
                backend,
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
                Format::Json => println!(
                    "{}",
                    serde_json::json!({"codes": codes, "grid": [grid, grid]})
                ),
                Format::Text => println!(
                    "{}",
                    codes
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            }
            Ok(())
        }
        Command::Decode {
            model,
            codes,
            out,
            backend,
        } => {
            let dir = model_dir(&model)?;
            let config = JanusConfig::from_file(dir.join("config.json"))?;
            let codes = read_codes(&codes)?;
            let VqOut::Image(img) = dispatch(
                backend,
                VqJob {
                    dir,
                    config,
                    work: Work::Decode(codes),
                },
            )?
            else {
                anyhow::bail!("internal error: unexpected VQ job result")
            };
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            save_png(&out, &img)?;
            println!("{}", out.display());
            Ok(())
        }
    }
}
