//! Repository rules that a reviewer would otherwise have to remember, checked as
//! a test (run by `cargo xtask test` through `cargo test --workspace`):
//! every Rust file opens with a `//!` line saying what it holds, library crates
//! print nothing, and there are no stray example programs.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The workspace root (xtask lives one level down).
    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask is inside the workspace")
            .to_path_buf()
    }

    /// Every `.rs` file under `dir`, skipping build output.
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if name != "target" && !name.to_string_lossy().starts_with('.') {
                    rust_files(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    fn all_sources() -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in ["crates", "tests", "xtask"] {
            rust_files(&root().join(dir), &mut files);
        }
        assert!(files.len() > 20, "found only {} Rust files", files.len());
        files
    }

    /// The library crates: everything under `crates/` but the binary.
    fn library_crates() -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("Cargo.toml").is_file())
            .filter(|p| p.file_name().is_some_and(|n| n != "janus-cli"))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn every_source_file_opens_with_a_module_doc_line() {
        let missing: Vec<String> = all_sources()
            .into_iter()
            .filter(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                !text.trim_start().starts_with("//!")
            })
            .map(|f| f.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "files without a `//!` first line: {missing:#?}"
        );
    }

    #[test]
    fn library_crates_print_nothing() {
        let crates = library_crates();
        assert!(crates.len() >= 6, "library crates: {crates:?}");
        let mut found = Vec::new();
        for krate in crates {
            let mut files = Vec::new();
            rust_files(&krate.join("src"), &mut files);
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.trim_start();
                    if code.starts_with("//") {
                        continue;
                    }
                    for mac in ["println!", "eprintln!", "print!", "eprint!", "dbg!"] {
                        if code.contains(mac) {
                            found.push(format!("{}:{}: {}", f.display(), n + 1, code));
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "library crates report through return values and callbacks, not stdout/stderr: {found:#?}"
        );
    }

    #[test]
    fn no_stray_example_programs() {
        let mut stray = Vec::new();
        for krate in library_crates()
            .into_iter()
            .chain([root().join("crates/janus-cli")])
        {
            if krate.join("examples").exists() {
                stray.push(krate.join("examples").display().to_string());
            }
        }
        if root().join("examples").exists() {
            stray.push("examples".into());
        }
        assert!(
            stray.is_empty(),
            "examples live in crate docs (run as doctests) or as tests: {stray:?}"
        );
    }
}
