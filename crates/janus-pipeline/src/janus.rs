//! [`Janus`]: the one-stop API. Load a model once, then ask about images
//! ([`Janus::understand`], streamed text) or draw them ([`Janus::generate_images`]).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use janus_core::Precision;

use crate::chat::{Message, Template};
use crate::config::JanusConfig;
use crate::generate::ImageGenConfig;
use crate::memory::{self, DECODE_CHUNK, GenerationMemory, GenerationPlan};
use crate::model::{JanusModel, Modules};
use crate::preprocess::RgbImage;
use crate::processor::Processor;
use crate::sampling::{Sampler, SamplingConfig};
use crate::text_stream::TextStream;
use crate::understand::TextSession;
use crate::{PipelineError, Result};

/// What [`Janus::load_with`] reports while it resolves and converts a hub id.
#[derive(Debug, Clone, Copy)]
pub enum LoadEvent<'a> {
    /// A file is being fetched into the Hugging Face cache.
    Fetching {
        /// `org/name/file`.
        file: &'a str,
    },
    /// The first use of a hub id converts it: `done` of `total` tensors of `file`.
    Converting {
        /// The weight file being read.
        file: &'a Path,
        /// Tensors done.
        done: usize,
        /// Tensors in that file.
        total: usize,
    },
}

/// A question about zero or more images.
#[derive(Debug, Clone)]
pub struct Request {
    /// The conversation; `user`/`assistant` roles map to the template's. The last
    /// assistant turn is generated.
    pub messages: Vec<Message>,
    /// Images in placeholder order. Without any `<image_placeholder>` in the
    /// messages, one per image is put in front of the last user message.
    pub images: Vec<RgbImage>,
    /// Greedy by default.
    pub sampling: SamplingConfig,
    /// Most tokens to generate (also bounded by the model's context).
    pub max_new_tokens: usize,
    /// The system prompt; `None` is the reference's
    /// ([`chat::SYSTEM_PROMPT`](crate::chat::SYSTEM_PROMPT)), `""` none.
    pub system_prompt: Option<String>,
}

impl Request {
    /// One user question, greedy, at most 512 new tokens.
    pub fn new(question: impl Into<String>) -> Self {
        Self::chat(vec![Message::new("user", question)])
    }

    /// A multi-turn conversation.
    pub fn chat(messages: Vec<Message>) -> Self {
        Self {
            messages,
            images: Vec::new(),
            sampling: SamplingConfig::default(),
            max_new_tokens: 512,
            system_prompt: None,
        }
    }

    /// Adds an image.
    pub fn image(mut self, image: RgbImage) -> Self {
        self.images.push(image);
        self
    }

    /// Sets the token budget.
    pub fn max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }

    /// Sets the sampling.
    pub fn sampling(mut self, sampling: SamplingConfig) -> Self {
        self.sampling = sampling;
        self
    }
}

/// A piece of the answer: the text one token completes (possibly empty while a
/// character is incomplete), or the held-back rest at the end (`token: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextDelta {
    /// New text.
    pub text: String,
    /// The token generated, if this delta comes from one.
    pub token: Option<u32>,
}

/// Why text generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced EOS.
    Stop,
    /// The token budget (or the model's context) ran out.
    Length,
}

/// The streamed answer of [`Janus::understand`]: an iterator of [`TextDelta`]s
/// whose texts add up to the whole answer.
pub struct Understanding<'a, B: Backend> {
    session: TextSession<'a, B>,
    sampler: Sampler,
    stream: TextStream<'a>,
    prompt_tokens: usize,
    finish: Option<FinishReason>,
}

impl<B: Backend> Understanding<'_, B> {
    /// Tokens of the prompt (image slots included).
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// The tokens generated so far (EOS included once produced).
    pub fn token_ids(&self) -> &[u32] {
        self.stream.ids()
    }

    /// Why generation stopped, once the iterator is exhausted.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }
}

impl<B: Backend> Iterator for Understanding<'_, B> {
    type Item = Result<TextDelta>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finish.is_some() {
            return None;
        }
        match self.session.step(&mut self.sampler) {
            Some(ids) => {
                let id = ids.first().copied().flatten()?;
                let text = self.stream.push(id);
                Some(Ok(TextDelta {
                    text,
                    token: Some(id),
                }))
            }
            None => {
                self.finish = Some(if self.session.all_done() {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                });
                let rest = self.stream.finish();
                (!rest.is_empty()).then_some(Ok(TextDelta {
                    text: rest,
                    token: None,
                }))
            }
        }
    }
}

/// A conversation whose prompt has run.
pub(crate) struct StartedText<'a, B: Backend> {
    pub session: TextSession<'a, B>,
    pub sampler: Sampler,
    pub prompt_tokens: usize,
    pub budget: usize,
}

/// A text-to-image request.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// What to draw.
    pub prompt: String,
    /// Images, guidance, temperature and seed.
    pub config: ImageGenConfig,
}

impl ImageRequest {
    /// One image of `prompt` with the reference's defaults (cfg 5, temperature 1).
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            config: ImageGenConfig::default(),
        }
    }

    /// Sets the settings.
    pub fn config(mut self, config: ImageGenConfig) -> Self {
        self.config = config;
        self
    }
}

/// One generated image with the codes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedImage {
    /// VQ codes in raster order.
    pub codes: Vec<u32>,
    /// The decoded pixels.
    pub image: RgbImage,
}

/// A loaded Janus model with its tokenizer, template and image preprocessing.
///
/// ```no_run
/// use burn::backend::Flex;
/// use burn::tensor::DType;
/// use janus_pipeline::{Janus, Request, open_image};
///
/// # fn main() -> janus_pipeline::Result<()> {
/// let janus = Janus::<Flex>::load("deepseek-ai/Janus-Pro-1B", &Default::default(), DType::F32)?;
/// let request = Request::new("What is in this picture?").image(open_image("cat.png")?);
/// for delta in janus.understand(&request)? {
///     print!("{}", delta?.text);
/// }
/// # Ok(()) }
/// ```
pub struct Janus<B: Backend> {
    model: JanusModel<B>,
    processor: Processor,
    dir: PathBuf,
    memory_limit: Option<u64>,
}

impl<B: Backend> Janus<B> {
    /// Loads a model directory (original, transformers-port or converted layout)
    /// or, with the `hub` feature, a Hugging Face id, onto `device` with weights
    /// in `precision` (a [`burn::tensor::DType`], or one with a quantized format).
    pub fn load(model: &str, device: &B::Device, precision: impl Into<Precision>) -> Result<Self> {
        Self::load_with(model, device, precision, None, |_| {})
    }

    /// [`Janus::load`] with a chat template (else the checkpoint's own) and a
    /// progress callback for first-use downloads and conversion.
    pub fn load_with(
        model: &str,
        device: &B::Device,
        precision: impl Into<Precision>,
        template: Option<Template>,
        progress: impl FnMut(LoadEvent<'_>),
    ) -> Result<Self> {
        Self::load_modules(model, device, precision, template, Modules::All, progress)
    }

    /// [`Janus::load_with`] of only `modules` (e.g. an understanding-only
    /// deployment, or `janus generate`, which needs no SigLIP encoder).
    pub fn load_modules(
        model: &str,
        device: &B::Device,
        precision: impl Into<Precision>,
        template: Option<Template>,
        modules: Modules,
        progress: impl FnMut(LoadEvent<'_>),
    ) -> Result<Self> {
        let dir = resolve_model(model, progress)?;
        let config = JanusConfig::from_file(dir.join("config.json"))?;
        let processor = Processor::from_dir(&dir, model, &config.vision, template)?;
        processor
            .tokenizer()
            .check_vocab(config.language.vocab_size)?;
        let model = JanusModel::load_dir_modules(&dir, device, precision, modules)?;
        Ok(Self {
            model,
            processor,
            dir,
            memory_limit: None,
        })
    }

    /// The memory plan of `request` before loading: `model` (resolved as
    /// [`Janus::load`] does) in `precision` against what the device has
    /// (and at most `max_memory` bytes for the whole process). Reads only the
    /// config, the tokenizer and the checkpoint's shapes.
    pub fn plan_generation(
        model: &str,
        precision: impl Into<Precision>,
        template: Option<Template>,
        request: &ImageRequest,
        max_memory: Option<u64>,
        progress: impl FnMut(LoadEvent<'_>),
    ) -> Result<GenerationPlan> {
        request.config.validate()?;
        let dir = resolve_model(model, progress)?;
        let config = JanusConfig::from_file(dir.join("config.json"))?;
        let processor = Processor::from_dir(&dir, model, &config.vision, template)?;
        processor
            .tokenizer()
            .check_vocab(config.language.vocab_size)?;
        let prompt_len = image_prompt(&processor, &config, &request.prompt)?.len();
        let (ckpt, _) = crate::layout::open_checkpoint(&dir)?;
        GenerationPlan::new(
            &ckpt,
            &config,
            precision.into(),
            prompt_len,
            request.config.parallel,
            memory::available_memory::<B>(max_memory, 0),
        )
    }

    /// A model assembled from its parts, e.g. random weights at a real
    /// variant's sizes with a tokenizer from `dir` (benchmarks).
    pub fn from_parts(model: JanusModel<B>, processor: Processor, dir: PathBuf) -> Self {
        Self {
            model,
            processor,
            dir,
            memory_limit: None,
        }
    }

    /// Answers `request`, streaming the text. The prompt (and the images) run
    /// before this returns; each iteration then generates one token.
    pub fn understand(&self, request: &Request) -> Result<Understanding<'_, B>> {
        let started = self.start_text(request)?;
        Ok(Understanding {
            session: started.session,
            sampler: started.sampler,
            stream: TextStream::new(self.processor.tokenizer()),
            prompt_tokens: started.prompt_tokens,
            finish: None,
        })
    }

    /// Refuses, before any image is decoded, a conversation whose prompt
    /// with `images` images (and `system`, or the default system prompt)
    /// leaves no room for an answer in the model's context.
    pub fn check_understanding_fits(
        &self,
        messages: &[Message],
        images: usize,
        system: Option<&str>,
    ) -> Result<()> {
        let system = system.unwrap_or(crate::chat::SYSTEM_PROMPT);
        let context = self.model.config.language.max_position_embeddings;
        self.processor
            .understanding_len_within(messages, images, system, context)
            .map(|_| ())
    }

    /// Runs the prompt of `request` (images included): the session, ready for
    /// its first token, with the request's sampler and budget.
    pub(crate) fn start_text(&self, request: &Request) -> Result<StartedText<'_, B>> {
        // Text needs the LM head (a generation-only model has none).
        self.model.lm_head()?;
        let sampler = Sampler::new(request.sampling)?;
        let system = request
            .system_prompt
            .as_deref()
            .unwrap_or(crate::chat::SYSTEM_PROMPT);
        let prepared =
            self.processor
                .understanding_with(&request.messages, &request.images, system)?;
        let prompt_tokens = prepared.batch.len();
        let context = self.model.config.language.max_position_embeddings;
        answer_context_fits(prompt_tokens, context)?;
        let budget = request.max_new_tokens.min(context - prompt_tokens);
        let features = if prepared.pixels.is_empty() {
            None
        } else {
            let pixels = self.model.pixel_tensor(&prepared.pixels)?;
            Some(self.model.image_embeds(pixels)?)
        };
        let embeds = self
            .model
            .prepare_inputs_embeds(&prepared.batch, features)?;
        let eos = self.processor.tokenizer().ids.eos;
        Ok(StartedText {
            session: TextSession::new(&self.model, &prepared.batch, embeds, budget, eos),
            sampler,
            prompt_tokens,
            budget,
        })
    }

    /// Generates `request.config.parallel` images; `progress(step, steps)` is
    /// called after each LLM step. When they do not all fit in memory at once
    /// ([`Janus::images_that_fit`]), they are generated a chunk at a time: with
    /// one RNG per image, the images are the same either way.
    pub fn generate_images(
        &self,
        request: &ImageRequest,
        progress: impl FnMut(usize, usize),
    ) -> Result<Vec<GeneratedImage>> {
        let mut out = Vec::with_capacity(request.config.parallel);
        self.generate_images_with(request, progress, |_, image| {
            out.push(image);
            Ok::<(), PipelineError>(())
        })?;
        Ok(out)
    }

    /// [`Janus::generate_images`] handing each image to `on_image(index,
    /// image)` as soon as its chunk is decoded (e.g. to write it before the
    /// next chunk starts), instead of holding them all; its error stops the
    /// run.
    pub fn generate_images_with<E: From<PipelineError>>(
        &self,
        request: &ImageRequest,
        mut progress: impl FnMut(usize, usize),
        mut on_image: impl FnMut(usize, GeneratedImage) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let config = request.config;
        config.validate()?;
        let ids = image_prompt(&self.processor, &self.model.config, &request.prompt)?;
        let chunk = self.images_that_fit(ids.len(), config.parallel);
        if chunk == 0 {
            self.check_generation_memory(ids.len(), 1)?;
        }
        let chunk = chunk.max(1);
        let pad = self.processor.tokenizer().ids.pad;
        let steps = self.model.config.vq.grid_side().pow(2);
        let total = steps * config.parallel.div_ceil(chunk);
        for (n, first) in (0..config.parallel).step_by(chunk).enumerate() {
            let part = ImageGenConfig {
                parallel: chunk.min(config.parallel - first),
                // Image `first + i` keeps its sampler (`image_sampler(seed, first + i)`).
                seed: config.seed.wrapping_add(first as u64),
                ..config
            };
            let codes = self
                .model
                .generate_images(&ids, pad, &part, |d, _| progress(n * steps + d, total))?;
            let images = self.decode_codes(&codes)?;
            for (i, (codes, image)) in codes.into_iter().zip(images).enumerate() {
                on_image(first + i, GeneratedImage { codes, image })?;
            }
        }
        Ok(())
    }

    /// Decodes finished code grids (raster order, `grid^2` each) to images, a
    /// few at a time through the VQ decoder (bounding its activations).
    pub fn decode_codes(&self, codes: &[Vec<u32>]) -> Result<Vec<RgbImage>> {
        let mut out = Vec::with_capacity(codes.len());
        for chunk in codes.chunks(DECODE_CHUNK) {
            out.extend(janus_gen_tokenizer::VqModel::<B>::to_rgb8(
                self.model.decode_images(chunk)?,
            ));
        }
        Ok(out)
    }

    /// A preview of an unfinished image: the rows of codes generated so far
    /// (`codes` in raster order, fewer than `grid^2`) decoded, the rest of the
    /// picture grey.
    pub fn decode_partial(&self, codes: &[u32]) -> Result<RgbImage> {
        let side = self.model.config.vq.grid_side();
        let rows = (codes.len() / side).min(side);
        let mut grid = codes[..rows * side].to_vec();
        // Unfinished rows repeat the last finished one: the decoder's receptive
        // field then blurs nothing foreign into the finished part.
        let fill: Vec<u32> = match rows {
            0 => vec![0; side],
            r => grid[(r - 1) * side..r * side].to_vec(),
        };
        while grid.len() < side * side {
            grid.extend_from_slice(&fill);
        }
        let mut image = self
            .decode_codes(&[grid])?
            .pop()
            .ok_or_else(|| PipelineError::Invalid("the VQ decoder returned no image".into()))?;
        let done_px = rows * image.height / side;
        for px in image.pixels[done_px * image.width * 3..].iter_mut() {
            *px = 128;
        }
        Ok(image)
    }

    /// Refuses, before anything runs, an image batch whose KV cache (two rows
    /// per image, prompt + every code position) and activations do not fit the
    /// memory the CPU has available.
    pub fn check_generation_memory(&self, prompt_len: usize, parallel: usize) -> Result<()> {
        self.check_generation_memory_within(prompt_len, parallel, None)
    }

    /// [`Janus::check_generation_memory`] against at most `limit` bytes beyond
    /// the weights (and what the CPU has available, where known).
    pub fn check_generation_memory_within(
        &self,
        prompt_len: usize,
        parallel: usize,
        limit: Option<u64>,
    ) -> Result<()> {
        let Some((budget, source)) = self.generation_budget(limit) else {
            return Ok(());
        };
        let plan = self.generation_memory(prompt_len);
        let need = plan.need(parallel) - plan.weights;
        if need > budget {
            let fit = plan.images_within(budget.saturating_add(plan.weights), parallel);
            let (need, have) = memory::gb_apart(need, budget);
            return Err(PipelineError::Memory(format!(
                "{parallel} image(s) need about {need} beyond the weights (KV cache, activations, \
                 pixels), but {have} is available ({source}): at most {fit} fit at once"
            )));
        }
        Ok(())
    }

    /// What generating with a prompt of `prompt_len` tokens needs in memory.
    pub fn generation_memory(&self, prompt_len: usize) -> GenerationMemory {
        GenerationMemory::new(
            &self.model.config,
            self.model.dtype(),
            self.model.weight_bytes(),
            prompt_len,
        )
    }

    /// Bytes generation may use beyond the weights: what is available (and
    /// at most `limit`), and where the figure comes from.
    fn generation_budget(&self, limit: Option<u64>) -> Option<(u64, memory::MemorySource)> {
        let total = self
            .memory_limit
            .map(|l| l.saturating_sub(self.model.weight_bytes()));
        let limit = match (total, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        memory::available_memory::<B>(limit, 0)
    }

    /// How many of `wanted` images fit in memory at once (at least 1 when one
    /// fits; 0 when not even one does), for a prompt of `prompt_len` tokens.
    pub fn images_that_fit(&self, prompt_len: usize, wanted: usize) -> usize {
        let plan = self.generation_memory(prompt_len);
        match self.generation_budget(None) {
            Some((budget, _)) => plan.images_within(budget.saturating_add(plan.weights), wanted),
            None => wanted,
        }
    }

    /// Bounds the memory of the whole process (weights included) that
    /// generation plans for, e.g. `--max-memory`; also bounded by what the
    /// machine has available.
    pub fn set_memory_limit(&mut self, bytes: Option<u64>) {
        self.memory_limit = bytes;
    }

    /// The model's modules.
    pub fn model(&self) -> &JanusModel<B> {
        &self.model
    }

    /// Tokenizer, template and image preprocessing.
    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// The model's config.
    pub fn config(&self) -> &JanusConfig {
        &self.model.config
    }

    /// The directory the model was loaded from (the converted copy for hub ids).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Resolves a `--model` value to a directory holding `config.json`: an existing
/// directory as is, else (with the `hub` feature) a Hugging Face id, fetched
/// and converted on first use.
pub fn resolve_model(model: &str, progress: impl FnMut(LoadEvent<'_>)) -> Result<PathBuf> {
    #[cfg(feature = "hub")]
    let dir = crate::hub::resolve_model(model, progress)?;
    #[cfg(not(feature = "hub"))]
    let dir = {
        let _ = progress;
        let dir = PathBuf::from(model);
        if !dir.is_dir() {
            return Err(PipelineError::Invalid(format!(
                "model directory `{model}` not found (built without hub support)"
            )));
        }
        dir
    };
    let config = dir.join("config.json");
    if std::fs::symlink_metadata(&config).is_err() {
        return Err(PipelineError::Invalid(format!(
            "{} has no config.json: is it a Janus model directory?",
            dir.display()
        )));
    }
    if !config.is_file() {
        return Err(PipelineError::Invalid(format!(
            "{} is not a regular file",
            config.display()
        )));
    }
    Ok(dir)
}

/// Refuses an understanding prompt of `prompt_tokens` that leaves no
/// position of a `context` for the answer (the server checks its requests
/// with it before decoding their images).
pub fn answer_context_fits(prompt_tokens: usize, context: usize) -> Result<()> {
    if prompt_tokens >= context {
        return Err(PipelineError::Context(format!(
            "the prompt has {prompt_tokens} tokens: with at least one token of answer \
             that is over the model's context (language_config.max_position_embeddings) \
             of {context}"
        )));
    }
    Ok(())
}

/// The ids of an image prompt, refused where its image tokens (one per code
/// of the grid) would run past the model's context.
fn image_prompt(processor: &Processor, config: &JanusConfig, prompt: &str) -> Result<Vec<u32>> {
    processor.generation_prompt_within(
        prompt,
        config.vq.grid_side().pow(2),
        config.language.max_position_embeddings,
    )
}

/// Refuses an image prompt of `prompt_len` tokens when it and the image's
/// `steps` tokens do not fit a `context` of positions (the server checks its
/// requests with it).
pub fn image_context_fits(prompt_len: usize, steps: usize, context: usize) -> Result<()> {
    if prompt_len + steps > context {
        return Err(PipelineError::Context(format!(
            "the prompt has {prompt_len} tokens; with the {steps} image tokens that is \
             over the model's context (language_config.max_position_embeddings) of {context}"
        )));
    }
    Ok(())
}
