//! Loading the model for a command: resolve `--model`, report progress and the
//! time taken, then switch the allocator to its run-time policy.

use std::time::Instant;

use burn::prelude::Backend;
use janus_core::Precision;
use janus_pipeline::chat::Template;
use janus_pipeline::{Janus, Modules};

use crate::{alloc, progress};

/// Registers the hub cache entry of `model` (when it is a hub id) for clean-up
/// on a signal: a first use converts into it.
pub fn watch_hub_cache(model: &str) {
    #[cfg(feature = "hub")]
    if janus_pipeline::hub::is_repo_id(model) && !std::path::Path::new(model).is_dir() {
        crate::signals::watch(&janus_pipeline::hub::cache_entry_dir(model));
    }
    #[cfg(not(feature = "hub"))]
    let _ = model;
}

/// Loads `modules` of `model` (a directory or hub id) and says so on stderr;
/// returns the model and the seconds it took.
pub fn janus<B: Backend>(
    model: &str,
    template: Option<Template>,
    device: &B::Device,
    precision: Precision,
    modules: Modules,
) -> anyhow::Result<(Janus<B>, f64)> {
    watch_hub_cache(model);
    let t0 = Instant::now();
    let janus = Janus::<B>::load_modules(
        model,
        device,
        precision,
        template,
        modules,
        progress::on_load(),
    )?;
    alloc::retain_freed_memory();
    let secs = t0.elapsed().as_secs_f64();
    let running = janus.model().precision();
    say!(
        "loaded {} in {secs:.1} s ({running})",
        janus.dir().display(),
    );
    if let (Some(asked), None) = (precision.quant, running.quant) {
        say!(
            "note: no matrix of this model can take {asked} (its blocks are rows of 32 values; \
             these widths are not multiples of 32): it runs in {running}"
        );
    }
    Ok((janus, secs))
}
