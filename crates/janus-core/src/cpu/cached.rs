//! Kernels for attention over a preallocated KV cache on the CPU backend
//! (burn-flex): write new keys/values into the cache buffer in place, and attend
//! from a few queries (decode and image-generation steps) straight out of the
//! cache, without copying it to a contiguous tensor every step. The layer API in
//! [`crate::nn`] falls back to Burn's generic ops where these decline.

use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use half::{bf16, f16};
use rayon::prelude::*;

use super::simd::{self, Kernel, Lanes, Level, Load};
use super::{Elem, from_flex, host_f32, is_dense, to_flex};

/// Writes `new [B, H, T, D]` into `cache [B, H, cap, D]` at positions `at..at+T`
/// in place; gives both back when the buffer is shared or not a flex tensor.
#[allow(clippy::type_complexity)]
pub(crate) fn write_rows<B: Backend>(
    cache: Tensor<B, 4>,
    new: Tensor<B, 4>,
    at: usize,
) -> Result<Tensor<B, 4>, (Tensor<B, 4>, Tensor<B, 4>)> {
    let [b, h, t, d] = new.dims();
    let cap = cache.dims()[2];
    let mut c = match to_flex(cache) {
        Ok(c) => c,
        Err(cache) => return Err((cache, new)),
    };
    let n = to_flex(new).expect("same backend").to_contiguous();
    if !is_dense(&c) || c.dtype() != n.dtype() || !c.is_unique() {
        return Err((from_flex(c), from_flex(n)));
    }
    fn copy<E: Elem>(
        c: &mut FlexTensor,
        n: &FlexTensor,
        bh: usize,
        cap: usize,
        t: usize,
        d: usize,
        at: usize,
    ) {
        let src = n.storage::<E>();
        let dst = c.storage_mut::<E>();
        for i in 0..bh {
            dst[(i * cap + at) * d..(i * cap + at + t) * d]
                .copy_from_slice(&src[i * t * d..(i + 1) * t * d]);
        }
    }
    match c.dtype() {
        DType::F32 => copy::<f32>(&mut c, &n, b * h, cap, t, d, at),
        DType::F16 => copy::<f16>(&mut c, &n, b * h, cap, t, d, at),
        DType::BF16 => copy::<bf16>(&mut c, &n, b * h, cap, t, d, at),
        _ => return Err((from_flex(c), from_flex(n))),
    }
    Ok(from_flex(c))
}

/// Causal attention of `q [B, H, Tq, D]` over the first `len` cached positions of
/// `k`/`v [B, KvH, cap, D]` (`H` a multiple of `KvH`), the queries being the last
/// `Tq` of those positions. `keep[b][j] == false` hides key `j` of row `b` (left
/// padding) except from itself. Returns `None` when no fast path applies.
pub(crate) fn attend_cached<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    len: usize,
    keep: Option<&[Vec<bool>]>,
    scale: f64,
) -> Option<Tensor<B, 4>> {
    attend_cached_at(simd::level(), q, k, v, len, keep, scale)
}

/// [`attend_cached`] at a given SIMD level.
fn attend_cached_at<B: Backend>(
    level: Level,
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    len: usize,
    keep: Option<&[Vec<bool>]>,
    scale: f64,
) -> Option<Tensor<B, 4>> {
    let [b, h, tq, d] = q.dims();
    let [_, kvh, cap, _] = k.dims();
    if tq > 8 || len > cap || h % kvh != 0 {
        return None;
    }
    let device = q.device();
    let dtype = q.dtype();
    let (kf, vf) = (to_flex(k.clone()).ok()?, to_flex(v.clone()).ok()?);
    if !is_dense(&kf) || !is_dense(&vf) || kf.dtype() != vf.dtype() {
        return None;
    }
    let qv = host_f32(q)?;
    let out = match kf.dtype() {
        DType::F32 => kernel::<f32>(
            level,
            &qv,
            kf.storage(),
            vf.storage(),
            [b, h, tq, d],
            kvh,
            cap,
            len,
            keep,
            scale as f32,
        ),
        DType::F16 => kernel::<f16>(
            level,
            &qv,
            kf.storage(),
            vf.storage(),
            [b, h, tq, d],
            kvh,
            cap,
            len,
            keep,
            scale as f32,
        ),
        DType::BF16 => kernel::<bf16>(
            level,
            &qv,
            kf.storage(),
            vf.storage(),
            [b, h, tq, d],
            kvh,
            cap,
            len,
            keep,
            scale as f32,
        ),
        _ => return None,
    };
    Some(crate::host::from_f32_vec(
        out,
        [b, h, tq, d],
        &device,
        dtype,
    ))
}

#[allow(clippy::too_many_arguments)]
fn kernel<E: Elem + Load + Into<f32>>(
    level: Level,
    q: &[f32],
    k: &[E],
    v: &[E],
    [b, h, tq, d]: [usize; 4],
    kvh: usize,
    cap: usize,
    len: usize,
    keep: Option<&[Vec<bool>]>,
    scale: f32,
) -> Vec<f32> {
    let group = h / kvh;
    let mut out = vec![0f32; b * h * tq * d];
    out.par_chunks_mut(tq * d).enumerate().for_each(|(bh, o)| {
        let (bi, hi) = (bh / h, bh % h);
        let base = (bi * kvh + hi / group) * cap * d;
        simd::dispatch_at(
            level,
            Head {
                q: &q[bh * tq * d..(bh + 1) * tq * d],
                k: &k[base..base + len * d],
                v: &v[base..base + len * d],
                o,
                d,
                keep: keep.map(|rows| rows[bi].as_slice()),
                scale,
            },
        )
    });
    out
}

/// One head of one row: `tq` queries over `len` keys, read as stored (f16/bf16
/// keys and values widen in registers).
struct Head<'a, E> {
    q: &'a [f32],
    k: &'a [E],
    v: &'a [E],
    o: &'a mut [f32],
    d: usize,
    keep: Option<&'a [bool]>,
    scale: f32,
}

impl<E: Load + Into<f32>> Kernel for Head<'_, E> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self {
            q,
            k,
            v,
            o,
            d,
            keep,
            scale,
        } = self;
        let (len, tq) = (k.len() / d, q.len() / d);
        let mut scores = vec![0f32; len];
        for i in 0..tq {
            let qpos = len - tq + i;
            let qi = &q[i * d..(i + 1) * d];
            let visible = |j: usize| keep.is_none_or(|keep| keep[j] || j == qpos);
            // A batch's row hides its left padding, a prefix of the keys: the
            // softmax starts at its first visible key, so its sums group the
            // keys into lanes as when the row runs alone (the same bits
            // whatever it is batched with; grouped from position 0, a 16-bit
            // model's answers drifted apart after a few dozen tokens).
            let first = (0..qpos).find(|&j| visible(j)).unwrap_or(qpos);
            let mut max = f32::NEG_INFINITY;
            for (j, sc) in scores.iter_mut().enumerate().take(qpos + 1).skip(first) {
                prefetch_row(s, k, (j + AHEAD) * d, d);
                *sc = if visible(j) {
                    simd::dot(s, qi, &k[j * d..(j + 1) * d]) * scale
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(*sc);
            }
            // exp(score - max) a vector at a time; keys hidden after the
            // first visible one (-inf) then hold a value near zero that the
            // loop below skips (and that moves the sum by less than 1e-35).
            let probs = &mut scores[first..qpos + 1];
            let sum = super::vmath::exp_sub_sum_lanes(s, probs, max);
            let oi = &mut o[i * d..(i + 1) * d];
            for (j, &p) in (first..).zip(probs.iter()) {
                prefetch_row(s, v, (j + AHEAD) * d, d);
                if !visible(j) {
                    continue;
                }
                simd::axpy(s, p, &v[j * d..(j + 1) * d], oi);
            }
            simd::scale(s, 1.0 / sum, oi);
        }
    }
}

/// Rows ahead of the one in use that the attention loops fetch: the cache is
/// cold (the weights streamed through since the last step), and two streams
/// per core do not keep enough reads in flight on their own. 16 rows (4 KB of
/// f16 keys at 128 dims) read the cache 4-7 % faster than 8 on an AVX-512
/// Xeon, at one and eight rows of queries and both vector widths; 32 and 64
/// no faster than 16.
const AHEAD: usize = 16;

/// A hint to fetch the `d` values of `rows` from `at` (every cache line; never
/// faults, even past the end).
#[inline(always)]
fn prefetch_row<S: Lanes, E>(s: S, rows: &[E], at: usize, d: usize) {
    let p = rows.as_ptr().wrapping_add(at).cast::<u8>();
    let bytes = d * std::mem::size_of::<E>();
    let mut off = 0;
    while off < bytes {
        s.prefetch(p.wrapping_add(off));
        off += 64;
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Bool, Distribution};

    use burn::backend::Flex;

    use super::*;
    use crate::nn::{AttentionMask, scaled_dot_product_attention};

    #[test]
    fn cached_kernel_matches_generic_attention_with_gqa_and_padding() {
        let dev = Default::default();
        // d = 20: whole vectors and a tail at every lane count.
        let (b, h, kvh, d, cap, len, tq) = (2, 4, 2, 20, 12, 9, 2);
        let rnd = |shape: [usize; 4]| {
            Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &dev)
        };
        let (q, k, v) = (
            rnd([b, h, tq, d]),
            rnd([b, kvh, cap, d]),
            rnd([b, kvh, cap, d]),
        );
        let mut padded = vec![true; len];
        padded[..2].fill(false);
        let keep = vec![vec![true; len], padded];
        let scale = 0.25;
        let rep = |x: Tensor<Flex, 4>| {
            x.slice([0..b, 0..kvh, 0..len, 0..d])
                .unsqueeze_dim::<5>(2)
                .expand([b, kvh, h / kvh, len, d])
                .reshape([b, h, len, d])
        };
        let mask: Vec<bool> = (0..b)
            .flat_map(|bi| {
                let keep = &keep;
                (0..tq).flat_map(move |i| (0..len).map(move |j| !keep[bi][j] && j != len - tq + i))
            })
            .collect();
        let mask = Tensor::<Flex, 4, Bool>::from_data(TensorData::new(mask, [b, 1, tq, len]), &dev);
        for &level in Level::available() {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let (kq, vq) = (k.clone().cast(dtype), v.clone().cast(dtype));
                let fast = attend_cached_at(level, &q, &kq, &vq, len, Some(&keep), scale)
                    .expect("fast path");
                let slow = scaled_dot_product_attention(
                    q.clone(),
                    rep(kq.cast(DType::F32)),
                    rep(vq.cast(DType::F32)),
                    AttentionMask::CausalAndPadding(mask.clone()),
                    scale,
                );
                let diff: f32 = (fast - slow).abs().max().into_scalar();
                assert!(diff < 1e-5, "{level} {dtype:?}: max difference {diff}");
            }
        }
    }

    #[test]
    fn a_left_padded_row_gives_the_bits_it_gives_alone() {
        let dev = Default::default();
        // 37 keys and 2 queries alone, then behind 1..=17 hidden keys (every
        // offset against 4, 8 and 16 lanes): the same output bits.
        let (h, d, len, tq) = (2, 24, 37, 2);
        let rnd = |shape: [usize; 4]| {
            Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 2.0), &dev)
        };
        let (q, k, v) = (rnd([1, h, tq, d]), rnd([1, h, len, d]), rnd([1, h, len, d]));
        for &level in Level::available() {
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let (kq, vq) = (k.clone().cast(dtype), v.clone().cast(dtype));
                let alone = attend_cached_at(level, &q, &kq, &vq, len, None, 0.3)
                    .expect("fast path")
                    .into_data();
                for pad in 1..=17 {
                    let junk = rnd([1, h, pad, d]).cast(dtype);
                    let kp = Tensor::cat(vec![junk.clone(), kq.clone()], 2);
                    let vp = Tensor::cat(vec![junk, vq.clone()], 2);
                    let mut keep = vec![true; pad + len];
                    keep[..pad].fill(false);
                    let padded =
                        attend_cached_at(level, &q, &kp, &vp, pad + len, Some(&[keep]), 0.3)
                            .expect("fast path")
                            .into_data();
                    assert_eq!(
                        padded.as_slice::<f32>().unwrap(),
                        alone.as_slice::<f32>().unwrap(),
                        "{level} {dtype:?} behind {pad} hidden keys"
                    );
                }
            }
        }
    }

    #[test]
    fn write_rows_writes_in_place_at_the_offset() {
        let dev = Default::default();
        let cache = Tensor::<Flex, 4>::zeros([1, 2, 5, 3], &dev);
        let new = Tensor::<Flex, 4>::ones([1, 2, 2, 3], &dev);
        let out = crate::nn::write_rows(cache, new, 3);
        let v = out.into_data().into_vec::<f32>().unwrap();
        for (i, x) in v.iter().enumerate() {
            let pos = (i / 3) % 5;
            assert_eq!(*x, if pos >= 3 { 1.0 } else { 0.0 }, "index {i}");
        }
    }
}
