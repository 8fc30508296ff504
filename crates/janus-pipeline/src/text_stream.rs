//! Incremental detokenisation: text deltas as tokens arrive, in O(n) overall.
//!
//! Each new token decodes a short window (the tokens since the last emitted
//! text plus the new ones), never the whole answer. Text that ends in an
//! incomplete UTF-8 sequence (a byte-level token that is half of a character)
//! is held back until it completes; [`TextStream::finish`] flushes the rest, so
//! the concatenated deltas equal [`TextTokenizer::decode`] of all tokens.

use crate::tokenizer::TextTokenizer;

/// Turns a stream of token ids into text deltas.
#[derive(Debug, Clone)]
pub struct TextStream<'t> {
    tokenizer: &'t TextTokenizer,
    ids: Vec<u32>,
    /// Start of the decode window: the tokens before it are fully emitted.
    prev: usize,
    /// End of the emitted part of the window.
    cur: usize,
    emitted: usize,
}

impl<'t> TextStream<'t> {
    /// An empty stream decoding with `tokenizer` (special tokens skipped).
    pub fn new(tokenizer: &'t TextTokenizer) -> Self {
        Self {
            tokenizer,
            ids: Vec::new(),
            prev: 0,
            cur: 0,
            emitted: 0,
        }
    }

    /// Adds `id`; returns the text it completes (empty while a character is
    /// incomplete or for special tokens).
    pub fn push(&mut self, id: u32) -> String {
        let before = self.tokenizer.decode(&self.ids[self.prev..self.cur], true);
        self.ids.push(id);
        let after = self.tokenizer.decode(&self.ids[self.prev..], true);
        if after.len() > before.len()
            && after.starts_with(&before)
            && !after.ends_with(char::REPLACEMENT_CHARACTER)
        {
            self.prev = self.cur;
            self.cur = self.ids.len();
            let delta = after[before.len()..].to_string();
            self.emitted += delta.len();
            delta
        } else {
            String::new()
        }
    }

    /// Whatever text is still held back; afterwards the emitted deltas add up to
    /// the decode of every token pushed.
    pub fn finish(&mut self) -> String {
        let full = self.tokenizer.decode(&self.ids, true);
        let rest = full.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = full.len();
        self.prev = self.ids.len();
        self.cur = self.ids.len();
        rest
    }

    /// Every token pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
