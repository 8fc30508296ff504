//! Image understanding: image features spliced into the prompt embeddings, then
//! text generation with the KV cache.

use burn::prelude::*;
use burn::tensor::TensorData;

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

/// Row-major f32 values of a tensor.
pub(crate) fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

impl<B: Backend> JanusModel<B> {
    /// Builds `[N, 3, S, S]` pixels (in the model dtype) from preprocessed images.
    pub fn pixel_tensor(&self, images: &[Vec<f32>]) -> Result<Tensor<B, 4>> {
        let s = self.config.vision.image_size;
        if images.is_empty() || images.iter().any(|i| i.len() != 3 * s * s) {
            return Err(PipelineError::Invalid(format!(
                "images must be preprocessed to [3, {s}, {s}]"
            )));
        }
        let device = self.llm.embed_tokens.weight.device();
        let flat: Vec<f32> = images.concat();
        let t = Tensor::<B, 4>::from_data(TensorData::new(flat, [images.len(), 3, s, s]), &device);
        Ok(t.cast(self.llm.embed_tokens.weight.dtype()))
    }

    /// Aligned image features `[N, tokens, hidden]`: `aligner(vision(pixels))`.
    pub fn image_embeds(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        Ok(self.aligner.forward(self.vision.encode(pixels)?))
    }

    /// Token embeddings of a batch with image features written, in order, at the
    /// image positions (row-major over batch then sequence).
    pub fn prepare_inputs_embeds(
        &self,
        batch: &Batch,
        image_features: Option<Tensor<B, 3>>,
    ) -> Result<Tensor<B, 3>> {
        let device = self.llm.embed_tokens.weight.device();
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
        let [b, t, _] = embeds.dims();
        let flags: Vec<bool> = batch.attention_mask.iter().flatten().copied().collect();
        let padding = flags.iter().any(|f| !f).then_some(flags.as_slice());
        let mut cache = self.llm.new_cache(b, t + max_new_tokens);
        let mut hidden = self.llm.forward(embeds, padding, &mut cache);
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let device = hidden.device();
        for _ in 0..max_new_tokens {
            let last = hidden.dims()[1] - 1;
            let logits = to_f32(self.llm.logits(hidden.narrow(1, last, 1)));
            let vocab = logits.len() / b;
            let mut next = Vec::with_capacity(b);
            for (row, l) in logits.chunks(vocab).enumerate() {
                if done[row] {
                    next.push(vec![eos]);
                    continue;
                }
                let id = sampler.sample(l) as u32;
                out[row].push(id);
                on_token(row, id);
                done[row] = id == eos;
                next.push(vec![id]);
            }
            if done.iter().all(|d| *d) {
                break;
            }
            hidden = self
                .llm
                .forward(self.llm.embed(id_tensor(&next, &device)), None, &mut cache);
        }
        out
    }
}
