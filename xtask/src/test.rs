//! `cargo xtask test`: the project's full check, exactly what CI runs.

use std::path::Path;

use crate::cargo::run as cargo;

/// Whether a Vulkan driver (e.g. Mesa's lavapipe) is installed.
fn vulkan_driver() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|d| {
            std::fs::read_dir(Path::new(d)).is_ok_and(|mut e| {
                e.any(|f| f.is_ok_and(|f| f.path().extension().is_some_and(|x| x == "json")))
            })
        })
}

/// Runs fmt, clippy and the tests of every workspace crate on the CPU, the
/// parity suites again at the lowest vectorised SIMD level, the real-client
/// suites (openai Python client, chromium) against `janus serve`; then the
/// parity suite on wgpu when a Vulkan driver is present, and a CUDA build check.
/// `JANUS_SKIP_GPU_BACKENDS=1` skips the last two.
pub fn run() -> anyhow::Result<()> {
    // The tests' files (copies of the tiny checkpoint, converted outputs,
    // browser profiles: ~30 MB each, thousands per run) go to one scratch
    // directory, removed when the run passes: run after run they filled a
    // developer's disk.
    let scratch = scratch_dir()?;
    // SAFETY: set before any thread is started; the children inherit it.
    unsafe { std::env::set_var("TMPDIR", &scratch) };
    let result = checks();
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        Err(_) => eprintln!("the tests' files are kept in {}", scratch.display()),
    }
    result
}

/// A fresh scratch directory under the system's temporary directory; those
/// of earlier runs whose process is gone are removed first.
fn scratch_dir() -> anyhow::Result<std::path::PathBuf> {
    const PREFIX: &str = "janus-xtask-test-";
    let base = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix(PREFIX)
                && Path::new("/proc/self").exists()
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("{PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn checks() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(&["test", "--workspace"], &[])?;
    // The parity suites once more with the CPU kernels forced to the lowest
    // vectorised SIMD level (AVX2 on x86-64; capped to what the CPU has).
    let lowest = if cfg!(target_arch = "aarch64") {
        "neon"
    } else {
        "avx2"
    };
    // `--workspace`, not `-p janus-tests`: the same feature set as the run
    // above, so cargo reuses its build (alone, janus-tests resolves other
    // features of shared dependencies and 67 crates, every janus crate among
    // them, compiled again: 575 s of a cold run on a 2-core Zen 4).
    cargo(
        &[
            "test",
            "--workspace",
            "--test",
            "module_parity",
            "--test",
            "llm_parity",
            "--test",
            "pipeline_parity",
            "--test",
            "quantized",
        ],
        &[("JANUS_SIMD", lowest)],
    )?;
    crate::clients::run()?;
    if std::env::var("JANUS_SKIP_GPU_BACKENDS").is_ok_and(|v| v == "1") {
        eprintln!(
            "JANUS_SKIP_GPU_BACKENDS=1: skipping the wgpu parity run and the CUDA build check"
        );
        return Ok(());
    }
    if vulkan_driver() {
        let runtime = std::env::temp_dir().join("janus-xdg-runtime");
        std::fs::create_dir_all(&runtime)?;
        let runtime = runtime.to_string_lossy().to_string();
        cargo(
            &[
                "test",
                "--workspace",
                "--features",
                "janus-tests/wgpu",
                "--test",
                "gpu_parity",
            ],
            &[("XDG_RUNTIME_DIR", runtime.as_str())],
        )?;
    } else {
        eprintln!(
            "no Vulkan driver found (Debian: mesa-vulkan-drivers): skipping the wgpu parity run"
        );
    }
    cargo(
        &["check", "-p", "janus-cli", "--features", "cuda", "--bins"],
        &[],
    )?;
    Ok(())
}
