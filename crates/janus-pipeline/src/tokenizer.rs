//! The Janus tokenizer: `tokenizer.json` (plus added tokens that only
//! `tokenizer_config.json` lists, as Janus-1.3B ships them), BOS handling as
//! `LlamaTokenizerFast`, and every special id looked up by its string.

use std::path::Path;

use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

use crate::{PipelineError, Result};

/// Image-start tag of the reference processor.
pub const BOI_TAG: &str = "<begin_of_image>";
/// Image-end tag of the reference processor.
pub const EOI_TAG: &str = "<end_of_image>";
/// Default image placeholder (overridden by `processor_config.json`'s `image_tag`).
pub const IMAGE_TAG: &str = "<image_placeholder>";
/// Default pad token (overridden by `special_tokens_map.json`'s `pad_token`).
pub const PAD_TAG: &str = "<｜▁pad▁｜>";
/// Default BOS / EOS strings of the DeepSeek tokenizer.
const BOS_TAG: &str = "<｜begin▁of▁sentence｜>";
const EOS_TAG: &str = "<｜end▁of▁sentence｜>";

/// Ids of the tokens the pipeline needs, read from the tokenizer files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Beginning of sentence.
    pub bos: u32,
    /// End of sentence (the text stop token).
    pub eos: u32,
    /// Padding (left padding, and the filler of the unconditional CFG prompt).
    pub pad: u32,
    /// `<begin_of_image>`.
    pub boi: u32,
    /// `<end_of_image>`.
    pub eoi: u32,
    /// `<image_placeholder>`.
    pub image: u32,
}

/// Tokenizer plus the special ids and strings of a Janus checkpoint.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Special ids.
    pub ids: SpecialIds,
    /// The image placeholder string.
    pub image_tag: String,
    /// The EOS string (the separator after assistant turns).
    pub eos_tag: String,
    /// The most text bytes one token can stand for, where that bounds a
    /// text's token count from below ([`TextTokenizer::min_tokens`]).
    max_token_bytes: Option<usize>,
}

/// A side file's JSON, `None` when it is absent; one that is there but not a
/// regular file (a directory, a FIFO, a link to a device) is an error, not
/// taken as absent.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    regular_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| janus_core::Error::io(path, e))?;
    serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
        .map(Some)
        .map_err(|e| PipelineError::Tokenizer(format!("{} is not valid JSON: {e}", path.display())))
}

/// The longest token's UTF-8 length: no token stands for more bytes of text
/// (byte-level vocabularies spell each byte as one character of one or two
/// bytes; SentencePiece ones spell a space as a three-byte `▁`). `None`
/// where a normalizer or a pre-tokenizer that removes text or splits on
/// whitespace could make text shrink before the vocabulary applies.
fn max_token_bytes(t: &Tokenizer) -> Option<usize> {
    if t.get_normalizer().is_some() {
        return None;
    }
    if let Some(p) = t.get_pre_tokenizer() {
        let spec = serde_json::to_string(p).ok()?;
        if [
            "Removed",
            "Whitespace",
            "Bert",
            "CharDelimiter",
            "Punctuation",
        ]
        .iter()
        .any(|w| spec.contains(w))
        {
            return None;
        }
    }
    t.get_vocab(true)
        .keys()
        .map(String::len)
        .max()
        .filter(|m| *m > 0)
}

/// Refuses a `path` that is not a regular file (reading a FIFO would wait
/// for a writer, a device could never end).
pub(crate) fn regular_file(path: &Path) -> Result<()> {
    if !path.is_file() {
        return Err(PipelineError::Invalid(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(())
}

/// A token field that is either a string or `{"content": ...}`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` and
    /// `processor_config.json` from a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(PipelineError::Tokenizer(format!(
                "tokenizer file {} is missing",
                path.display()
            )));
        }
        regular_file(&path)?;
        let text = std::fs::read_to_string(&path).map_err(|e| janus_core::Error::io(&path, e))?;
        // A byte-order mark, as some editors save JSON, is not JSON.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut inner: Tokenizer = text.parse().map_err(|e| {
            PipelineError::Tokenizer(format!("cannot load {}: {e}", path.display()))
        })?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let map = read_json(&dir.join("special_tokens_map.json"))?;
        let processor = read_json(&dir.join("processor_config.json"))?;

        // Added tokens that only tokenizer_config.json lists (Janus-1.3B).
        if let Some(decoder) = config
            .as_ref()
            .and_then(|c| c.get("added_tokens_decoder"))
            .and_then(Value::as_object)
        {
            let mut entries: Vec<(u32, String, bool)> = decoder
                .iter()
                .filter_map(|(id, v)| {
                    Some((
                        id.parse().ok()?,
                        v.get("content")?.as_str()?.to_string(),
                        v.get("special").and_then(Value::as_bool).unwrap_or(true),
                    ))
                })
                .collect();
            entries.sort();
            entries.retain(|(id, content, _)| inner.token_to_id(content) != Some(*id));
            // In one call: each call rebuilds the added tokens' matcher (one
            // call per token took 98 s for 16000 of them).
            let added: Vec<AddedToken> = entries
                .iter()
                .map(|(_, content, special)| AddedToken::from(content.clone(), *special))
                .collect();
            inner.add_tokens(&added);
            for (id, content, _) in entries {
                if inner.token_to_id(&content) != Some(id) {
                    return Err(PipelineError::Tokenizer(format!(
                        "tokenizer_config.json maps `{content}` to id {id}, but tokenizer.json cannot give it that id"
                    )));
                }
            }
        }

        let pick = |key: &str, default: &str| {
            token_string(config.as_ref().and_then(|c| c.get(key)))
                .or_else(|| token_string(map.as_ref().and_then(|m| m.get(key))))
                .unwrap_or_else(|| default.to_string())
        };
        let bos_tag = pick("bos_token", BOS_TAG);
        let eos_tag = pick("eos_token", EOS_TAG);
        let pad_tag = token_string(map.as_ref().and_then(|m| m.get("pad_token")))
            .or_else(|| token_string(config.as_ref().and_then(|c| c.get("pad_token"))))
            .unwrap_or_else(|| PAD_TAG.to_string());
        let image_tag = processor
            .as_ref()
            .and_then(|p| p.get("image_tag"))
            .and_then(Value::as_str)
            .unwrap_or(IMAGE_TAG)
            .to_string();
        // Janus-1.3B adds its pad and image tokens in tokenizer_config.json.
        let hint = if config.is_none() {
            format!(
                " (nor in {}, which is missing: Janus-1.3B adds its special tokens there)",
                dir.join("tokenizer_config.json").display()
            )
        } else {
            String::new()
        };
        let id = |tag: &str| {
            inner.token_to_id(tag).ok_or_else(|| {
                PipelineError::Tokenizer(format!(
                    "special token `{tag}` is not in {}{hint}",
                    path.display()
                ))
            })
        };
        let ids = SpecialIds {
            bos: id(&bos_tag)?,
            eos: id(&eos_tag)?,
            pad: id(&pad_tag)?,
            boi: id(BOI_TAG)?,
            eoi: id(EOI_TAG)?,
            image: id(&image_tag)?,
        };
        let max_token_bytes = max_token_bytes(&inner);
        Ok(Self {
            inner,
            ids,
            image_tag,
            eos_tag,
            max_token_bytes,
        })
    }

    /// Tokens that text of `bytes` bytes takes at least (0 when the
    /// tokenizer's normalizer or pre-tokenizer could drop text): found
    /// without encoding it, so a prompt far past the context is refused
    /// before the encoder spends a few hundred bytes per byte on it.
    pub fn min_tokens(&self, bytes: usize) -> usize {
        self.max_token_bytes.map_or(0, |m| bytes.div_ceil(m))
    }

    /// Encodes text like `LlamaTokenizerFast.encode`: exactly one leading BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| PipelineError::Tokenizer(format!("cannot encode text: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if ids.first() != Some(&self.ids.bos) {
            ids.insert(0, self.ids.bos);
        }
        Ok(ids)
    }

    /// Encodes text without adding BOS.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| PipelineError::Tokenizer(format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids, dropping ids the tokenizer does not know (the LLM vocab can be
    /// larger) and, with `skip_special`, every special token.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|id| self.inner.id_to_token(*id).is_some())
            .collect();
        self.inner.decode(&known, skip_special).unwrap_or_default()
    }

    /// The token string of `id`, if known.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string, if known.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens including added ones.
    pub fn len(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The highest id the tokenizer can produce and its token, if any.
    pub fn max_id(&self) -> Option<(u32, String)> {
        self.inner
            .get_vocab(true)
            .into_iter()
            .max_by_key(|(_, id)| *id)
            .map(|(token, id)| (id, token))
    }

    /// Checks that every id the tokenizer can produce has a row in a language
    /// model embedding of `vocab_size` rows (`language_config.vocab_size`):
    /// an id past it would index out of the embedding.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        match self.max_id() {
            Some((id, token)) if id as usize >= vocab_size => {
                Err(PipelineError::Tokenizer(format!(
                    "the tokenizer has token `{token}` at id {id}, but the language model has only \
                 {vocab_size} token rows (language_config.vocab_size): the tokenizer files do not \
                 belong to this model's weights"
                )))
            }
            _ => Ok(()),
        }
    }
}
