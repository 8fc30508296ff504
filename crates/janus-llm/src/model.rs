//! [`Llama`]: embedding, decoder layers, final norm and `lm_head`.

use burn::prelude::*;
use burn::tensor::{Bool, TensorData};
use janus_core::nn::{AttentionMask, Embedding, Linear, RmsNorm};
use janus_core::{Result, Weights};

use crate::KvCache;
use crate::config::LlamaConfig;
use crate::layer::DecoderLayer;
use crate::rope::Rope;

/// The Llama language model of Janus (`language_model.*` in the checkpoint):
/// token embedding, decoder layers, final RMSNorm and the untied `lm_head`.
#[derive(Debug, Clone)]
pub struct Llama<B: Backend> {
    /// `model.embed_tokens`.
    pub embed_tokens: Embedding<B>,
    /// `model.layers.N`.
    pub layers: Vec<DecoderLayer<B>>,
    /// `model.norm`.
    pub norm: RmsNorm<B>,
    /// `lm_head` (untied from the embedding); `None` when loaded without it
    /// ([`Llama::load_without_head`]).
    pub lm_head: Option<Linear<B>>,
    rope: Rope,
    config: LlamaConfig,
}

impl<B: Backend> Llama<B> {
    /// Loads `model.embed_tokens`, `model.layers.N.*`, `model.norm` and `lm_head`
    /// under `w` (`language_model` in a Janus checkpoint).
    pub fn load(w: &Weights<B>, config: &LlamaConfig) -> Result<Self> {
        Self::load_parts(w, config, true)
    }

    /// [`Llama::load`] without `lm_head` (Janus image generation never uses
    /// it; on Janus-Pro-7B it is 0.4 billion weights). The caller accounts for
    /// the `lm_head.*` keys left unread.
    pub fn load_without_head(w: &Weights<B>, config: &LlamaConfig) -> Result<Self> {
        Self::load_parts(w, config, false)
    }

    fn load_parts(w: &Weights<B>, config: &LlamaConfig, head: bool) -> Result<Self> {
        let c = config;
        let m = w.pp("model");
        let layers = m.pp("layers");
        Ok(Self {
            embed_tokens: Embedding::load(&m.pp("embed_tokens"), c.vocab_size, c.hidden_size)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| DecoderLayer::load(&layers.pp(i), c))
                .collect::<Result<_>>()?,
            norm: RmsNorm::load(&m.pp("norm"), c.hidden_size, c.rms_norm_eps)?,
            lm_head: head
                .then(|| {
                    Linear::load_quantizable(&w.pp("lm_head"), c.hidden_size, c.vocab_size, false)
                })
                .transpose()?,
            rope: Rope::new(c.head_dim, c.rope_theta),
            config: c.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// An empty KV cache for `batch` rows with room for `capacity` positions.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache<B> {
        KvCache::new(self.layers.len(), batch, capacity)
    }

    /// Token ids `[B, T]` to embeddings `[B, T, H]`.
    pub fn embed(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embed_tokens.forward(ids)
    }

    /// Runs the decoder on `embeds [B, T, H]` after what `cache` holds, appends the new
    /// keys and values to it, and returns the final-normed hidden states `[B, T, H]`.
    ///
    /// `padding` flags the new positions (`B*T`, row-major): `true` for real tokens,
    /// `false` for left padding. `None` means all real. Positions follow HF:
    /// `cumsum(mask) - 1`, continuing from the cache; padded keys are masked.
    ///
    /// # Panics
    /// If the batch differs from the cache's or `padding` has the wrong length.
    pub fn forward(
        &self,
        embeds: Tensor<B, 3>,
        padding: Option<&[bool]>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = embeds.dims();
        assert_eq!(
            b,
            cache.batch(),
            "batch of {b} rows but the cache was made for {}",
            cache.batch()
        );
        let all_real;
        let flags = match padding {
            Some(f) => {
                assert_eq!(f.len(), b * t, "padding flags must cover B*T positions");
                f
            }
            None => {
                all_real = vec![true; b * t];
                &all_real
            }
        };
        let device = embeds.device();
        let positions = cache.push_positions(flags, t);
        let (cos, sin) = self
            .rope
            .tables::<B>(&positions, b, &device, embeds.dtype());
        let mask = self.mask(cache, b, t, &device);
        let mut x = embeds;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, (&cos, &sin), &mask, cache, i);
        }
        cache.advance(t);
        self.norm.forward(x)
    }

    fn mask(&self, cache: &KvCache<B>, b: usize, t: usize, device: &B::Device) -> AttentionMask<B> {
        if !cache.has_padding() {
            return AttentionMask::Causal;
        }
        let tk = cache.len() + t;
        let mut m = Vec::with_capacity(b * t * tk);
        for row in cache.real_tokens() {
            for i in 0..t {
                // A padded query may still see itself, so no softmax row is empty.
                m.extend((0..tk).map(|j| !row[j] && j != tk - t + i));
            }
        }
        AttentionMask::CausalAndPadding(Tensor::<B, 4, Bool>::from_data(
            TensorData::new(m, [b, 1, t, tk]),
            device,
        ))
    }

    /// Text logits `[B, T, vocab]` from final hidden states.
    ///
    /// # Panics
    /// If the model was loaded without `lm_head` (a caller bug: such a model
    /// is for image generation only).
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        self.lm_head
            .as_ref()
            .expect("this Llama was loaded without lm_head (image generation only)")
            .forward(hidden)
    }
}
