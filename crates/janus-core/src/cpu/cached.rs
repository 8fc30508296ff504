//! Kernels for attention over a preallocated KV cache on the CPU backend
//! (burn-flex): write new keys/values into the cache buffer in place, and attend
//! from a few queries (decode and image-generation steps) straight out of the
//! cache, without copying it to a contiguous tensor every step. The layer API in
//! [`crate::nn`] falls back to Burn's generic ops where these decline.

use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use rayon::prelude::*;

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
    Some(Tensor::from_data(
        TensorData::new(out, [b, h, tq, d]),
        (&device, dtype),
    ))
}

fn dot(q: &[f32], k: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (qc, kc) = (q.chunks_exact(8), k.chunks_exact(8));
    let (qr, kr) = (qc.remainder(), kc.remainder());
    for (a, b) in qc.zip(kc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (a, b) in qr.iter().zip(kr) {
        s += a * b;
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn kernel<E: Elem>(
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
        let (ks, vs) = (&k[base..base + len * d], &v[base..base + len * d]);
        // One key or value row as f32 (converted in L1, not the whole cache).
        let mut row = vec![0f32; d];
        let mut scores = vec![0f32; len];
        for i in 0..tq {
            let qpos = len - tq + i;
            let qi = &q[(bh * tq + i) * d..(bh * tq + i + 1) * d];
            let visible = |j: usize| keep.is_none_or(|rows| rows[bi][j] || j == qpos);
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate().take(qpos + 1) {
                *s = if visible(j) {
                    dot(qi, E::as_f32_in(&ks[j * d..(j + 1) * d], &mut row)) * scale
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(*s);
            }
            let oi = &mut o[i * d..(i + 1) * d];
            let mut sum = 0f32;
            for (j, s) in scores.iter().enumerate().take(qpos + 1) {
                if *s == f32::NEG_INFINITY {
                    continue;
                }
                let p = (s - max).exp();
                sum += p;
                let vj = E::as_f32_in(&vs[j * d..(j + 1) * d], &mut row);
                for (acc, x) in oi.iter_mut().zip(vj) {
                    *acc += p * x;
                }
            }
            let inv = 1.0 / sum;
            oi.iter_mut().for_each(|x| *x *= inv);
        }
    });
    out
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
        let (b, h, kvh, d, cap, len, tq) = (2, 4, 2, 16, 12, 9, 2);
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
        let fast = attend_cached(&q, &k, &v, len, Some(&keep), scale).expect("fast path");
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
        let slow = scaled_dot_product_attention(
            q,
            rep(k),
            rep(v),
            AttentionMask::CausalAndPadding(mask),
            scale,
        );
        let diff: f32 = (fast - slow).abs().max().into_scalar();
        assert!(diff < 1e-5, "max difference {diff}");
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
