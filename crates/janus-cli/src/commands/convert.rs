//! `janus convert` (also `cargo xtask convert-weights`): official checkpoints to
//! the runtime format.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use janus_core::QuantFormat;
use janus_pipeline::layout::KeyLayout;

use crate::args::DTypeArg;
use crate::progress::FileProgress;

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
    #[arg(long, value_enum, default_value_t = DTypeArg::Bf16)]
    dtype: DTypeArg,
    /// Also store the LLM's linears, `lm_head` and the gen head block-quantized
    /// (the rest stays in `--dtype`); loads quantized without `--dtype`.
    #[arg(long, value_enum)]
    quant: Option<QuantArg>,
}

/// `--quant` formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum QuantArg {
    /// int8 blocks of 32 with an f16 scale (8.5 bits per weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale (4.5 bits per weight).
    #[value(name = "q4_0")]
    Q4_0,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.input.is_file() {
        anyhow::bail!(
            "--input {} is a file: give the model directory holding it",
            args.input.display()
        );
    }
    if !args.input.is_dir() {
        anyhow::bail!("input directory {} not found", args.input.display());
    }
    crate::signals::watch(&args.output);
    let dtype = args.dtype.stored();
    let t0 = Instant::now();
    let mut bars = FileProgress::default();
    let quant = args.quant.map(|q| match q {
        QuantArg::Q8_0 => QuantFormat::Q8_0,
        QuantArg::Q4_0 => QuantFormat::Q4_0,
    });
    if let Some(pid) = janus_pipeline::convert::lock_holder(&args.output) {
        say!(
            "waiting for another conversion into {} (process {pid}) to finish",
            args.output.display()
        );
    }
    let report = janus_pipeline::convert::convert(
        &args.input,
        &args.output,
        dtype,
        quant,
        |file, done, total| bars.update(file, done, total),
    )
    .with_context(|| format!("converting {} failed", args.input.display()))?;
    let layout = match report.layout {
        KeyLayout::Original => "original",
        KeyLayout::Transformers => "transformers-port",
    };
    for stale in &report.removed {
        say!(
            "removed {} (an index of an earlier conversion, which would have shadowed the new weights)",
            stale.display()
        );
    }
    say!("variant: {} ({layout} key layout)", report.variant);
    if let Some(t) = report.template {
        let (user, assistant) = t.roles();
        say!(
            "chat template: {} ({user} / {assistant}), recorded in processor_config.json",
            t.name()
        );
    }
    let stored = match quant {
        Some(q) => format!("{q} for {} matrices, the rest {dtype}", report.quantized),
        None => dtype.to_string(),
    };
    say!(
        "wrote {} tensors ({:.2} GB, {stored}) to {} in {:.1} s; skipped {} known-unused tensors",
        report.tensors,
        report.bytes as f64 / 1e9,
        args.output.join("model.safetensors").display(),
        t0.elapsed().as_secs_f64(),
        report.skipped.len()
    );
    Ok(())
}
