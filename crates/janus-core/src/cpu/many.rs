//! Many rows (prefill, the SigLIP tower) times an f16 or bf16 weight on the
//! CPU. burn-flex multiplies 16-bit matrices through gemm's f16 path or by
//! converting both whole operands value by value on every call, 1.5-3x slower
//! than f32. Here the activations widen once, the weight a slab of about
//! 8 MB at a time (vectorised), and each slab is multiplied in f32 by Burn's
//! gemm: the speed of f32, the memory of the 16-bit weights plus one slab.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::{is_dense, is_flex, to_flex};

/// Bytes of f32 weight widened at a time.
const SLAB_BYTES: usize = 8 << 20;

/// `x [m, k] · W + bias` for a 16-bit `weight` stored `[n, k]` (or `[k, n]`
/// when `in_out`), in `x`'s dtype; `None` off the CPU backend, for other
/// dtypes (or `x` of another dtype than the weight) or layouts.
pub(crate) fn linear_half<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    in_out: bool,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    if !is_flex::<B>() || x.dtype() != weight.dtype() {
        return None;
    }
    let w = to_flex(weight.clone()).ok()?;
    if !is_dense(&w) || !matches!(w.dtype(), DType::F16 | DType::BF16) {
        return None;
    }
    let [m, k] = x.dims();
    let [a, b] = weight.dims();
    let (n, wk) = if in_out { (b, a) } else { (a, b) };
    if wk != k || m == 0 || n == 0 || k == 0 {
        return None;
    }
    let device = x.device();
    let f32_tensor = |v: Vec<f32>, dims: [usize; 2]| {
        Tensor::<B, 2>::from_data(TensorData::new(v, dims), (&device, DType::F32))
    };
    let widen = |range: Range<usize>| -> Vec<f32> {
        let mut out = vec![0f32; range.len()];
        match w.dtype() {
            DType::F16 => w.storage::<f16>()[range].convert_to_f32_slice(&mut out),
            _ => w.storage::<bf16>()[range].convert_to_f32_slice(&mut out),
        }
        out
    };
    let xf = f32_tensor(crate::to_f32_vec(x.clone()), [m, k]);
    let y = if in_out {
        // `[k, n]`: slabs of whole rows are ranges of the inner dimension;
        // their partial products add up.
        let slab = (SLAB_BYTES / 4 / n).clamp(1, k);
        let mut acc: Option<Tensor<B, 2>> = None;
        for k0 in (0..k).step_by(slab) {
            let k1 = (k0 + slab).min(k);
            let part = xf
                .clone()
                .narrow(1, k0, k1 - k0)
                .matmul(f32_tensor(widen(k0 * n..k1 * n), [k1 - k0, n]));
            acc = Some(match acc {
                Some(acc) => acc + part,
                None => part,
            });
        }
        acc?
    } else {
        // `[n, k]`: slabs of whole rows give whole columns of y.
        let slab = (SLAB_BYTES / 4 / k).clamp(1, n);
        let parts: Vec<_> = (0..n)
            .step_by(slab)
            .map(|r0| {
                let r1 = (r0 + slab).min(n);
                xf.clone()
                    .matmul(f32_tensor(widen(r0 * k..r1 * k), [r1 - r0, k]).transpose())
            })
            .collect();
        Tensor::cat(parts, 1)
    };
    let mut y = crate::to_f32_vec(y);
    if let Some(b) = bias {
        let b = crate::to_f32_vec(b.clone());
        for row in y.chunks_mut(n) {
            row.iter_mut().zip(&b).for_each(|(y, b)| *y += b);
        }
    }
    Some(crate::host::from_f32_vec(y, [m, n], &device, x.dtype()))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn matches_the_generic_product_in_both_layouts_and_dtypes() {
        let dev = Default::default();
        // n = 3000 x k = 1400 f32 is 16.8 MB: three slabs either way.
        for (m, k, n) in [(3, 5, 7), (40, 1400, 3000)] {
            let x = Tensor::<Flex, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev);
            let w = Tensor::<Flex, 2>::random([n, k], Distribution::Normal(0.0, 0.05), &dev);
            let b = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 1.0), &dev);
            for dtype in [DType::F16, DType::BF16] {
                let (x, w, b) = (
                    x.clone().cast(dtype),
                    w.clone().cast(dtype),
                    b.clone().cast(dtype),
                );
                // The exact product of the rounded operands, in f32.
                let want = x
                    .clone()
                    .cast(DType::F32)
                    .matmul(w.clone().cast(DType::F32).transpose())
                    + b.clone().cast(DType::F32).unsqueeze();
                let want = crate::to_f32_vec(want);
                let wt =
                    Tensor::<Flex, 2>::from_data(w.clone().transpose().into_data(), (&dev, dtype));
                for (weight, in_out) in [(w.clone(), false), (wt, true)] {
                    let got = linear_half(&x, &weight, in_out, Some(&b)).expect("cpu path");
                    assert_eq!(got.dims(), [m, n]);
                    assert_eq!(got.dtype(), dtype);
                    // One rounding to the dtype of the result.
                    let eps = if dtype == DType::F16 { 1e-3 } else { 8e-3 };
                    for (g, w) in crate::to_f32_vec(got).iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= eps * w.abs() + 1e-4,
                            "{dtype:?} {in_out} {m}x{k}x{n}: {g} vs {w}"
                        );
                    }
                }
            }
        }
        // Other dtypes and mismatches decline.
        let x = Tensor::<Flex, 2>::ones([20, 4], &dev);
        assert!(linear_half(&x, &Tensor::ones([3, 4], &dev), false, None).is_none());
        let h = Tensor::<Flex, 2>::ones([3, 4], &dev).cast(DType::F16);
        assert!(linear_half(&x, &h, false, None).is_none());
    }
}
