//! Prompt ids with image slots: placeholder expansion (`BOI + N x image + EOI`)
//! and left-padded batching, as `VLChatProcessor` does.

use crate::tokenizer::JanusTokenizer;
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
    pub fn new(tokenizer: &JanusTokenizer, text: &str, tokens_per_image: usize) -> Result<Self> {
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
