//! Scaled dot-product attention, dense or over a KV cache, with the CPU kernels
//! behind it.

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

/// Causal attention of `q [B, H, Tq, D]` over the first `len` positions of the
/// cache buffers `k`/`v [B, KvH, cap, D]` (grouped-query when `KvH < H`), the
/// queries being the last `Tq` of those positions. `keep[b][j] == false` hides
/// key `j` of row `b` (left padding) except from itself; `mask` says the same
/// for the generic path.
pub fn cached_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    len: usize,
    keep: Option<&[Vec<bool>]>,
    mask: AttentionMask<B>,
    scale: f64,
) -> Tensor<B, 4> {
    if let Some(out) = crate::cpu::attend_cached(&q, &k, &v, len, keep, scale) {
        return out;
    }
    let [b, h, _, _] = q.dims();
    let [_, kvh, _, d] = k.dims();
    let valid = |x: Tensor<B, 4>| {
        let x = x.slice([0..b, 0..kvh, 0..len, 0..d]);
        let rep = h / kvh;
        if rep == 1 {
            return x;
        }
        x.unsqueeze_dim::<5>(2)
            .expand([b, kvh, rep, len, d])
            .reshape([b, h, len, d])
    };
    scaled_dot_product_attention(q, valid(k), valid(v), mask, scale)
}

/// Writes `new [B, H, T, D]` into `cache [B, H, cap, D]` at positions
/// `at..at+T` (in place on the CPU when the buffer is not shared).
pub fn write_rows<B: Backend>(cache: Tensor<B, 4>, new: Tensor<B, 4>, at: usize) -> Tensor<B, 4> {
    match crate::cpu::write_rows(cache, new, at) {
        Ok(out) => out,
        Err((cache, new)) => {
            let [b, h, t, d] = new.dims();
            cache.slice_assign([0..b, 0..h, at..at + t, 0..d], new)
        }
    }
}
