//! Seeded mutations (truncate, flip bytes, splice, grow length fields) of the
//! tiny checkpoint's weight files, a shard index, `config.json` and the test
//! images: every case must give an error or a valid result — never a panic, a
//! hang, or one allocation above [`CAP`] (the allocator below refuses those,
//! which aborts the test). Bounded in time; prints how many cases ran. Longer
//! runs: the `cargo fuzz` targets in `fuzz/`.
//!
//! Input handling does not depend on the backend: the wgpu pass of the parity
//! suite skips this file.
#![cfg(not(feature = "wgpu"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use janus_checkpoint::Checkpoint;
use janus_tests::testdata_dir;

/// The largest single allocation any case may make.
const CAP: usize = 1 << 30;

struct Capped;

// SAFETY: forwards to the system allocator; only refuses oversized requests.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout as asked for.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: same layout as asked for.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Capped = Capped;

/// xorshift64*: reproducible cases from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `base`, chosen by `rng`.
fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    match rng.below(4) {
        0 => b.truncate(rng.below(b.len())),
        1 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let len = 1 + rng.below(64.min(b.len()));
            let from = rng.below(b.len() - len);
            let to = rng.below(b.len() - len);
            let chunk = b[from..from + len].to_vec();
            b[to..to + len].copy_from_slice(&chunk);
        }
        _ => {
            // Grow a length field: a large number at a random place (often
            // the safetensors header length, near the start).
            let at = if rng.below(2) == 0 {
                0
            } else {
                rng.below(b.len().saturating_sub(8))
            };
            let v: u64 = [u64::MAX, 1 << 62, (1 << 32) + 1, u32::MAX as u64, 1 << 40][rng.below(5)];
            let n = (b.len() - at).min(if rng.below(2) == 0 { 8 } else { 4 });
            b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
    }
    b
}

/// Runs `cases` mutations of `base` through `check` within `budget`; returns
/// how many ran. A panic fails the test naming the case.
fn run(
    name: &str,
    base: &[u8],
    seed: u64,
    cases: usize,
    budget: Duration,
    mut check: impl FnMut(&[u8]),
) -> usize {
    let start = Instant::now();
    let mut rng = Rng(seed);
    let mut ran = 0;
    while ran < cases && start.elapsed() < budget {
        let bytes = mutate(base, &mut rng);
        let result = catch_unwind(AssertUnwindSafe(|| check(&bytes)));
        assert!(result.is_ok(), "{name}: case {ran} (seed {seed}) panicked");
        ran += 1;
    }
    ran
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("janus-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens the file and reads every tensor: errors are fine, panics are not.
fn open_and_read(path: &Path) {
    if let Ok(ckpt) = Checkpoint::open(path) {
        let keys: Vec<String> = ckpt.keys().map(str::to_string).collect();
        for k in keys {
            let _ = ckpt.read_f32(&k);
        }
    }
}

#[test]
fn mutated_inputs_give_errors_or_valid_results() {
    let dir = testdata_dir();
    // Each family of inputs gets at most this long (the cases usually take far less).
    let budget = Duration::from_secs(15);
    let mut total = 0;

    for (file, seed) in [("model.safetensors", 11), ("pytorch_model.bin", 12)] {
        let base = std::fs::read(dir.join(file)).unwrap();
        let tmp = scratch(file);
        let path = tmp.join(file);
        total += run(file, &base, seed, 100, budget, |bytes| {
            std::fs::write(&path, bytes).unwrap();
            open_and_read(&path);
        });
    }

    // A sharded index over the safetensors file.
    let st = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = st
        .keys()
        .map(|k| (k.to_string(), "model-00001-of-00001.safetensors".into()))
        .collect();
    let index = serde_json::json!({ "weight_map": map }).to_string();
    let tmp = scratch("index");
    std::fs::copy(
        dir.join("model.safetensors"),
        tmp.join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    let index_path = tmp.join("model.safetensors.index.json");
    total += run("index", index.as_bytes(), 13, 100, budget, |bytes| {
        std::fs::write(&index_path, bytes).unwrap();
        let _ = Checkpoint::open(&index_path);
    });

    let config = std::fs::read(dir.join("config.json")).unwrap();
    total += run("config.json", &config, 14, 300, budget, |bytes| {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let _ = janus_pipeline::JanusConfig::from_json_str(text, "config.json");
        }
    });

    let mut images: Vec<_> = std::fs::read_dir(dir.join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    images.sort();
    assert!(!images.is_empty());
    let processor = janus_pipeline::ImageProcessor::default();
    for (i, image) in images.iter().enumerate() {
        let base = std::fs::read(image).unwrap();
        let name = image.display().to_string();
        total += run(&name, &base, 20 + i as u64, 60, budget, |bytes| {
            if let Ok(img) = janus_pipeline::decode_image(bytes, "mutated") {
                assert!(img.width > 0 && img.height > 0);
                assert_eq!(img.pixels.len(), img.width * img.height * 3);
                let _ = processor.preprocess(&img);
            }
        });
    }
    println!("{total} mutated inputs checked");
    assert!(total >= 300, "only {total} cases ran in the time budget");
}
