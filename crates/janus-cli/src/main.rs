//! `janus`: run Janus / Janus-Pro from the command line.

/// `eprintln!` that never panics: a line on stderr through
/// [`progress::say`] (ends an open progress bar's line first; write errors
/// ignored).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::progress::say(format_args!($($arg)*))
    };
}

/// `println!` through [`output::println`]: returns the write error (a closed
/// stdout ends the program quietly) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::println(&format!($($arg)*))?
    };
}

mod alloc;
mod args;
mod backend;
mod commands;
mod load;
mod output;
mod progress;
mod signals;

use clap::{Parser, Subcommand};

use crate::commands::{bench, convert, generate, serve, understand, vq};

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
    /// Convert a checkpoint (any supported layout) into the format the runtime loads fastest.
    Convert(convert::Args),
    /// Serve the OpenAI-compatible API (chat and images) and a web page, loading the model once.
    Serve(serve::Args),
    /// Benchmark load, encode, prefill, decode, image generation and VQ decode.
    Bench(bench::Args),
}

fn main() {
    signals::install();
    let cli = Cli::parse();
    check_simd_env();
    let result = match cli.command {
        Command::Understand(args) => understand::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Vq { command } => vq::run(command),
        Command::Convert(args) => convert::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Bench(args) => bench::run(args),
    };
    if let Err(e) = result {
        if output::is_broken_pipe(&e) {
            return;
        }
        say!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// Says when `JANUS_SIMD` is not a level (the kernels then ignore it) or
/// asks for more than this CPU has.
fn check_simd_env() {
    use janus_core::SimdLevel;
    let Ok(value) = std::env::var("JANUS_SIMD") else {
        return;
    };
    let using = janus_core::simd_level();
    match SimdLevel::parse(&value) {
        None => say!(
            "warning: JANUS_SIMD=`{value}` is not a level (scalar, neon, avx2, avxvnni, \
             avx512, avx512vnni): ignored, using {using}"
        ),
        Some(asked) if asked.capped() != asked => say!(
            "note: JANUS_SIMD={value}: this CPU's best is {}, using {using}",
            SimdLevel::detect()
        ),
        Some(_) => {}
    }
}

/// The error and its causes, `: `-separated like `{:#}`, without repeating a
/// cause whose text the message before it already ends with (the library
/// errors name their I/O cause in their own message).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out == text || out.ends_with(&format!(": {text}")) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
