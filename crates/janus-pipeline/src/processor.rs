//! Prompt ids with image slots: placeholder expansion (`BOI + N x image + EOI`)
//! and left-padded batching, as `VLChatProcessor` does; [`Processor`] puts the
//! tokenizer, template and image preprocessing of a model directory together.

use std::path::Path;

use crate::chat::{
    Message, SYSTEM_PROMPT, Template, generation_prompt, place_images, understanding_prompt_with,
};
use crate::preprocess::{ImageProcessor, RgbImage};
use crate::tokenizer::{BOI_TAG, TextTokenizer};
use crate::{PipelineError, Result};

/// One tokenised prompt with its image slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPrompt {
    /// Token ids (BOS first).
    pub input_ids: Vec<u32>,
    /// Number of images the prompt expects.
    pub num_images: usize,
}

impl PreparedPrompt {
    /// Tokenises `text` and expands each placeholder token into
    /// `BOI + tokens_per_image x image + EOI` (the placeholder itself is dropped).
    pub fn new(tokenizer: &TextTokenizer, text: &str, tokens_per_image: usize) -> Result<Self> {
        let ids = tokenizer.encode(text)?;
        let s = tokenizer.ids;
        let mut input_ids = Vec::with_capacity(ids.len() + tokens_per_image);
        let mut num_images = 0;
        for id in ids {
            if id == s.image {
                input_ids.push(s.boi);
                input_ids.extend(std::iter::repeat_n(s.image, tokens_per_image));
                input_ids.push(s.eoi);
                num_images += 1;
            } else {
                input_ids.push(id);
            }
        }
        Ok(Self {
            input_ids,
            num_images,
        })
    }

    /// Checks that the prompt has exactly `n` image placeholders.
    pub fn expect_images(&self, n: usize) -> Result<()> {
        if self.num_images != n {
            return Err(PipelineError::Prompt(format!(
                "the prompt has {} image placeholder(s) but {n} image(s) were given",
                self.num_images
            )));
        }
        Ok(())
    }
}

/// A left-padded batch of prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `[rows, len]` ids, padded on the left with the pad id.
    pub input_ids: Vec<Vec<u32>>,
    /// `[rows, len]`: `true` on real tokens.
    pub attention_mask: Vec<Vec<bool>>,
    /// `[rows, len]`: `true` where an image feature goes.
    pub image_mask: Vec<Vec<bool>>,
}

impl Batch {
    /// Left-pads prompts to the longest one with `pad`; `image` marks image slots.
    pub fn new(prompts: &[PreparedPrompt], pad: u32, image: u32) -> Self {
        let len = prompts.iter().map(|p| p.input_ids.len()).max().unwrap_or(0);
        let mut b = Self {
            input_ids: Vec::new(),
            attention_mask: Vec::new(),
            image_mask: Vec::new(),
        };
        for p in prompts {
            let pads = len - p.input_ids.len();
            let mut ids = vec![pad; pads];
            ids.extend_from_slice(&p.input_ids);
            let mut mask = vec![false; pads];
            mask.extend(std::iter::repeat_n(true, p.input_ids.len()));
            b.image_mask.push(
                ids.iter()
                    .zip(&mask)
                    .map(|(id, m)| *m && *id == image)
                    .collect(),
            );
            b.input_ids.push(ids);
            b.attention_mask.push(mask);
        }
        b
    }

    /// Sequence length.
    pub fn len(&self) -> usize {
        self.input_ids.first().map_or(0, Vec::len)
    }

    /// Whether the batch has no positions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the model needs from a model directory's text and image files: the
/// tokenizer, the image preprocessing, the chat template and the number of image
/// tokens. Turns messages and images into a [`Prepared`] batch.
#[derive(Debug, Clone)]
pub struct Processor {
    tokenizer: TextTokenizer,
    images: ImageProcessor,
    template: Template,
    tokens_per_image: usize,
}

/// A prompt ready for the model: the (one-row) batch and the preprocessed images
/// in placeholder order.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Token ids and masks.
    pub batch: Batch,
    /// `[3, S, S]` normalised pixels per image.
    pub pixels: Vec<Vec<f32>>,
}

/// The processor files' sizes, where given, must be the vision encoder's:
/// the reference takes the placeholder count and the resize from these files
/// and fails when they disagree with the encoder.
fn check_sizes(dir: &Path, vision: &janus_und_encoder::SiglipConfig) -> Result<()> {
    let field = |file: &str, key: &str| -> Result<Option<u64>> {
        let path = dir.join(file);
        match crate::tokenizer::read_json(&path)?.and_then(|v| v.get(key).cloned()) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                PipelineError::Invalid(format!(
                    "{}: {key} is {v}, expected a non-negative integer",
                    path.display()
                ))
            }),
        }
    };
    let encoder = format!(
        "the vision encoder (vision_config: image_size {}, patch_size {})",
        vision.image_size, vision.patch_size
    );
    let file = |name: &str| dir.join(name).display().to_string();
    if let Some(n) = field("processor_config.json", "num_image_tokens")?
        && n != vision.num_patches() as u64
    {
        return Err(PipelineError::Invalid(format!(
            "{}: num_image_tokens is {n}, but {encoder} gives {} tokens per image",
            file("processor_config.json"),
            vision.num_patches()
        )));
    }
    if let Some(size) = field("preprocessor_config.json", "image_size")?
        && size != vision.image_size as u64
    {
        return Err(PipelineError::Invalid(format!(
            "{}: image_size is {size}, but {encoder} takes {}x{} images",
            file("preprocessor_config.json"),
            vision.image_size,
            vision.image_size
        )));
    }
    Ok(())
}

impl Processor {
    /// Reads `tokenizer*.json`, `special_tokens_map.json`, `processor_config.json`
    /// and `preprocessor_config.json` (defaults when absent) from `dir`. The
    /// template is `template`, else the one `janus convert` recorded in
    /// `processor_config.json` ([`crate::chat::TEMPLATE_KEY`]), else the one
    /// the checkpoint's name and tokenizer imply (`janus` for Janus-1.3B, `pro`
    /// otherwise); `name` is the model id or path the user gave.
    pub fn from_dir(
        dir: &Path,
        name: &str,
        vision: &janus_und_encoder::SiglipConfig,
        template: Option<Template>,
    ) -> Result<Self> {
        check_sizes(dir, vision)?;
        let images = ImageProcessor::from_dir(dir)?.with_size(vision.image_size);
        Self::with_images(dir, name, vision, template, images)
    }

    /// [`Processor::from_dir`] taking only the tokenizer's files from `dir`,
    /// the image preprocessing the reference's defaults at `vision`'s size:
    /// for a model of other sizes that borrows a tokenizer (random weights at
    /// real sizes with the tiny test tokenizer, `bench --serve`).
    pub fn with_tokenizer_of(
        dir: &Path,
        vision: &janus_und_encoder::SiglipConfig,
        template: Option<Template>,
    ) -> Result<Self> {
        let images = ImageProcessor::default().with_size(vision.image_size);
        Self::with_images(dir, &dir.display().to_string(), vision, template, images)
    }

    fn with_images(
        dir: &Path,
        name: &str,
        vision: &janus_und_encoder::SiglipConfig,
        template: Option<Template>,
        images: ImageProcessor,
    ) -> Result<Self> {
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let template = match template {
            Some(t) => t,
            None => {
                let pro_roles = tokenizer.token_to_id("<|User|>").is_some();
                Template::of_checkpoint(dir, name, pro_roles)?
            }
        };
        Ok(Self {
            tokenizer,
            images,
            template,
            tokens_per_image: vision.num_patches(),
        })
    }

    /// The text tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The image preprocessing (at the understanding encoder's size).
    pub fn image_processor(&self) -> &ImageProcessor {
        &self.images
    }

    /// The chat template.
    pub fn template(&self) -> Template {
        self.template
    }

    /// The understanding prompt of a conversation with `images` in placeholder
    /// order. Without any placeholder in the messages, one per image is put in
    /// front of the last user message.
    pub fn understanding(&self, messages: &[Message], images: &[RgbImage]) -> Result<Prepared> {
        self.understanding_with(messages, images, SYSTEM_PROMPT)
    }

    /// [`Processor::understanding`] with another system prompt (empty: none).
    pub fn understanding_with(
        &self,
        messages: &[Message],
        images: &[RgbImage],
        system: &str,
    ) -> Result<Prepared> {
        let prompt = self.understanding_prompt(messages, images.len(), system)?;
        let ids = self.tokenizer.ids;
        Ok(Prepared {
            batch: Batch::new(&[prompt], ids.pad, ids.image),
            pixels: images.iter().map(|i| self.images.preprocess(i)).collect(),
        })
    }

    /// The prompt length, in positions, of [`Processor::understanding_with`]
    /// for `images` images, known before any image is decoded; an error
    /// ([`PipelineError::Context`]) when it leaves no position of a
    /// `context` for the answer. Text that must take more tokens than the
    /// context is refused before it is encoded.
    pub fn understanding_len_within(
        &self,
        messages: &[Message],
        images: usize,
        system: &str,
        context: usize,
    ) -> Result<usize> {
        // The template trims each message; each takes at least its role's
        // token, each image its positions.
        let bytes = messages
            .iter()
            .map(|m| m.content.trim().len())
            .sum::<usize>()
            + system.trim().len();
        self.encodable(
            bytes,
            messages.len() + images * self.tokens_per_image,
            context,
        )?;
        let len = self
            .understanding_prompt(messages, images, system)?
            .input_ids
            .len();
        crate::janus::answer_context_fits(len, context)?;
        Ok(len)
    }

    /// Refuses a prompt of `bytes` bytes of text and at least `more` other
    /// tokens (roles, image positions) that takes at least `limit` tokens
    /// ([`TextTokenizer::min_tokens`]), before any encoding.
    fn encodable(&self, bytes: usize, more: usize, limit: usize) -> Result<()> {
        let at_least = self.tokenizer.min_tokens(bytes).saturating_add(more);
        if at_least >= limit {
            return Err(PipelineError::Context(format!(
                "the prompt ({bytes} bytes of text, {more} tokens of roles and images) takes \
                 at least {at_least} tokens: over the model's context \
                 (language_config.max_position_embeddings) of {limit}"
            )));
        }
        Ok(())
    }

    /// The tokenised understanding prompt for `images` images.
    fn understanding_prompt(
        &self,
        messages: &[Message],
        images: usize,
        system: &str,
    ) -> Result<PreparedPrompt> {
        let tag = &self.tokenizer.image_tag;
        let mut messages = messages.to_vec();
        let placeholders: usize = messages
            .iter()
            .map(|m| m.content.matches(tag.as_str()).count())
            .sum();
        if placeholders == 0 && images > 0 {
            let last_user = messages
                .iter()
                .rposition(|m| !m.role.to_ascii_lowercase().contains("assistant"))
                .ok_or_else(|| {
                    PipelineError::Prompt("images were given but there is no user message".into())
                })?;
            let m = &mut messages[last_user];
            m.content = place_images(&m.content, images, tag)?;
        }
        let text = understanding_prompt_with(&messages, self.template, system);
        let prompt = PreparedPrompt::new(&self.tokenizer, &text, self.tokens_per_image)?;
        prompt.expect_images(images)?;
        Ok(prompt)
    }

    /// The token ids of an image-generation prompt (BOS first, BOI last).
    pub fn generation_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(&generation_prompt(prompt, self.template, BOI_TAG))
    }

    /// [`Processor::generation_prompt`], refused
    /// ([`PipelineError::Context`]) when it and an image's `steps` tokens do
    /// not fit a `context` of positions; text that must take more tokens than
    /// that is refused before it is encoded.
    pub fn generation_prompt_within(
        &self,
        prompt: &str,
        steps: usize,
        context: usize,
    ) -> Result<Vec<u32>> {
        // The image's tokens count with the prompt's (a context they fill
        // was named as a context "of 0").
        self.encodable(prompt.trim().len(), steps, context)?;
        let ids = self.generation_prompt(prompt)?;
        crate::janus::image_context_fits(ids.len(), steps, context)?;
        Ok(ids)
    }
}
