use burn::prelude::*;
use burn::tensor::Bool;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// Which keys each query may see.
#[derive(Debug, Clone)]
pub enum AttentionMask<B: Backend> {
    /// Every query sees every key (ViT, VQ attention).
    None,
    /// Query `i` sees keys `0..=offset+i` where `offset = keys - queries`
    /// (bottom-right aligned, so it also holds with a KV cache).
    Causal,
    /// Causal, and additionally the keys marked `true` in this `[B, 1, Tq, Tk]`
    /// mask are hidden (left padding).
    CausalAndPadding(Tensor<B, 4, Bool>),
}

/// `softmax(q k^T * scale) v` for `q [B, H, Tq, D]`, `k`/`v [B, H, Tk, D]`.
/// Softmax runs in f32 on every backend that supports it.
pub fn scaled_dot_product_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    mask: AttentionMask<B>,
    scale: f64,
) -> Tensor<B, 4> {
    let [b, h, tq, _] = q.dims();
    let tk = k.dims()[2];
    let causal = match mask {
        AttentionMask::None => Some(false),
        AttentionMask::Causal => Some(true),
        AttentionMask::CausalAndPadding(_) => None,
    };
    if let Some(causal) = causal
        && let Some(out) = crate::cpu::attention(&q, &k, &v, causal, scale as f32)
    {
        return out;
    }
    let (is_causal, mask) = match mask {
        AttentionMask::None => (false, None),
        AttentionMask::Causal => (tq > 1, None),
        AttentionMask::CausalAndPadding(m) => (tq > 1, Some(m.expand([b, h, tq, tk]))),
    };
    attention(
        q,
        k,
        v,
        mask,
        None,
        AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal,
        },
    )
}
