//! `cargo xtask convert-weights`: official checkpoints to the runtime format.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use janus_core::StoredDType;
use janus_core::checkpoint::KeyLayout;

/// Output dtype.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory: original (`pytorch_model*.bin` or `model.safetensors`,
    /// sharded or not) or transformers-port layout.
    #[arg(long)]
    input: PathBuf,
    /// Output directory (gets `model.safetensors` and the config/tokenizer files).
    #[arg(long)]
    output: PathBuf,
    /// Weight dtype to store (bf16 is lossless for the official checkpoints).
    #[arg(long, value_enum, default_value_t = Dtype::Bf16)]
    dtype: Dtype,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.input.is_dir() {
        anyhow::bail!("input directory {} not found", args.input.display());
    }
    let dtype = match args.dtype {
        Dtype::F32 => StoredDType::F32,
        Dtype::F16 => StoredDType::F16,
        Dtype::Bf16 => StoredDType::BF16,
    };
    let t0 = Instant::now();
    let mut current = PathBuf::new();
    let report =
        janus_pipeline::convert::convert(&args.input, &args.output, dtype, |file, done, total| {
            if file != current {
                current = file.to_path_buf();
                eprintln!("converting {}", file.display());
            }
            let width = 30;
            let filled = done * width / total.max(1);
            eprint!(
                "\r  [{}{}] {done}/{total} tensors",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        })
        .with_context(|| format!("converting {} failed", args.input.display()))?;
    let layout = match report.layout {
        KeyLayout::Original => "original",
        KeyLayout::Transformers => "transformers-port",
    };
    eprintln!("variant: {} ({layout} key layout)", report.variant);
    eprintln!(
        "wrote {} tensors ({:.2} GB, {dtype}) to {} in {:.1} s; skipped {} known-unused tensors",
        report.tensors,
        report.bytes as f64 / 1e9,
        args.output.join("model.safetensors").display(),
        t0.elapsed().as_secs_f64(),
        report.skipped.len()
    );
    Ok(())
}
