//! `y = x Wᵀ + b` for a few rows of `x` (decode and image-generation steps).
//!
//! With one to sixteen rows the product is bound by reading the weight, and
//! Burn's gemm path packs and re-reads it. This kernel streams every weight row
//! once for all rows of `x` from the `[out, in]` layout the weights are stored
//! in, converts f16/bf16 weights to f32 in registers and accumulates in f32, on
//! all threads (AVX-512; other CPUs keep Burn's matmul).

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use rayon::prelude::*;

use super::{Elem, host_f32, plain, to_flex};

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
    if !plain(&w) {
        return None;
    }
    let xs = host_f32(x)?;
    let mut y = match w.dtype() {
        DType::F32 => run(&xs, m, k, w.storage::<f32>(), n, simd::block_f32),
        DType::F16 => run(&xs, m, k, w.storage::<f16>(), n, simd::block_f16),
        DType::BF16 => run(&xs, m, k, w.storage::<bf16>(), n, simd::block_bf16),
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
type Block<E> = unsafe fn(&[f32], usize, usize, &[E], &mut [f32]);

fn run<E: Elem>(x: &[f32], m: usize, k: usize, w: &[E], n: usize, block: Block<E>) -> Vec<f32> {
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

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use half::{bf16, f16};

    use super::Elem;

    pub fn available() -> bool {
        is_x86_feature_detected!("avx512f")
    }

    /// One kernel per weight dtype; `$load` turns 16 weights at `$p` into f32 lanes.
    macro_rules! block_kernel {
        ($name:ident, $tile:ident, $E:ty, |$p:ident| $load:expr) => {
            /// `out[j * m + i] = x[i] · w[j]` for `MT` rows of `x` and `NT` weight rows.
            #[target_feature(enable = "avx512f")]
            unsafe fn $tile<const MT: usize, const NT: usize>(
                x: *const f32,
                k: usize,
                w: *const $E,
                out: &mut [f32],
                m: usize,
            ) {
                let mut acc = [[_mm512_setzero_ps(); MT]; NT];
                let kv = k / 16 * 16;
                let mut kk = 0;
                while kk < kv {
                    let mut wv = [_mm512_setzero_ps(); NT];
                    for (j, wv) in wv.iter_mut().enumerate() {
                        // SAFETY: rows of `k` weights, `kk + 16 <= k`.
                        *wv = unsafe {
                            let $p = w.add(j * k + kk);
                            $load
                        };
                    }
                    for i in 0..MT {
                        // SAFETY: `MT` rows of `k` values, `kk + 16 <= k`.
                        let xv = unsafe { _mm512_loadu_ps(x.add(i * k + kk)) };
                        for j in 0..NT {
                            acc[j][i] = _mm512_fmadd_ps(wv[j], xv, acc[j][i]);
                        }
                    }
                    kk += 16;
                }
                for j in 0..NT {
                    for i in 0..MT {
                        let mut s = _mm512_reduce_add_ps(acc[j][i]);
                        for t in kv..k {
                            // SAFETY: in bounds as above.
                            s += unsafe { (*w.add(j * k + t)).f32() * *x.add(i * k + t) };
                        }
                        out[j * m + i] = s;
                    }
                }
            }

            #[target_feature(enable = "avx512f")]
            pub unsafe fn $name(x: &[f32], m: usize, k: usize, w: &[$E], yt: &mut [f32]) {
                let rows = w.len() / k;
                let mut j = 0;
                while j < rows {
                    // Register budget: MT x NT accumulators + NT weights + 1.
                    let nt = if m <= 4 { 4 } else { 3 };
                    let nt = if j + nt <= rows { nt } else { 1 };
                    let mut i = 0;
                    while i < m {
                        let mt = (m - i).min(8);
                        // SAFETY: `x` holds `m` rows and `w` `rows` rows of `k` values.
                        let (xp, wp) = unsafe { (x.as_ptr().add(i * k), w.as_ptr().add(j * k)) };
                        let out = &mut yt[j * m + i..];
                        // SAFETY: as above; `out` covers `nt` rows of `m` outputs.
                        unsafe {
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
                        }
                        i += mt;
                    }
                    j += nt;
                }
            }
        };
    }

    block_kernel!(block_f32, tile_f32, f32, |p| _mm512_loadu_ps(p));
    block_kernel!(block_f16, tile_f16, f16, |p| _mm512_cvtph_ps(
        _mm256_loadu_si256(p as *const __m256i)
    ));
    block_kernel!(block_bf16, tile_bf16, bf16, |p| _mm512_castsi512_ps(
        _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
            p as *const __m256i
        )))
    ));
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use half::{bf16, f16};

    pub fn available() -> bool {
        false
    }
    pub unsafe fn block_f32(_: &[f32], _: usize, _: usize, _: &[f32], _: &mut [f32]) {}
    pub unsafe fn block_f16(_: &[f32], _: usize, _: usize, _: &[f16], _: &mut [f32]) {}
    pub unsafe fn block_bf16(_: &[f32], _: usize, _: usize, _: &[bf16], _: &mut [f32]) {}
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
