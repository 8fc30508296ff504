//! Continuous batching of image generation: jobs join a running batch at a
//! step boundary, finished and cancelled images leave it, and every image comes
//! out exactly as it would alone (one RNG per image, masked left padding).

use burn::prelude::*;

use crate::Result;
use crate::generate::{ImageGenConfig, ImageGenSession, ImagePrompt, image_sampler};
use crate::model::JanusModel;
use crate::sampling::Sampler;

/// Images to generate for one prompt; `tag` says whose they are.
#[derive(Debug, Clone)]
pub struct ImageJob<T> {
    /// The caller's id of the job.
    pub tag: T,
    /// Tokenised generation prompt (BOS first, BOI last).
    pub prompt_ids: Vec<u32>,
    /// Images (`parallel`), guidance, temperature, seed.
    pub config: ImageGenConfig,
}

/// One image of a batch and the codes it has so far.
#[derive(Debug, Clone)]
pub struct BatchImage<T> {
    /// The job's tag.
    pub tag: T,
    /// Index of the image within its job.
    pub index: usize,
    /// Codes generated so far, raster order.
    pub codes: Vec<u32>,
    sampler: Sampler,
}

/// A running batch of image generations over several jobs.
pub struct ImageBatcher<'m, B: Backend, T> {
    model: &'m JanusModel<B>,
    pad: u32,
    session: Option<ImageGenSession<'m, B>>,
    images: Vec<BatchImage<T>>,
    steps: usize,
}

impl<'m, B: Backend, T: Clone> ImageBatcher<'m, B, T> {
    /// An empty batcher; `pad` is the tokenizer's pad id.
    pub fn new(model: &'m JanusModel<B>, pad: u32) -> Self {
        Self {
            model,
            pad,
            session: None,
            images: Vec::new(),
            steps: model.config.vq.grid_side().pow(2),
        }
    }

    /// Codes per image.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The images in the batch, in row order.
    pub fn images(&self) -> &[BatchImage<T>] {
        &self.images
    }

    /// Whether nothing is running.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// One step: a code for every image in the batch, and the prompts of
    /// `joining` jobs run (their first code included), joining the batch.
    /// Returns the images finished at this step, which leave the batch.
    pub fn step(&mut self, joining: Vec<ImageJob<T>>) -> Result<Vec<BatchImage<T>>> {
        for job in &joining {
            job.config.validate()?;
        }
        let mut picked = Vec::new();
        if let Some(session) = &mut self.session {
            for (image, logits) in self.images.iter_mut().zip(session.logits()) {
                let code = image.sampler.sample(&logits.guided) as u32;
                image.codes.push(code);
                picked.push(code);
            }
            session.feed(&picked)?;
        }
        // Each job's prompt runs on its own, unpadded, exactly as alone (run
        // together, the shorter prompts' left padding changed their bits).
        for job in &joining {
            let prompt = ImagePrompt {
                ids: &job.prompt_ids,
                images: job.config.parallel,
                cfg_weight: job.config.cfg_weight,
            };
            let mut new = ImageGenSession::batch(self.model, &[prompt], self.pad)?;
            let c = &job.config;
            let mut images = Vec::new();
            for index in 0..c.parallel {
                images.push(BatchImage {
                    tag: job.tag.clone(),
                    index,
                    codes: Vec::with_capacity(self.steps),
                    sampler: image_sampler(c.seed, index, c.temperature)?,
                });
            }
            let mut first = Vec::new();
            for (image, logits) in images.iter_mut().zip(new.logits()) {
                let code = image.sampler.sample(&logits.guided) as u32;
                image.codes.push(code);
                first.push(code);
            }
            new.feed(&first)?;
            match &mut self.session {
                Some(session) => session.merge(new)?,
                None => self.session = Some(new),
            }
            self.images.extend(images);
        }
        let steps = self.steps;
        self.remove(|image| image.codes.len() >= steps)
    }

    /// Drops the images of jobs `cancelled` says yes to; returns them.
    pub fn cancel(&mut self, cancelled: impl Fn(&T) -> bool) -> Result<Vec<BatchImage<T>>> {
        self.remove(|image| cancelled(&image.tag))
    }

    fn remove(&mut self, gone: impl Fn(&BatchImage<T>) -> bool) -> Result<Vec<BatchImage<T>>> {
        let keep: Vec<bool> = self.images.iter().map(|i| !gone(i)).collect();
        if keep.iter().all(|k| *k) {
            return Ok(Vec::new());
        }
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.images)
            .into_iter()
            .zip(&keep)
            .partition(|(_, k)| **k);
        self.images = kept.into_iter().map(|(i, _)| i).collect();
        if self.images.is_empty() {
            self.session = None;
        } else if let Some(session) = &mut self.session {
            session.retain(&keep)?;
        }
        Ok(removed.into_iter().map(|(i, _)| i).collect())
    }
}
