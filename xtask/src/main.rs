//! `cargo xtask <command>`: project automation (the cargo xtask pattern).

mod bench;
mod convert;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "janus-rs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Format check, clippy (warnings are errors) and the whole test suite: what CI runs.
    Test,
    /// Convert an official checkpoint into the format the runtime loads fastest.
    ConvertWeights(convert::Args),
    /// Benchmark load, encode, prefill, decode, image generation and VQ decode.
    Bench(bench::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Test => test::run(),
        Command::ConvertWeights(args) => convert::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
