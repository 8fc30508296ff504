//! Image generation: the LLM with classifier-free guidance over interleaved
//! conditional / unconditional rows, one code per image per step, then VQ decode.

use burn::prelude::*;
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
        if !(self.cfg_weight >= 0.0 && self.cfg_weight.is_finite()) {
            return Err(PipelineError::Invalid(format!(
                "cfg weight must be >= 0, got {}",
                self.cfg_weight
            )));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(PipelineError::Invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        Ok(())
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

/// A running generation: the KV cache of the `2 * parallel` rows and the next input.
pub struct ImageGenSession<'m, B: Backend> {
    model: &'m JanusModel<B>,
    cache: KvCache<B>,
    next: Tensor<B, 3>,
    parallel: usize,
    cfg_weight: f32,
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
        let l = prompt_ids.len();
        if l < 2 {
            return Err(PipelineError::Prompt(
                "the generation prompt needs at least BOS and BOI".into(),
            ));
        }
        let mut uncond = prompt_ids.to_vec();
        uncond[1..l - 1].fill(pad);
        let rows: Vec<Vec<u32>> = (0..2 * parallel)
            .map(|r| {
                if r % 2 == 0 {
                    prompt_ids.to_vec()
                } else {
                    uncond.clone()
                }
            })
            .collect();
        let device = model.device().clone();
        let steps = model.config.vq.grid_side().pow(2);
        Ok(Self {
            model,
            cache: model.llm.new_cache(2 * parallel, l + steps),
            next: model.llm.embed(id_tensor(&rows, &device)),
            parallel,
            cfg_weight,
        })
    }

    /// Runs the LLM on the pending input and returns each image's logits.
    pub fn logits(&mut self) -> Vec<CfgLogits> {
        let hidden = self
            .model
            .llm
            .forward(self.next.clone(), None, &mut self.cache);
        let [rows, t, h] = hidden.dims();
        let last = hidden.narrow(1, t - 1, 1).reshape([rows, h]);
        let logits = to_f32(self.model.gen_head.forward(last));
        let k = logits.len() / rows;
        let w = self.cfg_weight;
        (0..self.parallel)
            .map(|i| {
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
        if codes.len() != self.parallel || codes.iter().any(|c| *c as usize >= k) {
            return Err(PipelineError::Invalid(format!(
                "expected {} codes below {k}, got {codes:?}",
                self.parallel
            )));
        }
        let rows: Vec<Vec<u32>> = codes.iter().flat_map(|c| [vec![*c], vec![*c]]).collect();
        let device = self.next.device();
        let e = self.model.gen_embed.forward(id_tensor(&rows, &device));
        self.next = self.model.gen_aligner.forward(e);
        Ok(())
    }
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
        config.validate()?;
        let mut sampler = Sampler::new(SamplingConfig {
            temperature: config.temperature,
            top_k: 0,
            top_p: 1.0,
            seed: config.seed,
        })?;
        let steps = self.config.vq.grid_side().pow(2);
        let mut session =
            ImageGenSession::new(self, prompt_ids, pad, config.parallel, config.cfg_weight)?;
        let mut codes = vec![Vec::with_capacity(steps); config.parallel];
        for step in 0..steps {
            let logits = session.logits();
            let picked: Vec<u32> = logits
                .iter()
                .map(|l| sampler.sample(&l.guided) as u32)
                .collect();
            for (c, p) in codes.iter_mut().zip(&picked) {
                c.push(*p);
            }
            if step + 1 < steps {
                session.feed(&picked)?;
            }
            progress(step + 1, steps);
        }
        Ok(codes)
    }

    /// Decodes generated codes to images `[P, 3, S, S]`.
    pub fn decode_images(&self, codes: &[Vec<u32>]) -> Result<Tensor<B, 4>> {
        Ok(self.vq.decode(codes, self.vq.grid())?)
    }
}
