//! `y = x Wᵀ + b` for a few rows of `x` (decode and image-generation steps).
//!
//! With one to 64 rows (decode, image-generation steps of up to 32 images, a
//! short prompt) the product is bound by reading the weight, and Burn's gemm
//! path packs and re-reads it (at 18 to 64 rows of 2048 times 5632 f32 weights
//! it took 22-26 ms against this kernel's 2.9-9.5 ms on a Zen 4 EPYC).
//! Every row's bits are the same whatever rows share the call, so a batch's
//! rows give what they give alone. This kernel streams every weight row
//! once for all rows of `x` from the `[out, in]` layout the weights are stored
//! in, converts f16/bf16 weights to f32 in registers and accumulates in f32, on
//! all threads, at the SIMD level of [`super::simd::level`] (one generic kernel,
//! [`widen`]). bf16 rows times bf16 weights use `vdpbf16ps` where the CPU has
//! AVX512-BF16 ([`bf16_dot`]).

use burn::prelude::*;
use burn::tensor::DType;
use half::{bf16, f16};
use rayon::prelude::*;

use super::simd::{self, Level};
use super::{Elem, host_f32, is_dense, to_flex};
use crate::quant::QuantFormat;

/// Whether this CPU multiplies bf16 rows by bf16 weights natively (AVX512-BF16)
/// at the current SIMD level, which makes bf16 the fastest dtype for decode and
/// image-generation steps.
pub fn has_bf16_dot() -> bool {
    bf16_dot_at(simd::level())
}

fn bf16_dot_at(level: Level) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        level >= Level::Avx512 && bf16_dot::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        false
    }
}

/// The most rows of `x` the kernel takes: a batch of 32 images with their
/// guidance rows (the server's default `--max-batch-images`). Was 16: a 9th
/// image took a step 2.6x longer and gave other bits than the first eight.
pub const MAX_ROWS: usize = 64;

/// Weight rows per parallel task.
const BLOCK: usize = 16;

/// `x [m, k] · weight[n, k]ᵀ + bias[n]` on the CPU backend, for `m <= 64`; `None`
/// (use the generic matmul) on other backends, layouts or dtypes.
pub fn linear_rows<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    linear_rows_at(simd::level(), x, weight, bias)
}

/// [`linear_rows`] at a given SIMD level (capped to what the CPU has by the
/// dispatch).
pub(crate) fn linear_rows_at<B: Backend>(
    level: Level,
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    let [m, k] = x.dims();
    let [n, wk] = weight.dims();
    if m == 0 || m > MAX_ROWS || k != wk || k == 0 {
        return None;
    }
    let w = to_flex(weight.clone()).ok()?;
    if !is_dense(&w) {
        return None;
    }
    let mut y = match w.dtype() {
        #[cfg(target_arch = "x86_64")]
        DType::BF16 if x.dtype() == DType::BF16 && bf16_dot_at(level) => {
            let xs = x.clone().into_data().into_vec::<bf16>().ok()?;
            // SAFETY: `bf16_dot_at` checked the CPU has AVX512-BF16.
            run(&xs, m, k, w.storage::<bf16>(), n, |x, m, k, w, yt| unsafe {
                bf16_dot::block(x, m, k, w, yt)
            })
        }
        DType::F32 => widen::run(level, &host_f32(x)?, m, k, w.storage::<f32>(), n),
        DType::F16 => widen::run(level, &host_f32(x)?, m, k, w.storage::<f16>(), n),
        DType::BF16 => widen::run(level, &host_f32(x)?, m, k, w.storage::<bf16>(), n),
        _ => return None,
    };
    if let Some(b) = bias {
        let b = host_f32(b)?;
        for row in y.chunks_mut(n) {
            row.iter_mut().zip(&b).for_each(|(y, b)| *y += b);
        }
    }
    Some(crate::host::from_f32_vec(y, [m, n], &x.device(), x.dtype()))
}

/// Whether [`quant_rows`] is the way to multiply `m` rows by weights in these
/// formats at the kernels' level: always for up to [`MAX_ROWS`] rows (decode
/// and image steps), for a prompt's rows where the level's int8 dot products
/// beat the f32 product ([`quant::takes_many_rows`]).
pub(crate) fn quant_takes(m: usize, mut formats: impl Iterator<Item = QuantFormat>) -> bool {
    m <= MAX_ROWS || formats.all(|f| quant::takes_many_rows(simd::level(), f))
}

/// `x [m, k] · dequant(q_i)ᵀ + bias_i` for each weight `q_i` (all `k` wide),
/// in one pass on the host ([`quant::run_many`]) at the kernels' level; the
/// results in `x`'s dtype on `x`'s device. Any `m`; see [`quant_takes`].
pub(crate) fn quant_rows<B: Backend>(
    x: &Tensor<B, 2>,
    qs: &[&super::Interleaved],
    biases: &[Option<&Tensor<B, 1>>],
) -> Vec<Tensor<B, 2>> {
    let [m, k] = x.dims();
    debug_assert!(qs.iter().all(|q| q.cols() == k) && biases.len() == qs.len());
    let xs = crate::to_f32_vec(x.clone());
    quant::run_many(simd::level(), &xs, m, qs)
        .into_iter()
        .zip(qs.iter().zip(biases))
        .map(|(mut y, (q, bias))| {
            let n = q.rows();
            if let Some(b) = bias {
                let b = crate::to_f32_vec((*b).clone());
                for row in y.chunks_mut(n) {
                    row.iter_mut().zip(&b).for_each(|(y, b)| *y += b);
                }
            }
            crate::host::from_f32_vec(y, [m, n], &x.device(), x.dtype())
        })
        .collect()
}

/// Runs `block(x, m, k, w_rows, yt_rows)` over blocks of weight rows on all
/// threads, where `block` computes `yt[j * m + i] = x[i] · w[j]` for the rows
/// `w_rows` holds; returns `y [m, n]`.
fn run<X: Sync, E: Elem>(
    x: &[X],
    m: usize,
    k: usize,
    w: &[E],
    n: usize,
    block: impl Fn(&[X], usize, usize, &[E], &mut [f32]) + Sync,
) -> Vec<f32> {
    par_columns(n, m, |row0, yt| {
        let rows = yt.len() / m;
        block(x, m, k, &w[row0 * k..(row0 + rows) * k], yt);
    })
}

/// `y [m, n]` (any `m`) computed a block of [`BLOCK`] output columns per parallel task:
/// `block(j0, yt)` fills `yt[c * m + i] = y[i][j0 + c]` for its columns (the
/// order the kernels produce), and the task writes them into `y` itself, so
/// no thread transposes the whole output afterwards.
pub(super) fn par_columns(
    n: usize,
    m: usize,
    block: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = Columns(y.as_mut_ptr());
    // One buffer per rayon split, not a zeroed array per task (the kernels
    // write every value of their part; zeroing 1 KB per 16 columns was ~1 %
    // of a q4_0 decode profile).
    let buffer = || vec![0f32; BLOCK * m];
    (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .for_each_init(buffer, |yt, b| {
            let j0 = b * BLOCK;
            let cols = BLOCK.min(n - j0);
            let yt = &mut yt[..cols * m];
            block(j0, yt);
            // Row by row, so each row's values go to one run of `y` (column
            // by column, a 600-row prompt's writes each touched another
            // page: a fifth of a q4_0 prefill).
            for i in 0..m {
                for c in 0..cols {
                    // SAFETY: `i < m`, `j0 + c < n`: inside `y`'s capacity;
                    // each task writes only its own columns `j0..j0 + cols`,
                    // so no two tasks write the same element, and `y`
                    // outlives the loop.
                    unsafe { out.get().add(i * n + j0 + c).write(yt[c * m + i]) };
                }
            }
        });
    // SAFETY: the tasks cover columns `0..n` (`BLOCK` each) of every row:
    // all `m * n` values are written.
    unsafe { y.set_len(m * n) };
    y
}

/// The output of [`par_columns`] (and of [`quant::run_many`]), written by its
/// tasks at disjoint columns.
#[derive(Clone, Copy)]
pub(super) struct Columns(pub(super) *mut f32);

impl Columns {
    /// The pointer (a method, so closures capture the `Sync` wrapper).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the tasks of `par_columns` write disjoint elements through it.
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

/// The tile loop shared by the block kernels:
/// `$tile::<$pre.., MT, NT>($args.., x, k, w, out, m)`
/// over `NT` weight rows at a time (register budget: `MT x NT` accumulators, `NT`
/// weights and one row of `x`, within `$regs` vector registers) and up to
/// `$max_mt` (4 or 8) rows of `x`. Kernels
/// that convert the weights take 8 rows per tile to convert them once; the bf16
/// dot kernel reads them as they are and is fastest with 4x4 tiles, re-reading a
/// tile's weights from L1 for the next rows.
macro_rules! tiles {
    ($tile:ident [$($pre:tt),*] ($($arg:expr),*), $max_mt:expr, $regs:expr, $x:expr, $m:expr, $k:expr, $w:expr, $yt:expr) => {{
        let (x, m, k, w, yt) = ($x, $m, $k, $w, $yt);
        let rows = w.len() / k;
        let mut j = 0;
        while j < rows {
            // With 32 vector registers (AVX-512, NEON) an 8x3 tile fits (24
            // accumulators); with 16 (AVX2) at most 4x3 or 2x4 do.
            let nt = if $regs >= 32 {
                if m <= 4 || $max_mt <= 4 { 4 } else { 3 }
            } else if m <= 2 {
                4
            } else {
                3
            };
            let nt = if j + nt <= rows { nt } else { 1 };
            let mut i = 0;
            while i < m {
                let mt = (m - i).min($max_mt);
                let (xp, wp) = (x.as_ptr().add(i * k), w.as_ptr().add(j * k));
                let out = &mut yt[j * m + i..];
                match (mt, nt) {
                    (1, 4) => $tile::<$($pre,)* 1, 4>($($arg,)* xp, k, wp, out, m),
                    (2, 4) => $tile::<$($pre,)* 2, 4>($($arg,)* xp, k, wp, out, m),
                    (3, 4) => $tile::<$($pre,)* 3, 4>($($arg,)* xp, k, wp, out, m),
                    (4, 4) => $tile::<$($pre,)* 4, 4>($($arg,)* xp, k, wp, out, m),
                    (1, 3) => $tile::<$($pre,)* 1, 3>($($arg,)* xp, k, wp, out, m),
                    (2, 3) => $tile::<$($pre,)* 2, 3>($($arg,)* xp, k, wp, out, m),
                    (3, 3) => $tile::<$($pre,)* 3, 3>($($arg,)* xp, k, wp, out, m),
                    (4, 3) => $tile::<$($pre,)* 4, 3>($($arg,)* xp, k, wp, out, m),
                    (5, 3) => $tile::<$($pre,)* 5, 3>($($arg,)* xp, k, wp, out, m),
                    (6, 3) => $tile::<$($pre,)* 6, 3>($($arg,)* xp, k, wp, out, m),
                    (7, 3) => $tile::<$($pre,)* 7, 3>($($arg,)* xp, k, wp, out, m),
                    (8, 3) => $tile::<$($pre,)* 8, 3>($($arg,)* xp, k, wp, out, m),
                    (1, _) => $tile::<$($pre,)* 1, 1>($($arg,)* xp, k, wp, out, m),
                    (2, _) => $tile::<$($pre,)* 2, 1>($($arg,)* xp, k, wp, out, m),
                    (3, _) => $tile::<$($pre,)* 3, 1>($($arg,)* xp, k, wp, out, m),
                    (4, _) => $tile::<$($pre,)* 4, 1>($($arg,)* xp, k, wp, out, m),
                    (5, _) => $tile::<$($pre,)* 5, 1>($($arg,)* xp, k, wp, out, m),
                    (6, _) => $tile::<$($pre,)* 6, 1>($($arg,)* xp, k, wp, out, m),
                    (7, _) => $tile::<$($pre,)* 7, 1>($($arg,)* xp, k, wp, out, m),
                    _ => $tile::<$($pre,)* 8, 1>($($arg,)* xp, k, wp, out, m),
                }
                i += mt;
            }
            j += nt;
        }
    }};
}
use tiles;

#[cfg(target_arch = "x86_64")]
mod bf16_dot;
mod quant;
mod widen;

#[cfg(test)]
pub(crate) use quant::reference_q8;

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
    fn matches_a_plain_dot_product_at_every_level_row_count_and_dtype() {
        let dev = Default::default();
        // k = 37 exercises the scalar tail, n = 45 the partial blocks and tiles.
        for (k, n) in [(8, 21), (37, 45), (96, 50)] {
            let w = Tensor::<Flex, 2>::random([n, k], Distribution::Normal(0.0, 0.5), &dev);
            let b = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 0.5), &dev);
            for m in [1, 2, 3, 5, 8, 9, 16, 17, 40, 64] {
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
                    for &level in Level::available() {
                        let got = linear_rows_at(level, &xq, &wq, Some(&bq)).expect("fast path");
                        assert_eq!(got.dims(), [m, n]);
                        assert_eq!(got.dtype(), dtype);
                        let got = host_f32(&got).unwrap();
                        let tol = if dtype == DType::F32 { 1e-4 } else { 3e-2 };
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                (g - w).abs() <= tol * (1.0 + w.abs()),
                                "{level} {dtype:?} m={m} k={k}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn each_row_gets_the_bits_it_gets_alone() {
        // What makes a batched image or chat equal its run alone: a row's
        // result does not depend on the other rows of the call.
        let dev = Default::default();
        let (k, n) = (96, 40);
        let w = Tensor::<Flex, 2>::random([n, k], Distribution::Normal(0.0, 0.5), &dev);
        let x = Tensor::<Flex, 2>::random([MAX_ROWS, k], Distribution::Normal(0.0, 1.0), &dev);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let (xq, wq) = (x.clone().cast(dtype), w.clone().cast(dtype));
            for &level in Level::available() {
                let all = host_f32(&linear_rows_at(level, &xq, &wq, None).unwrap()).unwrap();
                for i in [0, 7, 8, 17, MAX_ROWS - 1] {
                    let one =
                        linear_rows_at(level, &xq.clone().narrow(0, i, 1), &wq, None).unwrap();
                    assert_eq!(
                        host_f32(&one).unwrap(),
                        all[i * n..(i + 1) * n],
                        "{level} {dtype:?} row {i}"
                    );
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
