//! `y = x Wᵀ + b` for a few rows of `x` (decode and image-generation steps).
//!
//! With one to sixteen rows the product is bound by reading the weight, and
//! Burn's gemm path packs and re-reads it. This kernel streams every weight row
//! once for all rows of `x` from the `[out, in]` layout the weights are stored
//! in, converts f16/bf16 weights to f32 in registers and accumulates in f32, on
//! all threads (AVX-512; other CPUs keep Burn's matmul). bf16 rows times bf16
//! weights use `vdpbf16ps` where the CPU has AVX512-BF16 ([`bf16_dot`]).

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{Elem, host_f32, is_dense, to_flex};

/// Whether this CPU multiplies bf16 rows by bf16 weights natively (AVX512-BF16),
/// which makes bf16 the fastest dtype for decode and image-generation steps.
pub fn has_bf16_dot() -> bool {
    simd::bf16_dot_available()
}

/// The most rows of `x` the kernel takes.
pub const MAX_ROWS: usize = 16;

/// Weight rows per parallel task.
const BLOCK: usize = 16;

/// `x [m, k] · weight[n, k]ᵀ + bias[n]` on the CPU backend, for `m <= 16`; `None`
/// (use the generic matmul) on other backends, layouts, dtypes or CPUs.
pub fn linear_rows<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    let [m, k] = x.dims();
    let [n, wk] = weight.dims();
    if m == 0 || m > MAX_ROWS || k != wk || k == 0 || !simd::available() {
        return None;
    }
    let w = to_flex(weight.clone()).ok()?;
    if !is_dense(&w) {
        return None;
    }
    let mut y = match w.dtype() {
        DType::BF16 if x.dtype() == DType::BF16 && simd::bf16_dot_available() => {
            let xs = x.clone().into_data().into_vec::<bf16>().ok()?;
            run(&xs, m, k, w.storage::<bf16>(), n, simd::block_bf16_dot)
        }
        DType::F32 => run(&host_f32(x)?, m, k, w.storage::<f32>(), n, simd::block_f32),
        DType::F16 => run(&host_f32(x)?, m, k, w.storage::<f16>(), n, simd::block_f16),
        DType::BF16 => run(
            &host_f32(x)?,
            m,
            k,
            w.storage::<bf16>(),
            n,
            simd::block_bf16,
        ),
        _ => return None,
    };
    if let Some(b) = bias {
        let b = host_f32(b)?;
        for row in y.chunks_mut(n) {
            row.iter_mut().zip(&b).for_each(|(y, b)| *y += b);
        }
    }
    Some(Tensor::from_data(
        TensorData::new(y, [m, n]),
        (&x.device(), x.dtype()),
    ))
}

/// The block kernel: `yt[j * m + i] = x[i] · w[j]` for the rows `w` holds.
type Block<X, E> = unsafe fn(&[X], usize, usize, &[E], &mut [f32]);

fn run<X: Sync, E: Elem>(
    x: &[X],
    m: usize,
    k: usize,
    w: &[E],
    n: usize,
    block: Block<X, E>,
) -> Vec<f32> {
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(BLOCK * m)
        .enumerate()
        .for_each(|(b, yt)| {
            let rows = yt.len() / m;
            let w = &w[b * BLOCK * k..(b * BLOCK + rows) * k];
            // SAFETY: `simd::available()` was checked; the slices match in size.
            unsafe { block(x, m, k, w, yt) }
        });
    let mut y = vec![0f32; m * n];
    for (j, col) in yt.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * n + j] = *v;
        }
    }
    y
}

/// The tile loop shared by the block kernels: `$tile::<MT, NT>(x, k, w, out, m)`
/// over `NT` weight rows at a time (register budget: `MT x NT` accumulators, `NT`
/// weights and one row of `x`) and up to `$max_mt` (4 or 8) rows of `x`. Kernels
/// that convert the weights take 8 rows per tile to convert them once; the bf16
/// dot kernel reads them as they are and is fastest with 4x4 tiles, re-reading a
/// tile's weights from L1 for the next rows.
macro_rules! tiles {
    ($tile:ident, $max_mt:expr, $x:expr, $m:expr, $k:expr, $w:expr, $yt:expr) => {{
        let (x, m, k, w, yt) = ($x, $m, $k, $w, $yt);
        let rows = w.len() / k;
        let mut j = 0;
        while j < rows {
            let nt = if m <= 4 || $max_mt <= 4 { 4 } else { 3 };
            let nt = if j + nt <= rows { nt } else { 1 };
            let mut i = 0;
            while i < m {
                let mt = (m - i).min($max_mt);
                let (xp, wp) = (x.as_ptr().add(i * k), w.as_ptr().add(j * k));
                let out = &mut yt[j * m + i..];
                match (mt, nt) {
                    (1, 4) => $tile::<1, 4>(xp, k, wp, out, m),
                    (2, 4) => $tile::<2, 4>(xp, k, wp, out, m),
                    (3, 4) => $tile::<3, 4>(xp, k, wp, out, m),
                    (4, 4) => $tile::<4, 4>(xp, k, wp, out, m),
                    (1, 3) => $tile::<1, 3>(xp, k, wp, out, m),
                    (2, 3) => $tile::<2, 3>(xp, k, wp, out, m),
                    (3, 3) => $tile::<3, 3>(xp, k, wp, out, m),
                    (4, 3) => $tile::<4, 3>(xp, k, wp, out, m),
                    (5, 3) => $tile::<5, 3>(xp, k, wp, out, m),
                    (6, 3) => $tile::<6, 3>(xp, k, wp, out, m),
                    (7, 3) => $tile::<7, 3>(xp, k, wp, out, m),
                    (8, 3) => $tile::<8, 3>(xp, k, wp, out, m),
                    (1, _) => $tile::<1, 1>(xp, k, wp, out, m),
                    (2, _) => $tile::<2, 1>(xp, k, wp, out, m),
                    (3, _) => $tile::<3, 1>(xp, k, wp, out, m),
                    (4, _) => $tile::<4, 1>(xp, k, wp, out, m),
                    (5, _) => $tile::<5, 1>(xp, k, wp, out, m),
                    (6, _) => $tile::<6, 1>(xp, k, wp, out, m),
                    (7, _) => $tile::<7, 1>(xp, k, wp, out, m),
                    _ => $tile::<8, 1>(xp, k, wp, out, m),
                }
                i += mt;
            }
            j += nt;
        }
    }};
}
#[cfg(target_arch = "x86_64")]
use tiles;

#[cfg(target_arch = "x86_64")]
mod bf16_dot;
#[cfg(target_arch = "x86_64")]
mod widen;

#[cfg(target_arch = "x86_64")]
mod simd {
    pub use super::bf16_dot::{available as bf16_dot_available, block as block_bf16_dot};
    pub use super::widen::{block_bf16, block_f16, block_f32};

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use half::{bf16, f16};

    pub fn available() -> bool {
        false
    }
    pub fn bf16_dot_available() -> bool {
        false
    }
    pub unsafe fn block_f32(_: &[f32], _: usize, _: usize, _: &[f32], _: &mut [f32]) {}
    pub unsafe fn block_f16(_: &[f32], _: usize, _: usize, _: &[f16], _: &mut [f32]) {}
    pub unsafe fn block_bf16(_: &[f32], _: usize, _: usize, _: &[bf16], _: &mut [f32]) {}
    pub unsafe fn block_bf16_dot(_: &[bf16], _: usize, _: usize, _: &[bf16], _: &mut [f32]) {}
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, k: usize) -> Vec<f32> {
        let n = b.len();
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|t| (x[i * k + t] * w[j * k + t]) as f64).sum();
                y[i * n + j] = dot as f32 + b[j];
            }
        }
        y
    }

    #[test]
    fn matches_a_plain_dot_product_for_every_row_count_and_dtype() {
        if !simd::available() {
            return;
        }
        let dev = Default::default();
        // k = 37 exercises the scalar tail, n = 45 the partial blocks and tiles.
        for (k, n) in [(8, 21), (37, 45), (96, 50)] {
            let w = Tensor::<Flex, 2>::random([n, k], Distribution::Normal(0.0, 0.5), &dev);
            let b = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 0.5), &dev);
            for m in [1, 2, 3, 5, 8, 9, 16] {
                let x = Tensor::<Flex, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev);
                for dtype in [DType::F32, DType::F16, DType::BF16] {
                    let (xq, wq, bq) = (
                        x.clone().cast(dtype),
                        w.clone().cast(dtype),
                        b.clone().cast(dtype),
                    );
                    let want = reference(
                        &host_f32(&xq).unwrap(),
                        &host_f32(&wq).unwrap(),
                        &host_f32(&bq).unwrap(),
                        m,
                        k,
                    );
                    let got = linear_rows(&xq, &wq, Some(&bq)).expect("fast path");
                    assert_eq!(got.dims(), [m, n]);
                    assert_eq!(got.dtype(), dtype);
                    let got = host_f32(&got).unwrap();
                    let tol = if dtype == DType::F32 { 1e-4 } else { 3e-2 };
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= tol * (1.0 + w.abs()),
                            "{dtype:?} m={m} k={k}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn declines_shapes_it_does_not_cover() {
        let dev = Default::default();
        let w = Tensor::<Flex, 2>::ones([4, 8], &dev);
        let x = Tensor::<Flex, 2>::ones([MAX_ROWS + 1, 8], &dev);
        assert!(linear_rows(&x, &w, None).is_none());
        let x = Tensor::<Flex, 2>::ones([2, 8], &dev);
        assert!(linear_rows(&x, &w.transpose(), None).is_none());
    }
}
