//! The real-client suites: the official `openai` Python package and the web
//! page in Debian's chromium (over WebDriver), both against a `janus serve` of
//! the tiny reference checkpoint on a free port.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn testdata() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("JANUS_TESTDATA").map_or_else(
        || root().join("../shared/testdata/janus-tiny"),
        PathBuf::from,
    );
    if !dir.join("golden.json").is_file() {
        bail!(
            "the client tests need the tiny reference checkpoint at {} (or JANUS_TESTDATA)",
            dir.display()
        );
    }
    Ok(dir.canonicalize().unwrap_or(dir))
}

/// A Python with `openai` installed: `JANUS_PYTHON`, else a venv under
/// `~/.cache/janus-rs/venv`, created (pinned `tests/clients/requirements.txt`) if missing.
fn python() -> anyhow::Result<PathBuf> {
    let has_openai = |py: &Path| {
        Command::new(py)
            .args(["-c", "import openai"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(py) = std::env::var_os("JANUS_PYTHON") {
        let py = PathBuf::from(py);
        if !has_openai(&py) {
            bail!("JANUS_PYTHON={} has no `openai` package", py.display());
        }
        return Ok(py);
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let venv = Path::new(&home).join(".cache/janus-rs/venv");
    let py = venv.join("bin/python");
    if has_openai(&py) {
        return Ok(py);
    }
    eprintln!(
        "==> creating {} with the pinned openai client",
        venv.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&py)
            .args(["-m", "pip", "install", "-q", "-r"])
            .arg(root().join("tests/clients/requirements.txt"))
            .status()
            .is_ok_and(|s| s.success());
    if !ok || !has_openai(&py) {
        bail!(
            "cannot set up a Python venv with `openai` at {} (needs python3 with venv and PyPI); \
             or point JANUS_PYTHON at a Python that has it",
            venv.display()
        );
    }
    Ok(py)
}

fn browser() -> anyhow::Result<()> {
    for (var, default, package) in [
        ("CHROMIUM", "/usr/bin/chromium", "chromium"),
        ("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver"),
    ] {
        let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        if !path.is_file() {
            bail!(
                "the browser test needs {} (Debian: apt-get install chromium chromium-driver; \
                 `.ci/run` installs them), or {var} pointing at it; missing package: {package}",
                path.display()
            );
        }
    }
    Ok(())
}

/// A running `janus serve`, stopped with SIGTERM on drop.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, key: &str) -> anyhow::Result<Served> {
    let bin = target_dir().join("debug/janus");
    if !bin.is_file() {
        bail!("{} is not built (cargo build -p janus-cli)", bin.display());
    }
    let mut child = Command::new(&bin)
        .args(["serve", "--port", "0", "--api-key", key, "--model"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut served = Served {
        child,
        url: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(300))
        .context("janus serve did not get ready in 5 minutes")?;
    served.url = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|r| r.split(' ').next())
        .with_context(|| format!("janus serve printed {line:?}, not its URL"))?
        .to_string();
    Ok(served)
}

/// Runs both suites against one server.
pub fn run() -> anyhow::Result<()> {
    let data = testdata()?;
    let py = python()?;
    browser()?;
    let key = format!("test-{}", std::process::id());
    let served = serve(&data, &key)?;
    let dir = root().join("tests/clients");
    for (script, runner) in [
        ("openai_client.py", py.as_path()),
        ("browser.py", py.as_path()),
    ] {
        eprintln!("==> {script} against {}", served.url);
        let status = Command::new(runner)
            .arg(dir.join(script))
            .current_dir(&dir)
            .env("JANUS_URL", &served.url)
            .env("JANUS_API_KEY", &key)
            .env("JANUS_TESTDATA", &data)
            .status()
            .with_context(|| format!("cannot run {script}"))?;
        if !status.success() {
            bail!("{script} failed ({status})");
        }
    }
    Ok(())
}
