//! The parity suites that also run on wgpu (`--features wgpu`), as modules of
//! one test binary: each test binary instantiates the whole model for the wgpu
//! backend, minutes of compile time apiece on CI's two cores, so the wgpu pass
//! builds this one target instead of four. Empty without the feature (the CPU
//! run builds the suites as their own targets). `cargo xtask test` runs it as
//! `cargo test --workspace --features janus-tests/wgpu --test gpu_parity`.
#![cfg(feature = "wgpu")]

#[path = "llm_parity.rs"]
mod llm_parity;
#[path = "module_parity.rs"]
mod module_parity;
#[path = "pipeline_parity.rs"]
mod pipeline_parity;
#[path = "quantized.rs"]
mod quantized;
