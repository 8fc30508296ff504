//! Image understanding: image features spliced into the prompt embeddings, then
//! text generation with the KV cache.

use burn::prelude::*;
use burn::tensor::TensorData;

use janus_llm::KvCache;

use crate::model::JanusModel;
use crate::processor::Batch;
use crate::sampling::Sampler;
use crate::{PipelineError, Result};

/// Host values to a `[rows, len]` int tensor.
pub(crate) fn id_tensor<B: Backend>(rows: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let len = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device)
}

pub(crate) use janus_core::to_f32_vec as to_f32;

impl<B: Backend> JanusModel<B> {
    /// Builds `[N, 3, S, S]` pixels (in the model dtype) from preprocessed images.
    pub fn pixel_tensor(&self, images: &[Vec<f32>]) -> Result<Tensor<B, 4>> {
        let s = self.config.vision.image_size;
        if images.is_empty() || images.iter().any(|i| i.len() != 3 * s * s) {
            return Err(PipelineError::Invalid(format!(
                "images must be preprocessed to [3, {s}, {s}]"
            )));
        }
        let device = self.device().clone();
        let flat: Vec<f32> = images.concat();
        let t = Tensor::<B, 4>::from_data(TensorData::new(flat, [images.len(), 3, s, s]), &device);
        Ok(t.cast(self.dtype()))
    }

    /// Aligned image features `[N, tokens, hidden]`: `aligner(vision(pixels))`.
    pub fn image_embeds(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        Ok(self.aligner()?.forward(self.vision()?.encode(pixels)?))
    }

    /// Token embeddings of a batch with image features written, in order, at the
    /// image positions (row-major over batch then sequence).
    pub fn prepare_inputs_embeds(
        &self,
        batch: &Batch,
        image_features: Option<Tensor<B, 3>>,
    ) -> Result<Tensor<B, 3>> {
        let device = self.device().clone();
        let embeds = self.llm.embed(id_tensor(&batch.input_ids, &device));
        let slots: Vec<usize> = batch
            .image_mask
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, m)| m.then_some(i))
            .collect();
        let Some(features) = image_features else {
            if slots.is_empty() {
                return Ok(embeds);
            }
            return Err(PipelineError::Prompt(format!(
                "the prompt has {} image slots but no image was given",
                slots.len()
            )));
        };
        let [n, tokens, h] = features.dims();
        if slots.len() != n * tokens {
            return Err(PipelineError::Prompt(format!(
                "the prompt has {} image slots but {n} image(s) give {} features",
                slots.len(),
                n * tokens
            )));
        }
        let [b, t, _] = embeds.dims();
        // One gather from [text rows; image rows].
        let mut index: Vec<i64> = (0..(b * t) as i64).collect();
        for (k, &slot) in slots.iter().enumerate() {
            index[slot] = (b * t + k) as i64;
        }
        let source = Tensor::cat(
            vec![
                embeds.reshape([b * t, h]),
                features.reshape([n * tokens, h]),
            ],
            0,
        );
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [b * t]), &device);
        Ok(source.select(0, index).reshape([b, t, h]))
    }

    /// Generates up to `max_new_tokens` per row from `embeds` (left padding per
    /// `batch.attention_mask`), stopping a row at `eos`. `on_token(row, id)` sees each
    /// token as it is produced. Returns the new ids per row (the EOS included).
    pub fn generate_text(
        &self,
        batch: &Batch,
        embeds: Tensor<B, 3>,
        max_new_tokens: usize,
        eos: u32,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(usize, u32),
    ) -> Vec<Vec<u32>> {
        let mut session = TextSession::new(self, batch, embeds, max_new_tokens, eos);
        let mut out = vec![Vec::new(); batch.input_ids.len()];
        while let Some(tokens) = session.step(sampler) {
            for (row, id) in tokens.into_iter().enumerate() {
                if let Some(id) = id {
                    out[row].push(id);
                    on_token(row, id);
                }
            }
        }
        out
    }
}

/// A running text generation: the KV cache of a batch after its prompt, one
/// token per row per [`TextSession::step`]. The prompt is run when the session
/// is created.
pub struct TextSession<'m, B: Backend> {
    model: &'m JanusModel<B>,
    cache: KvCache<B>,
    hidden: Tensor<B, 3>,
    done: Vec<bool>,
    eos: u32,
    steps_left: usize,
}

impl<'m, B: Backend> TextSession<'m, B> {
    /// Runs the prompt `embeds` (left padding per `batch.attention_mask`) and
    /// prepares up to `max_new_tokens` steps.
    pub fn new(
        model: &'m JanusModel<B>,
        batch: &Batch,
        embeds: Tensor<B, 3>,
        max_new_tokens: usize,
        eos: u32,
    ) -> Self {
        let [b, t, _] = embeds.dims();
        let flags: Vec<bool> = batch.attention_mask.iter().flatten().copied().collect();
        let padding = flags.iter().any(|f| !f).then_some(flags.as_slice());
        // Room for the prompt and the first tokens; the cache doubles when a
        // long answer needs more (a huge budget allocates nothing up front).
        let mut cache = model.llm.new_cache(b, t + max_new_tokens.min(1024));
        let hidden = model.llm.forward(embeds, padding, &mut cache);
        Self {
            model,
            cache,
            hidden,
            done: vec![false; b],
            eos,
            steps_left: max_new_tokens,
        }
    }

    /// Samples the next token of every row that has not finished (`None` for
    /// finished rows) and feeds them to the model; `None` once every row has
    /// produced EOS or the token budget is spent.
    pub fn step(&mut self, sampler: &mut Sampler) -> Option<Vec<Option<u32>>> {
        self.step_with(|_, logits| sampler.sample(logits) as u32)
    }

    /// [`TextSession::step`] with the token of each row picked by
    /// `pick(row, logits)` (e.g. one sampler per row).
    pub fn step_with(
        &mut self,
        mut pick: impl FnMut(usize, &[f32]) -> u32,
    ) -> Option<Vec<Option<u32>>> {
        if self.steps_left == 0 || self.done.iter().all(|d| *d) {
            return None;
        }
        self.steps_left -= 1;
        let b = self.done.len();
        let last = self.hidden.dims()[1] - 1;
        let logits = to_f32(
            self.model
                .llm
                .logits(self.hidden.clone().narrow(1, last, 1)),
        );
        let vocab = logits.len() / b;
        let mut picked = Vec::with_capacity(b);
        let mut next = Vec::with_capacity(b);
        for (row, l) in logits.chunks(vocab).enumerate() {
            if self.done[row] {
                picked.push(None);
                next.push(vec![self.eos]);
                continue;
            }
            let id = pick(row, l);
            self.done[row] = id == self.eos;
            picked.push(Some(id));
            next.push(vec![id]);
        }
        if self.steps_left > 0 && !self.done.iter().all(|d| *d) {
            let device = self.hidden.device();
            let embeds = self.model.llm.embed(id_tensor(&next, &device));
            self.hidden = self.model.llm.forward(embeds, None, &mut self.cache);
        }
        Some(picked)
    }

    /// Rows in the session.
    pub fn rows(&self) -> usize {
        self.done.len()
    }

    /// Adds the rows of `other` (a session of the same model, created or
    /// stepped like this one) behind this session's: conversations join a
    /// running batch between steps and go on exactly as they would alone. The
    /// token budget becomes the larger of the two.
    pub fn merge(&mut self, other: TextSession<'m, B>) {
        let last = |h: Tensor<B, 3>| {
            let t = h.dims()[1];
            h.narrow(1, t - 1, 1)
        };
        self.hidden = Tensor::cat(vec![last(self.hidden.clone()), last(other.hidden)], 0);
        self.cache.append_rows(other.cache);
        self.done.extend(other.done);
        self.steps_left = self.steps_left.max(other.steps_left);
    }

    /// Keeps the rows whose flag is `true` (between steps); keeping none is an error.
    pub fn retain(&mut self, keep: &[bool]) -> Result<()> {
        if keep.len() != self.rows() || !keep.iter().any(|k| *k) {
            return Err(PipelineError::Invalid(format!(
                "retain needs {} flags, at least one set",
                self.rows()
            )));
        }
        let rows: Vec<usize> = (0..self.rows()).filter(|r| keep[*r]).collect();
        let index: Vec<i64> = rows.iter().map(|r| *r as i64).collect();
        let device = self.hidden.device();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
        self.hidden = self.hidden.clone().select(0, index);
        self.cache.retain_rows(&rows);
        self.done = rows.iter().map(|r| self.done[*r]).collect();
        Ok(())
    }

    /// Whether every row has produced EOS.
    pub fn all_done(&self) -> bool {
        self.done.iter().all(|d| *d)
    }
}
