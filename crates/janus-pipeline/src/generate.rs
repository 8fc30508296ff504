//! Image generation: the LLM with classifier-free guidance over interleaved
//! conditional / unconditional rows, one code per image per step, then VQ decode.

use burn::prelude::*;
use burn::tensor::TensorData;
use janus_heads::{GenEmbed, GenHead, MlpProjector};
use janus_llm::KvCache;

use crate::model::JanusModel;
use crate::sampling::{Sampler, SamplingConfig};
use crate::understand::{id_tensor, to_f32};
use crate::{PipelineError, Result};

/// Settings of [`JanusModel::generate_images`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageGenConfig {
    /// Images generated together.
    pub parallel: usize,
    /// Guidance weight `w` in `uncond + w (cond - uncond)`.
    pub cfg_weight: f32,
    /// Sampling temperature; `0` picks the argmax.
    pub temperature: f32,
    /// RNG seed.
    pub seed: u64,
}

/// The most images one request may ask for (more than fit in memory at once
/// are generated in chunks; this bounds the time one request takes).
pub const MAX_PARALLEL: usize = 1024;

/// The largest classifier-free guidance weight accepted (the reference uses
/// 5; far larger weights only amplify noise, and near `f32::MAX` the guided
/// logits overflow to NaN).
pub const MAX_CFG_WEIGHT: f32 = 100.0;

impl Default for ImageGenConfig {
    fn default() -> Self {
        Self {
            parallel: 1,
            cfg_weight: 5.0,
            temperature: 1.0,
            seed: 42,
        }
    }
}

impl ImageGenConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if self.parallel == 0 {
            return Err(PipelineError::Invalid("parallel must be at least 1".into()));
        }
        if self.parallel > MAX_PARALLEL {
            return Err(PipelineError::Invalid(format!(
                "{} images requested: at most {MAX_PARALLEL} per request",
                self.parallel
            )));
        }
        if !(0.0..=MAX_CFG_WEIGHT).contains(&self.cfg_weight) {
            return Err(PipelineError::Invalid(format!(
                "cfg weight must be in 0..={MAX_CFG_WEIGHT}, got {}",
                self.cfg_weight
            )));
        }
        crate::sampling::check_temperature(self.temperature)
    }
}

/// Per-step logits of one image: conditional, unconditional and guided.
#[derive(Debug, Clone, PartialEq)]
pub struct CfgLogits {
    /// Conditional row.
    pub cond: Vec<f32>,
    /// Unconditional row.
    pub uncond: Vec<f32>,
    /// `uncond + w (cond - uncond)`.
    pub guided: Vec<f32>,
}

/// One prompt of a batched image generation ([`ImageGenSession::batch`]).
#[derive(Debug, Clone, Copy)]
pub struct ImagePrompt<'a> {
    /// Tokenised prompt, BOS first, BOI last.
    pub ids: &'a [u32],
    /// Images of this prompt.
    pub images: usize,
    /// Guidance weight of its images.
    pub cfg_weight: f32,
}

/// A running generation: the KV cache of two rows per image (conditional,
/// unconditional) and the next input. The images of one session may come from
/// several prompts of different lengths (left-padded, masked).
pub struct ImageGenSession<'m, B: Backend> {
    model: &'m JanusModel<B>,
    gen_head: &'m GenHead<B>,
    gen_embed: &'m GenEmbed<B>,
    gen_aligner: &'m MlpProjector<B>,
    cache: KvCache<B>,
    next: Tensor<B, 3>,
    /// Padding flags of the prompt rows, used by the first forward.
    padding: Option<Vec<bool>>,
    cfg: Vec<f32>,
}

impl<'m, B: Backend> ImageGenSession<'m, B> {
    /// Starts from tokenised prompt ids (BOS first, BOI last). Rows `2k` hold the
    /// prompt, rows `2k+1` the unconditional copy (all but the first and last ids
    /// replaced by `pad`).
    pub fn new(
        model: &'m JanusModel<B>,
        prompt_ids: &[u32],
        pad: u32,
        parallel: usize,
        cfg_weight: f32,
    ) -> Result<Self> {
        let prompt = ImagePrompt {
            ids: prompt_ids,
            images: parallel,
            cfg_weight,
        };
        Self::batch(model, &[prompt], pad)
    }

    /// Starts the images of several prompts in one batch: image `i` of the
    /// session is the `i`-th in prompt order. Shorter prompts are left-padded
    /// (masked, with the positions of an unpadded run).
    pub fn batch(model: &'m JanusModel<B>, prompts: &[ImagePrompt<'_>], pad: u32) -> Result<Self> {
        if prompts.iter().map(|p| p.images).sum::<usize>() == 0 {
            return Err(PipelineError::Invalid("no image to generate".into()));
        }
        if prompts.iter().any(|p| p.ids.len() < 2) {
            return Err(PipelineError::Prompt(
                "the generation prompt needs at least BOS and BOI".into(),
            ));
        }
        let width = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        let mut rows = Vec::new();
        let mut flags = Vec::new();
        let mut cfg = Vec::new();
        for p in prompts {
            let l = p.ids.len();
            let mut uncond = p.ids.to_vec();
            uncond[1..l - 1].fill(pad);
            for _ in 0..p.images {
                cfg.push(p.cfg_weight);
                for ids in [p.ids, &uncond[..]] {
                    let mut row = vec![pad; width - l];
                    row.extend_from_slice(ids);
                    rows.push(row);
                    flags.extend((0..width).map(|i| i >= width - l));
                }
            }
        }
        let padding = flags.iter().any(|f| !f).then_some(flags);
        let device = model.device().clone();
        let steps = model.config.vq.grid_side().pow(2);
        Ok(Self {
            model,
            gen_head: model.gen_head()?,
            gen_embed: model.gen_embed()?,
            gen_aligner: model.gen_aligner()?,
            cache: model.llm.new_cache(rows.len(), width + steps),
            next: model.llm.embed(id_tensor(&rows, &device)),
            padding,
            cfg,
        })
    }

    /// Images in the session.
    pub fn images(&self) -> usize {
        self.cfg.len()
    }

    /// Runs the LLM on the pending input and returns each image's logits.
    pub fn logits(&mut self) -> Vec<CfgLogits> {
        let padding = self.padding.take();
        let hidden = self
            .model
            .llm
            .forward(self.next.clone(), padding.as_deref(), &mut self.cache);
        let [rows, t, h] = hidden.dims();
        let last = hidden.narrow(1, t - 1, 1).reshape([rows, h]);
        let logits = to_f32(self.gen_head.forward(last));
        let k = logits.len() / rows;
        self.cfg
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let cond = logits[2 * i * k..(2 * i + 1) * k].to_vec();
                let uncond = logits[(2 * i + 1) * k..(2 * i + 2) * k].to_vec();
                let guided = cond
                    .iter()
                    .zip(&uncond)
                    .map(|(c, u)| u + w * (c - u))
                    .collect();
                CfgLogits {
                    cond,
                    uncond,
                    guided,
                }
            })
            .collect()
    }

    /// Feeds one code per image (to both of its rows) as the next input:
    /// `gen_aligner(gen_embed(code))`.
    pub fn feed(&mut self, codes: &[u32]) -> Result<()> {
        let k = self.model.config.gen_embed.num_codes;
        if codes.len() != self.images() || codes.iter().any(|c| *c as usize >= k) {
            return Err(PipelineError::Invalid(format!(
                "expected {} codes below {k}, got {codes:?}",
                self.images()
            )));
        }
        let rows: Vec<Vec<u32>> = codes.iter().flat_map(|c| [vec![*c], vec![*c]]).collect();
        let device = self.next.device();
        let e = self.gen_embed.forward(id_tensor(&rows, &device));
        self.next = self.gen_aligner.forward(e);
        Ok(())
    }

    /// Adds the images of `other` (after its first [`ImageGenSession::logits`]
    /// and [`ImageGenSession::feed`], like this one) behind this session's:
    /// requests join a running batch at a step boundary. Each image goes on
    /// exactly as it would alone.
    pub fn merge(&mut self, other: ImageGenSession<'m, B>) -> Result<()> {
        if self.padding.is_some()
            || other.padding.is_some()
            || self.cache.is_empty()
            || other.cache.is_empty()
        {
            return Err(PipelineError::Invalid(
                "sessions merge only after their first step".into(),
            ));
        }
        self.next = Tensor::cat(vec![self.next.clone(), other.next], 0);
        self.cache.append_rows(other.cache);
        self.cfg.extend(other.cfg);
        Ok(())
    }

    /// Keeps the images whose flag is `true` (at a step boundary, after
    /// [`ImageGenSession::feed`] or before the first step); the others stop
    /// costing compute. Keeping none is an error.
    pub fn retain(&mut self, keep: &[bool]) -> Result<()> {
        if keep.len() != self.images() || !keep.iter().any(|k| *k) {
            return Err(PipelineError::Invalid(format!(
                "retain needs {} flags, at least one set",
                self.images()
            )));
        }
        let rows: Vec<usize> = (0..self.images())
            .filter(|i| keep[*i])
            .flat_map(|i| [2 * i, 2 * i + 1])
            .collect();
        let index: Vec<i64> = rows.iter().map(|r| *r as i64).collect();
        let device = self.next.device();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
        self.next = self.next.clone().select(0, index);
        if let Some(flags) = self.padding.take() {
            let t = flags.len() / (2 * self.images());
            let kept = rows
                .iter()
                .flat_map(|r| flags[r * t..(r + 1) * t].iter().copied())
                .collect();
            self.padding = Some(kept);
        }
        self.cache.retain_rows(&rows);
        self.cfg = self
            .cfg
            .iter()
            .zip(keep)
            .filter_map(|(w, k)| k.then_some(*w))
            .collect();
        Ok(())
    }
}

/// The sampler of image `index` of a request seeded with `seed`: one RNG per
/// image, so an image does not depend on how many are generated with it or how
/// they are batched.
pub fn image_sampler(seed: u64, index: usize, temperature: f32) -> Result<Sampler> {
    Sampler::new(SamplingConfig {
        temperature,
        top_k: 0,
        top_p: 1.0,
        seed: seed.wrapping_add(index as u64),
        ..Default::default()
    })
}

impl<B: Backend> JanusModel<B> {
    /// Generates `config.parallel` images' codes (raster order, `grid^2` each) from
    /// prompt ids; `progress(step, steps)` is called after each step.
    pub fn generate_images(
        &self,
        prompt_ids: &[u32],
        pad: u32,
        config: &ImageGenConfig,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<Vec<u32>>> {
        let mut batcher = crate::batcher::ImageBatcher::new(self, pad);
        let steps = batcher.steps();
        let mut joining = vec![crate::batcher::ImageJob {
            tag: (),
            prompt_ids: prompt_ids.to_vec(),
            config: *config,
        }];
        let mut codes = vec![Vec::new(); config.parallel];
        for step in 0..steps {
            for done in batcher.step(std::mem::take(&mut joining))? {
                codes[done.index] = done.codes;
            }
            progress(step + 1, steps);
        }
        Ok(codes)
    }

    /// Decodes generated codes to images `[P, 3, S, S]`.
    pub fn decode_images(&self, codes: &[Vec<u32>]) -> Result<Tensor<B, 4>> {
        let vq = self.vq()?;
        Ok(vq.decode(codes, vq.grid())?)
    }
}
