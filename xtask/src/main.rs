//! `cargo xtask <command>`: project automation (the cargo xtask pattern).
//!
//! - `test`: fmt, clippy and every test, exactly what CI runs;
//! - `clients`: the real-client suites alone (part of `test`);
//! - `convert-weights ARGS` / `bench ARGS`: aliases of `janus convert` and
//!   `janus bench` (run through `cargo run -p janus-cli`).

mod cargo;
mod clients;
mod test;
mod tidy;

const USAGE: &str = "usage: cargo xtask <test | clients | convert-weights ARGS | bench ARGS>

  test             format check, clippy (warnings are errors) and the whole test suite: what CI runs
  clients          only the real-client suites (openai Python client, chromium) against `janus serve`
  convert-weights  alias of `janus convert` (convert a checkpoint into the runtime format)
  bench            alias of `janus bench` (load, encode, prefill, decode, image steps, VQ decode)";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match command.as_str() {
        "test" => test::run(),
        "clients" => clients::run(),
        "convert-weights" => janus(&["convert"], &rest),
        "bench" => janus(&["bench"], &rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => anyhow::bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// Runs the `janus` binary with `command` and the user's arguments.
fn janus(command: &[&str], rest: &[String]) -> anyhow::Result<()> {
    let mut args = vec!["run", "--quiet", "-p", "janus-cli", "--"];
    args.extend_from_slice(command);
    args.extend(rest.iter().map(String::as_str));
    cargo::run(&args, &[])
}
