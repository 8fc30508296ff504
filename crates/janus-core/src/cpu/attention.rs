//! Full-sequence attention (SigLIP, VQ attention, LLM prefill) on all threads.
//!
//! burn-flex's attention runs every head on one thread and first copies the
//! permuted `q`/`k`/`v` views to contiguous tensors. Here each task takes one
//! head and a block of query rows, reads `q`/`k`/`v` through their strides, runs
//! the two products with `gemm` and a vectorised softmax, and writes its rows of
//! the output in `[B, Tq, H, D]` order, so the usual `swap_dims(1, 2)` and
//! reshape back to `[B, Tq, H·D]` cost nothing.

use burn::prelude::*;
use rayon::prelude::*;

use super::vmath::{exp_sub_sum, max_of};
use super::{SendPtr, StridedF32, is_flex};

/// Query rows per task: at most 192 (each task packs its head's keys and
/// values for gemm, so SigLIP's 576 rows per head in blocks of 192 instead of
/// 64 ran 10 % faster in bf16 on a Zen 4), at least 64, and enough tasks for
/// four per thread where one sequence's heads allow (the VQ decoder's one
/// head).
const ROWS: (usize, usize) = (64, 192);

/// `softmax(q kᵀ · scale) v` for `q [B, H, Tq, D]` and `k`/`v [B, H, Tk, D]`, with
/// a bottom-right aligned causal mask when `causal`. Computed in f32 whatever the
/// dtype. `None` on other backends.
pub fn attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    causal: bool,
    scale: f32,
) -> Option<Tensor<B, 4>> {
    let [b, h, tq, d] = q.dims();
    let [_, _, tk, _] = k.dims();
    if !is_flex::<B>() || k.dims() != [b, h, tk, d] || v.dims() != [b, h, tk, d] {
        return None;
    }
    if tq == 0 || tk == 0 || d == 0 || (causal && tq > tk) {
        return None;
    }
    let (qs, ks, vs) = (StridedF32::of(q)?, StridedF32::of(k)?, StridedF32::of(v)?);
    let mut out = vec![0f32; b * tq * h * d];
    let out_ptr = SendPtr(out.as_mut_ptr());
    // From one sequence's sizes, not the batch's: a sequence's blocks (and so
    // its bits) are the same alone and batched.
    let per_task = (h * tq)
        .div_ceil(4 * rayon::current_num_threads())
        .clamp(ROWS.0, ROWS.1);
    let blocks = tq.div_ceil(per_task);
    (0..b * h * blocks).into_par_iter().for_each(|task| {
        let (bh, blk) = (task / blocks, task % blocks);
        let (bi, hi) = (bh / h, bh % h);
        let r0 = blk * per_task;
        let rows = per_task.min(tq - r0);
        // Keys visible to the last row of the block.
        let keys = if causal { tk - tq + r0 + rows } else { tk };
        let mut s = vec![0f32; rows * keys];
        let (q0, k0, v0) = (
            qs.at([bi, hi, r0, 0]),
            ks.at([bi, hi, 0, 0]),
            vs.at([bi, hi, 0, 0]),
        );
        // SAFETY: the views' offsets and strides address `rows x d` query,
        // `keys x d` key/value elements inside their buffers; `s` is
        // `rows x keys`.
        unsafe {
            gemm::gemm(
                rows,
                keys,
                d,
                s.as_mut_ptr(),
                1,
                keys as isize,
                false,
                qs.ptr().add(q0),
                qs.stride(3),
                qs.stride(2),
                ks.ptr().add(k0),
                ks.stride(2),
                ks.stride(3),
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        let mut inv = vec![0f32; rows];
        for (i, row) in s.chunks_exact_mut(keys).enumerate() {
            let seen = if causal { tk - tq + r0 + i + 1 } else { keys };
            let (live, hidden) = row.split_at_mut(seen);
            let max = max_of(live);
            inv[i] = 1.0 / exp_sub_sum(live, max);
            hidden.fill(0.0);
        }
        // SAFETY: output rows `(bi, r0..r0+rows, hi)` belong to this task only;
        // `o` is `[B, Tq, H, D]`, row stride `H·D`.
        unsafe {
            let o = out_ptr.get().add(((bi * tq + r0) * h + hi) * d);
            gemm::gemm(
                rows,
                d,
                keys,
                o,
                1,
                (h * d) as isize,
                false,
                s.as_ptr(),
                1,
                keys as isize,
                vs.ptr().add(v0),
                vs.stride(3),
                vs.stride(2),
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            for (i, inv) in inv.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(o.add(i * h * d), d);
                row.iter_mut().for_each(|x| *x *= inv);
            }
        }
    });
    let out = crate::host::from_f32_vec::<B, 4>(out, [b, tq, h, d], &q.device(), q.dtype());
    Some(out.swap_dims(1, 2))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::module::attention as burn_attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::{DType, Distribution};

    use super::*;

    #[test]
    fn matches_burn_attention_on_strided_views_with_and_without_mask() {
        let dev = Default::default();
        // [B, T, 3·H, D] with heads swapped forward, split like the fused qkv
        // of the vision tower: q, k and v are strided views.
        let (b, h, d) = (2, 3, 20);
        for (tq, tk, causal) in [
            (70, 70, false),
            (150, 150, true),
            (5, 133, true),
            (9, 9, false),
            // Blocks of the largest size (192 rows) and a short last one.
            (600, 600, true),
        ] {
            let qkv = Tensor::<Flex, 4>::random([b, tk, 3 * h, d], Distribution::Default, &dev)
                .swap_dims(1, 2);
            let part = |i: usize| qkv.clone().narrow(1, i * h, h);
            let q = part(0).narrow(2, tk - tq, tq);
            let (k, v) = (part(1), part(2));
            let want = burn_attention(
                q.clone(),
                k.clone(),
                v.clone(),
                None,
                None,
                AttentionModuleOptions {
                    scale: Some(0.3),
                    softcap: None,
                    is_causal: causal,
                },
            );
            for dtype in [DType::F32, DType::BF16] {
                let got = attention(
                    &q.clone().cast(dtype),
                    &k.clone().cast(dtype),
                    &v.clone().cast(dtype),
                    causal,
                    0.3,
                )
                .expect("fast path");
                assert_eq!(got.dims(), [b, h, tq, d]);
                assert_eq!(got.dtype(), dtype);
                let diff: f32 = (got.clone().cast(DType::F32) - want.clone())
                    .abs()
                    .max()
                    .into_scalar();
                let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
                assert!(diff < tol, "{tq}x{tk} causal={causal} {dtype:?}: {diff}");
                // The first sequence alone gives the bits it gives in the batch.
                let first = |t: &Tensor<Flex, 4>| t.clone().narrow(0, 0, 1).cast(dtype);
                let alone = attention(&first(&q), &first(&k), &first(&v), causal, 0.3).unwrap();
                assert_eq!(
                    alone.into_data().as_bytes(),
                    got.narrow(0, 0, 1).into_data().as_bytes(),
                    "{tq}x{tk} causal={causal} {dtype:?}: alone and batched differ"
                );
            }
        }
    }
}
