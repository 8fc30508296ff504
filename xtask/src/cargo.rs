//! Running cargo from xtask.

use std::process::Command;

use anyhow::{Context, bail};

/// Runs `cargo ARGS` with extra environment variables; fails if it fails.
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("==> cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
