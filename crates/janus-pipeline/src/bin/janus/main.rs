//! `janus`: run Janus / Janus-Pro from the command line.

mod generate;
mod progress;
mod understand;
mod vq;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "janus",
    version,
    about = "Janus / Janus-Pro multimodal models: understand and generate images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text (streamed for `understand`).
    Text,
    /// One JSON object on stdout.
    Json,
}

/// Chat template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TemplateArg {
    /// Janus-1.3B: `User` / `Assistant`.
    Janus,
    /// Janus-Pro: `<|User|>` / `<|Assistant|>`.
    Pro,
}

#[derive(Subcommand)]
enum Command {
    /// Answer a question about one or more images (or chat without images).
    Understand(understand::Args),
    /// Generate images from a text prompt.
    Generate(generate::Args),
    /// The VQ image tokenizer on its own.
    Vq {
        #[command(subcommand)]
        command: vq::Command,
    },
}

/// Resolves `--model` (a directory, or a hub id with the `hub` feature) to a
/// directory holding `config.json`.
pub fn model_dir(model: &str) -> anyhow::Result<PathBuf> {
    #[cfg(feature = "hub")]
    let dir = {
        let bar = progress::Progress::new("converting");
        janus_pipeline::hub::resolve_model(model, |_, done, total| bar.update(done, total))?
    };
    #[cfg(not(feature = "hub"))]
    let dir = {
        let dir = PathBuf::from(model);
        if !dir.is_dir() {
            anyhow::bail!(
                "model directory `{model}` not found (this binary was built without hub support)"
            );
        }
        dir
    };
    if !dir.join("config.json").is_file() {
        anyhow::bail!(
            "{} has no config.json: is it a Janus model directory?",
            dir.display()
        );
    }
    Ok(dir)
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Understand(args) => understand::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Vq { command } => vq::run(command),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
