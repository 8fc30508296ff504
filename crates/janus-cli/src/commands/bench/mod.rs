//! `janus bench` (also `cargo xtask bench`): the same measurements as the
//! PyTorch baseline, on any backend, at real sizes with seeded random weights
//! (or a real checkpoint).

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{DType, Distribution, TensorData};
use janus_core::Precision;
use janus_gen_tokenizer::VqModel;
use janus_pipeline::JanusConfig;
use janus_pipeline::{ImageGenSession, JanusModel, Modules};
use serde_json::json;

use crate::alloc;
use crate::args::{BackendArgs, BackendKind, Task};
use crate::backend::{Job, dispatch};

mod bandwidth;
mod serve;

/// Model sizes to benchmark.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Variant {
    #[value(name = "janus-1.3b")]
    Janus13b,
    #[value(name = "janus-pro-1b")]
    JanusPro1b,
    #[value(name = "janus-pro-7b")]
    JanusPro7b,
}

impl Variant {
    fn config(self) -> JanusConfig {
        match self {
            Self::Janus13b => JanusConfig::janus_1_3b(),
            Self::JanusPro1b => JanusConfig::janus_pro_1b(),
            Self::JanusPro7b => JanusConfig::janus_pro_7b(),
        }
    }
}

/// `--clients` without the flag.
const DEFAULT_CLIENTS: [usize; 3] = [1, 4, 8];
/// `--chat-tokens` without the flag.
const DEFAULT_CHAT_TOKENS: usize = 16;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    backend: BackendArgs,
    /// Model sizes (with --random-weights).
    #[arg(long, value_enum, default_value_t = Variant::JanusPro1b, conflicts_with = "model")]
    variant: Variant,
    /// A real checkpoint directory (instead of random weights), e.g. a tiny test checkpoint.
    #[arg(long, conflicts_with = "random_weights")]
    model: Option<PathBuf>,
    /// Build the architecture with seeded random weights (no download needed).
    #[arg(long)]
    random_weights: bool,
    /// Timed repeats per measurement (after one warm-up run).
    #[arg(long, default_value_t = 3, conflicts_with = "serve")]
    repeats: usize,
    /// Prompt length of the prefill measurement.
    #[arg(long, default_value_t = 600, conflicts_with = "serve")]
    prefill_tokens: usize,
    /// Greedy tokens of the decode measurement.
    #[arg(long, default_value_t = 32, conflicts_with = "serve")]
    decode_tokens: usize,
    /// Image-generation steps timed per run (figures are per step; default 8,
    /// or the codes of one image if fewer).
    #[arg(long, conflicts_with = "serve")]
    gen_steps: Option<usize>,
    /// Only these measurements (comma separated: encode,prefill,decode,gen1,gen4,vq;
    /// error: a quantized dtype's logits error against f32, which builds an f32
    /// copy of the model first).
    #[arg(long, value_delimiter = ',', conflicts_with = "serve")]
    only: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench.json")]
    out: PathBuf,
    /// Benchmark `janus serve` instead: throughput and latency of concurrent
    /// image and chat clients against the same requests one at a time.
    #[arg(long)]
    serve: bool,
    /// With --serve and --random-weights: a directory with the tokenizer files
    /// (e.g. the tiny test checkpoint).
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    tokenizer: Option<PathBuf>,
    /// With --serve and --random-weights: generated image side (a smaller side
    /// means fewer steps per image at the same LLM cost per step; 384 is the
    /// real one).
    #[arg(long, conflicts_with = "model")]
    image_size: Option<usize>,
    /// With --serve: concurrent client counts [default: 1,4,8].
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// With --serve: tokens per chat request [default: 16].
    #[arg(long)]
    chat_tokens: Option<usize>,
}

impl Args {
    /// Whether measurement `m` runs (every one without `--only`).
    fn wants(&self, m: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == m)
    }
}

/// Resident and peak memory of this process in bytes (Linux).
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts a new peak-memory window: returns freed memory to the system and
/// resets `VmHWM` to the current resident size (Linux; a no-op elsewhere).
fn reset_peak() {
    alloc::release_freed_memory();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Stat {
    name: &'static str,
    unit: &'static str,
    median: f64,
    min: f64,
    /// Work items per run (tokens, steps) to derive rates.
    per_run: f64,
    /// Peak resident memory during this measurement (bytes).
    peak_rss: u64,
}

/// Runs `f` once to warm up, then `repeats` times; `f` returns the seconds of the
/// part it times.
fn measure(
    name: &'static str,
    unit: &'static str,
    per_run: f64,
    repeats: usize,
    mut f: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<Stat> {
    reset_peak();
    say!("  {name}: warm-up");
    f()?;
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats {
        times.push(f()?);
        say!("  {name}: run {} {:.3} s", i + 1, times[i]);
    }
    times.sort_by(f64::total_cmp);
    Ok(Stat {
        name,
        unit,
        median: times[times.len() / 2] / per_run,
        min: times[0] / per_run,
        per_run,
        peak_rss: memory().1,
    })
}

struct Bench {
    args: Args,
    config: JanusConfig,
}

impl Job for Bench {
    type Output = serde_json::Value;

    fn model(&self) -> Option<&str> {
        self.args.model.as_deref().and_then(|m| m.to_str())
    }

    fn run<B: Backend>(
        self,
        device: B::Device,
        precision: Precision,
    ) -> anyhow::Result<serde_json::Value> {
        let a = &self.args;
        let c = &self.config;
        let dtype = precision.dtype;
        let want = |m: &str| a.wants(m);
        let sync = || B::sync(&device).map_err(|e| anyhow::anyhow!("{e:?}"));
        // Only the modules the measurements use, as the commands load them
        // (`--only gen1,gen4` holds what `janus generate` holds).
        let understanding = ["encode", "prefill", "decode", "error"]
            .iter()
            .any(|m| want(m));
        let generation = ["gen1", "gen4", "vq"].iter().any(|m| want(m));
        let modules = match (understanding, generation) {
            (true, false) => Modules::Understanding,
            (false, true) => Modules::Generation,
            _ => Modules::All,
        };
        // Random weights are built in memory: refused when even their lower
        // bound does not fit (a 7B bench aborted out of memory).
        if a.model.is_none() {
            let need = bandwidth::model_bytes_at_least(
                c,
                precision,
                modules != Modules::Generation,
                modules != Modules::Understanding,
            );
            if let Some((have, source)) = janus_pipeline::memory::available_memory::<B>(None, 0)
                && need > have
            {
                anyhow::bail!(
                    "the {variant} model in {precision} takes at least {}, over the {} \
                     available ({source}): give a smaller --variant, a smaller --dtype \
                     (q4_0 takes least) or fewer measurements with --only",
                    janus_pipeline::memory::gb(need),
                    janus_pipeline::memory::gb(have),
                    variant = clap::ValueEnum::to_possible_value(&a.variant)
                        .map_or_else(String::new, |v| v.get_name().to_string()),
                );
            }
        }
        let load = |p: Precision| match &a.model {
            Some(dir) => JanusModel::<B>::load_dir_modules(dir, &device, p, modules),
            None => JanusModel::<B>::random_modules(c, &device, p, 1234, modules),
        };
        // A quantized model's error: one decode step's logits against the same
        // weights in f32 (built first and dropped, so the two are never held
        // together).
        let asked_error = a.only.iter().any(|m| m == "error");
        // A checkpoint that stores quantized matrices has no f32 ones to
        // compare with.
        let stored = a
            .model
            .as_deref()
            .and_then(janus_pipeline::layout::stored_quant);
        let reference = match precision.quant {
            Some(_) if want("error") && stored.is_some() => {
                let why = format!(
                    "the checkpoint stores {} matrices, so there are no f32 weights to measure \
                     the error against: give the original checkpoint and --dtype",
                    stored.map_or("", |f| f.name())
                );
                if asked_error {
                    anyhow::bail!("--only error: {why}");
                }
                say!("skipping the quantization error: {why}");
                None
            }
            Some(_) if want("error") && !f32_reference_fits::<B>(c, asked_error)? => None,
            Some(_) if want("error") => {
                say!("building the f32 reference for the quantization error");
                // The probe runs the LLM and lm_head only: no generation modules.
                let f32_model = match &a.model {
                    Some(dir) => JanusModel::<B>::load_dir_modules(
                        dir,
                        &device,
                        DType::F32,
                        Modules::Understanding,
                    ),
                    None => JanusModel::<B>::random_modules(
                        c,
                        &device,
                        DType::F32,
                        1234,
                        Modules::Understanding,
                    ),
                }?;
                let logits = error_probe_logits(&f32_model, c);
                drop(f32_model);
                reset_peak();
                Some(logits)
            }
            _ => None,
        };
        let t0 = Instant::now();
        let model = load(precision)?;
        sync()?;
        let load_s = t0.elapsed().as_secs_f64();
        alloc::retain_freed_memory();
        let (rss_load, peak_load) = memory();
        say!(
            "built model ({modules:?} modules) in {load_s:.1} s, RSS {:.2} GB",
            rss_load as f64 / 1e9
        );
        let quant_error = reference.map(|want| {
            let got = error_probe_logits(&model, c);
            let (mut dd, mut ww, mut dw, mut gg) = (0f64, 0f64, 0f64, 0f64);
            for (g, w) in got.iter().zip(&want) {
                let (g, w) = (f64::from(*g), f64::from(*w));
                dd += (g - w).powi(2);
                ww += w * w;
                gg += g * g;
                dw += g * w;
            }
            let rel_rms = (dd / ww.max(f64::MIN_POSITIVE)).sqrt();
            let cosine = dw / (gg * ww).sqrt().max(f64::MIN_POSITIVE);
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, x)| if *x > b.1 { (i, *x) } else { b })
                    .0
            };
            say!(
                "quantization error (one decode step's logits vs f32): relative RMS {rel_rms:.4}, cosine {cosine:.5}"
            );
            json!({
                "relative_rms": rel_rms,
                "cosine": cosine,
                "same_argmax": argmax(&got) == argmax(&want),
            })
        });
        let mut stats = Vec::new();
        let s = c.vision.image_size;
        let vocab = c.language.vocab_size as i64;

        if want("encode") {
            let pixels = Tensor::<B, 4>::random(
                [1, 3, s, s],
                Distribution::Uniform(-1.0, 1.0),
                (&device, dtype),
            );
            stats.push(measure(
                "siglip_encode_aligner",
                "s/image",
                1.0,
                a.repeats,
                || {
                    let t = Instant::now();
                    let e = model.image_embeds(pixels.clone())?;
                    let _ = e.narrow(1, 0, 1).into_data();
                    Ok(t.elapsed().as_secs_f64())
                },
            )?);
        }
        let ids = |n: usize| {
            let v: Vec<i64> = (0..n as i64).map(|i| (i * 7919 + 13) % vocab).collect();
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, n]), &device)
        };
        let t = a.prefill_tokens;
        if want("prefill") {
            stats.push(measure(
                "llm_prefill",
                "s/token",
                t as f64,
                a.repeats,
                || {
                    let start = Instant::now();
                    let mut cache = model.llm.new_cache(1, t);
                    let h = model.llm.forward(model.llm.embed(ids(t)), None, &mut cache);
                    let _ = model.llm.logits(h.narrow(1, t - 1, 1)).into_data();
                    Ok(start.elapsed().as_secs_f64())
                },
            )?);
        }
        if want("decode") {
            let n = a.decode_tokens;
            let mut cache = model.llm.new_cache(1, t + (a.repeats + 1) * n + 1);
            let h = model.llm.forward(model.llm.embed(ids(t)), None, &mut cache);
            let mut last = model.llm.logits(h.narrow(1, t - 1, 1));
            stats.push(measure(
                "llm_decode_greedy",
                "s/token",
                n as f64,
                a.repeats,
                || {
                    let start = Instant::now();
                    for _ in 0..n {
                        let next = last.clone().argmax(2).reshape([1, 1]);
                        let h = model.llm.forward(model.llm.embed(next), None, &mut cache);
                        last = model.llm.logits(h);
                        let _ = last.clone().narrow(2, 0, 1).into_data();
                    }
                    Ok(start.elapsed().as_secs_f64())
                },
            )?);
        }
        let prompt: Vec<u32> = (0..30u32).map(|i| (i * 37 + 5) % vocab as u32).collect();
        for (name, key, parallel) in [
            ("image_gen_step_parallel_1", "gen1", 1usize),
            ("image_gen_step_parallel_4", "gen4", 4),
        ] {
            if !want(key) {
                continue;
            }
            let steps = a.gen_steps.unwrap_or(8).min(c.vq.grid_side().pow(2));
            let num_codes = c.gen_embed.num_codes;
            stats.push(measure(name, "s/step", steps as f64, a.repeats, || {
                let mut session = ImageGenSession::new(&model, &prompt, 0, parallel, 5.0)?;
                session.logits(); // prefill, not timed below
                let t = Instant::now();
                for step in 0..steps {
                    let codes: Vec<u32> = (0..parallel)
                        .map(|p| ((step * 31 + p * 7) % 1000 % num_codes) as u32)
                        .collect();
                    session.feed(&codes)?;
                    session.logits();
                }
                Ok(t.elapsed().as_secs_f64())
            })?);
        }
        if want("vq") {
            let g = c.vq.grid_side();
            let codes = vec![
                (0..(g * g) as u32)
                    .map(|i| (i * 37 + 11) % c.vq.codebook_size as u32)
                    .collect::<Vec<_>>(),
            ];
            stats.push(measure("vq_decode", "s/image", 1.0, a.repeats, || {
                let t = Instant::now();
                let img = model.vq()?.decode(&codes, model.vq()?.grid())?;
                let _ = VqModel::<B>::to_rgb8(img);
                Ok(t.elapsed().as_secs_f64())
            })?);
        }
        let (rss, peak) = memory();
        let peak = stats
            .iter()
            .map(|s| s.peak_rss)
            .fold(peak.max(peak_load), u64::max);
        Ok(json!({
            "quant_error": quant_error,
            "load_s": load_s,
            "rss_after_load_bytes": rss_load,
            "rss_end_bytes": rss,
            "peak_rss_bytes": peak,
            "stats": stats.iter().map(|s| json!({
                "name": s.name, "unit": s.unit, "median": s.median, "min": s.min, "per_run": s.per_run,
                "peak_rss_bytes": s.peak_rss,
            })).collect::<Vec<_>>(),
        }))
    }
}

/// Whether the f32 copy of the LLM that the quantization error is measured
/// against fits the memory available (a 7B model's is 28 GB: a q4_0 bench
/// on an 8 GB machine must not be killed building it). When it does not:
/// an error if `--only error` asked for it, else the measurement is skipped.
fn f32_reference_fits<B: Backend>(c: &JanusConfig, asked: bool) -> anyhow::Result<bool> {
    let need = bandwidth::f32_reference_bytes(c);
    let Some((have, source)) = janus_pipeline::memory::available_memory::<B>(None, 0) else {
        return Ok(true);
    };
    if need <= have {
        return Ok(true);
    }
    let why = format!(
        "the quantization error needs an f32 copy of the LLM, at least {}, over the {} \
         available ({source})",
        janus_pipeline::memory::gb(need),
        janus_pipeline::memory::gb(have)
    );
    if asked {
        anyhow::bail!("--only error: {why}");
    }
    say!("skipping the quantization error: {why}");
    Ok(false)
}

/// The logits of one greedy decode step after a 16-token prompt (the
/// quantization-error probe).
fn error_probe_logits<B: Backend>(model: &JanusModel<B>, c: &JanusConfig) -> Vec<f32> {
    let vocab = c.language.vocab_size as i64;
    let device = model.device();
    let ids = |v: Vec<i64>| {
        let n = v.len();
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, n]), device)
    };
    let prompt: Vec<i64> = (0..16i64).map(|i| (i * 104_729 + 17) % vocab).collect();
    let mut cache = model.llm.new_cache(1, 18);
    model
        .llm
        .forward(model.llm.embed(ids(prompt)), None, &mut cache);
    let h = model
        .llm
        .forward(model.llm.embed(ids(vec![(4099 % vocab)])), None, &mut cache);
    janus_core::to_f32_vec(model.llm.logits(h))
}

/// The measurement names `--only` takes.
const MEASUREMENTS: [&str; 7] = ["encode", "prefill", "decode", "gen1", "gen4", "vq", "error"];

/// Refuses unknown `--only` names, and prompt and decode lengths the model's
/// context cannot hold, before anything is built.
fn check_lengths(args: &Args, config: &JanusConfig) -> anyhow::Result<()> {
    if let Some(bad) = args
        .only
        .iter()
        .find(|m| !MEASUREMENTS.contains(&m.as_str()))
    {
        anyhow::bail!(
            "--only: unknown measurement `{bad}` (expected some of {})",
            MEASUREMENTS.join(",")
        );
    }
    let want = |m: &str| args.wants(m);
    if args.repeats == 0 {
        anyhow::bail!("--repeats must be at least 1");
    }
    let context = config.language.max_position_embeddings;
    let (t, n) = (args.prefill_tokens, args.decode_tokens);
    if want("decode") && n == 0 {
        anyhow::bail!("--decode-tokens must be at least 1");
    }
    if (want("prefill") || want("decode")) && t == 0 {
        anyhow::bail!("--prefill-tokens must be at least 1");
    }
    if want("prefill") && t > context {
        anyhow::bail!(
            "--prefill-tokens {t} is over the model's context of {context} positions \
             (language_config.max_position_embeddings)"
        );
    }
    // The decode measurement keeps one cache for the warm-up and every repeat.
    let decode_positions = (args.repeats.saturating_add(1))
        .saturating_mul(n)
        .saturating_add(t)
        .saturating_add(1);
    if want("decode") && decode_positions > context {
        anyhow::bail!(
            "--prefill-tokens {t} and --decode-tokens {n} over {} runs need {decode_positions} \
             positions, over the model's context of {context} \
             (language_config.max_position_embeddings)",
            args.repeats + 1
        );
    }
    let codes = config.vq.grid_side().pow(2);
    if let Some(steps) = args.gen_steps
        && (want("gen1") || want("gen4"))
        && !(1..=codes).contains(&steps)
    {
        anyhow::bail!("--gen-steps {steps} must be between 1 and the {codes} codes of one image");
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.model.is_none() && !args.random_weights {
        anyhow::bail!("give --model DIR or --random-weights");
    }
    // Before the measurements, which can take hours.
    crate::output::check_can_write(&args.out)?;
    let mut config = match &args.model {
        Some(dir) => JanusConfig::from_file(dir.join("config.json"))?,
        None => args.variant.config(),
    };
    // (clap's `requires` lets these through whenever a flag that conflicts
    // with --serve is given, so they are checked here.)
    let serve_only = [
        ("--tokenizer", args.tokenizer.is_some()),
        ("--image-size", args.image_size.is_some()),
        ("--clients", args.clients.is_some()),
        ("--chat-tokens", args.chat_tokens.is_some()),
    ];
    if let Some((flag, _)) = serve_only.iter().find(|(_, given)| *given && !args.serve) {
        anyhow::bail!(
            "{flag} is for --serve (benchmarking the server): give --serve or leave it out"
        );
    }
    if args.serve {
        let clients = args.clients.as_deref().unwrap_or(&DEFAULT_CLIENTS);
        if clients.is_empty() || clients.contains(&0) {
            anyhow::bail!("--clients: give client counts of at least 1 (e.g. 1,4,8)");
        }
        if let Some(s) = args.image_size {
            // Codes form a grid of one per 16 x 16 pixels.
            if !(16..=4096).contains(&s) || s % 16 != 0 {
                anyhow::bail!("--image-size {s}: give a multiple of 16 from 16 to 4096");
            }
            config.vq.image_size = s;
        }
        return serve::run(args, config);
    }
    check_lengths(&args, &config)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let backend = args.backend;
    let precision = backend.precision(
        Task::Default,
        args.model.as_deref().and_then(|m| m.to_str()),
    )?;
    if args.only.iter().any(|m| m == "error") && precision.quant.is_none() {
        anyhow::bail!(
            "--only error measures a quantized dtype's logits against f32: give --dtype \
             q8_0 or q4_0 (with {precision} there is nothing to compare)"
        );
    }
    let variant = args.variant;
    let out = args.out.clone();
    let cpu = matches!(backend.backend, BackendKind::Cpu);
    let simd = janus_core::simd_level();
    let what = match &args.model {
        Some(dir) => dir.display().to_string(),
        None => format!("{variant:?} (random weights)"),
    };
    say!(
        "bench: {what}, {:?} {precision}, {threads} threads{}",
        backend.backend,
        if cpu {
            format!(
                ", SIMD {simd} (best here {})",
                janus_core::SimdLevel::detect()
            )
        } else {
            String::new()
        }
    );
    // The wall every decode and generation figure is set against (CPU only:
    // the weights are in host memory there).
    let read_bw = cpu.then(|| {
        let bw = janus_core::probe_read_bandwidth(threads);
        // The probe's buffer is freed: keep it out of the peak memory figures.
        reset_peak();
        say!(
            "memory read bandwidth (probe, {threads} threads): {:.1} GB/s",
            bw / 1e9
        );
        bw
    });
    let (decode_bytes, step_bytes) = (
        bandwidth::decode_bytes(&config, precision),
        bandwidth::gen_step_bytes(&config, precision),
    );
    // Codes per image of this model (576 at the real sizes).
    let image_steps = config.vq.grid_side().pow(2);
    let model_dir = args.model.clone();
    let result = dispatch(backend, Task::Default, Bench { args, config })?;
    if cpu {
        out!("SIMD level: {simd}");
    }
    if let Some(e) = result["quant_error"].as_object() {
        out!(
            "{} error, one decode step's logits vs f32: relative RMS {:.4}, cosine {:.5}, same argmax: {}",
            precision.quant.map_or("", |q| q.name()),
            e["relative_rms"].as_f64().unwrap_or(f64::NAN),
            e["cosine"].as_f64().unwrap_or(f64::NAN),
            e["same_argmax"].as_bool().unwrap_or(false)
        );
    }
    if let Some(bw) = read_bw {
        out!("memory read bandwidth (probe): {:.1} GB/s", bw / 1e9);
    }
    out!("| measurement | median | min | unit | peak RSS | weights read |");
    out!("|---|---|---|---|---|---|");
    out!(
        "| build/load | {:.2} | | s | | |",
        result["load_s"].as_f64().unwrap_or(0.0)
    );
    out!(
        "| RSS after load / peak | {:.2} / {:.2} | | GB | | |",
        result["rss_after_load_bytes"].as_f64().unwrap_or(0.0) / 1e9,
        result["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e9
    );
    let mut stats_out = Vec::new();
    for s in result["stats"].as_array().into_iter().flatten() {
        // Weights read per second by the decode and generation measurements.
        let bytes = match s["name"].as_str().unwrap_or("") {
            "llm_decode_greedy" => Some(decode_bytes),
            n if n.starts_with("image_gen_step") => Some(step_bytes),
            _ => None,
        };
        let (median, min) = (
            s["median"].as_f64().unwrap_or(0.0),
            s["min"].as_f64().unwrap_or(0.0),
        );
        let rate = bytes.filter(|_| median > 0.0).map(|b| b / median);
        let mut s = s.clone();
        if let Some(r) = rate {
            s["weight_bytes_per_s"] = json!(r);
        }
        let wall = match (rate, read_bw) {
            (Some(r), Some(bw)) => {
                format!(" {:.1} GB/s ({:.0} % of probe)", r / 1e9, 100.0 * r / bw)
            }
            (Some(r), None) => format!(" {:.1} GB/s", r / 1e9),
            _ => String::new(),
        };
        let unit = s["unit"].as_str().unwrap_or("");
        let extra = match unit {
            "s/token" => format!(" ({:.2} tok/s)", 1.0 / median),
            "s/step" => format!(
                " (≈ {:.0} s per {image_steps}-step image)",
                median * image_steps as f64
            ),
            _ => String::new(),
        };
        out!(
            "| {} | {median:.4}{extra} | {min:.4} | {unit} | {:.2} GB |{wall} |",
            s["name"].as_str().unwrap_or(""),
            s["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e9
        );
        stats_out.push(s);
    }
    let mut result = result;
    result["stats"] = json!(stats_out);
    let report = json!({
        // The variant's sizes with random weights, or the checkpoint's own.
        "variant": model_dir.is_none().then(|| format!("{variant:?}")),
        "model": model_dir.as_ref().map(|d| d.display().to_string()),
        "backend": format!("{:?}", backend.backend),
        "dtype": precision.to_string(),
        "quant": precision.quant.map(|q| q.name()),
        "threads": threads,
        "simd": cpu.then(|| simd.name()),
        "read_bandwidth_bytes_per_s": read_bw,
        "decode_weight_bytes": decode_bytes,
        "gen_step_weight_bytes": step_bytes,
        "results": result,
    });
    crate::output::write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    say!("wrote {}", out.display());
    Ok(())
}
