//! Many rows (prefill, the SigLIP tower, a quantized model's prompt) times a
//! weight on the CPU. The output's columns are cut into panels of up to
//! [`COLS`] weight rows; each task widens (f16, bf16) or dequantizes (q8_0,
//! q4_0) its panel into an f32 buffer of its own, or reads an f32 weight in
//! place, and multiplies it with gemm's f32 kernel on its own thread, straight
//! into its columns of the output. So a 16-bit or quantized weight costs the
//! f32 product plus one pass over its own bytes, memory holds one panel per
//! thread on top of the weights, and the activations are packed once per panel
//! instead of once per call and thread hand-off (gemm's own threading, given
//! one slab at a time, was 1.5x slower than this for 16-bit weights). On CPUs
//! with AVX512-BF16, bf16 weights instead multiply bf16 rows with `vdpbf16ps`
//! ([`super::bf16_gemm`], 2.3-2.5x gemm's f32 rate on a Zen 4).

use burn::prelude::*;
use burn::tensor::DType;
use half::{bf16, f16};
use rayon::prelude::*;

use super::Interleaved;
use super::{F32Values, SendPtr, is_dense, is_flex, to_flex};

/// Output features per task: at the LLM's widths a 2-6 MB f32 panel, about
/// the fastest in a sweep of 64-256 (64 was 10 % slower).
const COLS: usize = 256;
/// The fewest rows of `x` a task takes when the output is split by rows too
/// (narrow outputs on many threads).
const MIN_ROWS: usize = 64;

/// A weight's values, `[n, k]` (or `[k, n]` for the dense ones when the
/// product says `in_out`).
pub(crate) enum Weight<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
    /// Always `[n, k]`.
    Quant(&'a Interleaved),
}

/// The activations of a product, `[m, k]`.
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    F32(&'a [f32]),
    /// bf16 rows for a bf16 weight (`k` even), on CPUs with
    /// AVX512-BF16 ([`super::bf16_gemm`]).
    #[cfg(target_arch = "x86_64")]
    Bf16(&'a [bf16]),
}

impl Lhs<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(x) => x.len(),
            #[cfg(target_arch = "x86_64")]
            Self::Bf16(x) => x.len(),
        }
    }
}

/// `x [m, k] · W + bias` in f32, `[m, n]`, for `w` `[n, k]` (transposed in the
/// product) or `[k, n]` when `in_out` (dense weights only). All sizes must be
/// non-zero and the slices as long as their shapes.
pub(crate) fn product(
    x: Lhs<'_>,
    [m, k, n]: [usize; 3],
    w: &Weight<'_>,
    in_out: bool,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    product_in_tasks(
        x,
        [m, k, n],
        w,
        in_out,
        bias,
        2 * rayon::current_num_threads(),
    )
}

/// [`product`] cut into at least `want` tasks where the sizes allow: by output
/// columns first, then by rows.
fn product_in_tasks(
    x: Lhs<'_>,
    [m, k, n]: [usize; 3],
    w: &Weight<'_>,
    in_out: bool,
    bias: Option<&[f32]>,
    want: usize,
) -> Vec<f32> {
    assert!(m > 0 && k > 0 && n > 0 && x.len() >= m * k, "product sizes");
    // A weight of another shape would read out of its panel or give garbage.
    let fits = match w {
        Weight::F32(v) => v.len() >= n * k,
        Weight::F16(v) => v.len() >= n * k,
        Weight::Bf16(v) => v.len() >= n * k,
        Weight::Quant(q) => !in_out && q.rows() == n && q.cols() == k,
    };
    assert!(fits, "the weight does not hold [{n}, {k}] values");
    #[cfg(target_arch = "x86_64")]
    if let Lhs::Bf16(_) = x {
        assert!(
            matches!(w, Weight::Bf16(_)) && k.is_multiple_of(2) && super::rows::has_bf16_dot(),
            "bf16 rows take a bf16 weight, k even, on a CPU with AVX512-BF16"
        );
    }
    let cols = match x {
        // Whole groups of the bf16 kernel's 64 columns (a short one computes
        // all 64).
        #[cfg(target_arch = "x86_64")]
        Lhs::Bf16(_) => n.div_ceil(want).next_multiple_of(64).clamp(64, 256).min(n),
        _ => n.div_ceil(want).next_multiple_of(16).clamp(64, COLS).min(n),
    };
    let panels = n.div_ceil(cols);
    let parts = want.div_ceil(panels).clamp(1, (m / MIN_ROWS).max(1));
    let rows = m.div_ceil(parts);
    let mut y: Vec<f32> = Vec::with_capacity(m * n);
    let out = SendPtr(y.as_mut_ptr());
    (0..panels * parts).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(buf, packed): &mut (Vec<f32>, Vec<u32>), task| {
            #[cfg(not(target_arch = "x86_64"))]
            let _ = packed;
            let (j0, r0) = ((task / parts) * cols, (task % parts) * rows);
            if r0 >= m {
                return;
            }
            let (c, r) = (cols.min(n - j0), rows.min(m - r0));
            // SAFETY: the task writes rows `r0..r0 + r` of columns
            // `j0..j0 + c` of `y` (`m x n`), which no other task writes.
            let dst = unsafe { out.get().add(r0 * n + j0) };
            match x {
                Lhs::F32(x) => {
                    let (rhs, rhs_cs, rhs_rs) = panel(w, in_out, [k, n], j0..j0 + c, buf);
                    // SAFETY: `x` holds `m x k` values, the panel `c` columns of
                    // `k` values at the strides `panel` gave; `dst` as above.
                    unsafe {
                        gemm::gemm(
                            r,
                            c,
                            k,
                            dst,
                            1,
                            n as isize,
                            false,
                            x.as_ptr().add(r0 * k),
                            1,
                            k as isize,
                            rhs,
                            rhs_cs,
                            rhs_rs,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                #[cfg(target_arch = "x86_64")]
                Lhs::Bf16(x) => {
                    let Weight::Bf16(wv) = w else {
                        unreachable!("checked above")
                    };
                    // SAFETY: checked above: the CPU has AVX512-BF16, `k` is
                    // even, the weight holds `n x k` values; rows `r0..r0 + r`
                    // of `x`, `dst` as above.
                    unsafe {
                        super::bf16_gemm::product(
                            &x[r0 * k..(r0 + r) * k],
                            r,
                            wv,
                            [k, n],
                            in_out,
                            j0..j0 + c,
                            packed,
                            dst,
                            n,
                        )
                    };
                }
            }
            if let Some(b) = bias {
                for i in 0..r {
                    // SAFETY: row `i` of the task's block, written above.
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.add(i * n), c) };
                    row.iter_mut()
                        .zip(&b[j0..j0 + c])
                        .for_each(|(y, b)| *y += b);
                }
            }
        },
    );
    // SAFETY: the tasks wrote every one of the `m x n` values (`r0 < m` skips
    // only tasks past the last row).
    unsafe { y.set_len(m * n) };
    y
}

/// Columns `js` of the product's right-hand side (`k x js.len()`) as f32: a
/// pointer with its column and row strides, into `w` itself or into `buf`.
fn panel(
    w: &Weight<'_>,
    in_out: bool,
    [k, n]: [usize; 2],
    js: std::ops::Range<usize>,
    buf: &mut Vec<f32>,
) -> (*const f32, isize, isize) {
    let c = js.len();
    match (w, in_out) {
        (Weight::F32(v), false) => return (v[js.start * k..].as_ptr(), k as isize, 1),
        (Weight::F32(v), true) => return (v[js.start..].as_ptr(), 1, n as isize),
        _ => {}
    }
    buf.resize(k * c, 0.0);
    match (w, in_out) {
        (Weight::Quant(q), _) => q.dequantize_rows_here(js, buf),
        (_, false) => widen(w, js.start * k..js.end * k, buf),
        (_, true) => {
            for (i, out) in buf.chunks_exact_mut(c).enumerate() {
                widen(w, i * n + js.start..i * n + js.end, out);
            }
        }
    }
    if in_out {
        (buf.as_ptr(), 1, c as isize)
    } else {
        (buf.as_ptr(), k as isize, 1)
    }
}

/// Values `range` of a 16-bit weight as f32 into `out`.
fn widen(w: &Weight<'_>, range: std::ops::Range<usize>, out: &mut [f32]) {
    match w {
        Weight::F16(v) => super::simd::widen(&v[range], out),
        Weight::Bf16(v) => super::simd::widen(&v[range], out),
        Weight::F32(v) => out.copy_from_slice(&v[range]),
        Weight::Quant(_) => unreachable!("quantized panels dequantize whole rows"),
    }
}

/// `x [m, k] · W + bias` for an f32, f16 or bf16 `weight` stored `[n, k]` (or
/// `[k, n]` when `in_out`), in `x`'s dtype; `x` is the weight's dtype or f32
/// (16-bit weights under f32 activations). `None` off the CPU backend, for
/// other dtypes or layouts.
pub(crate) fn linear_many<B: Backend>(
    x: &Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    in_out: bool,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 2>> {
    if !is_flex::<B>() || (x.dtype() != weight.dtype() && x.dtype() != DType::F32) {
        return None;
    }
    let flex = to_flex(weight.clone()).ok()?;
    if !is_dense(&flex) {
        return None;
    }
    let w = match flex.dtype() {
        DType::F32 => Weight::F32(flex.storage::<f32>()),
        DType::F16 => Weight::F16(flex.storage::<f16>()),
        DType::BF16 => Weight::Bf16(flex.storage::<bf16>()),
        _ => return None,
    };
    let [m, k] = x.dims();
    let [a, b] = weight.dims();
    let (n, wk) = if in_out { (b, a) } else { (a, b) };
    if wk != k || m == 0 || n == 0 || k == 0 {
        return None;
    }
    Some(product_tensor(x, [m, k, n], &w, in_out, bias))
}

/// [`product`] on tensors, the result in `x`'s dtype: `x` read in place when it
/// is a dense f32 tensor, or as bf16 for a bf16 weight on a CPU with
/// AVX512-BF16 (at the current SIMD level). There f32 rows are rounded to bf16
/// first, which halves the product's cost: that is the SigLIP tower with bf16
/// weights, whose activations otherwise stay f32 (at Janus-Pro-1B's sizes on a
/// Zen 4 2.2-2.3 s → 1.25-1.32 s per image, with the attention change of the
/// same stop; the tiny checkpoint's features then differ
/// from the f32 reference by a relative RMS of 3.3e-3 instead of 2.6e-3, and
/// by 6.0e-3 with every activation in bf16).
pub(crate) fn product_tensor<B: Backend>(
    x: &Tensor<B, 2>,
    dims: [usize; 3],
    w: &Weight<'_>,
    in_out: bool,
    bias: Option<&Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let bias = bias.map(|b| crate::to_f32_vec(b.clone()));
    #[cfg(target_arch = "x86_64")]
    if let Weight::Bf16(_) = w
        && dims[1].is_multiple_of(2)
        && super::rows::has_bf16_dot()
        && let Some(xs) = Bf16Values::of(x)
    {
        let y = product(Lhs::Bf16(&xs), dims, w, in_out, bias.as_deref());
        return crate::host::from_f32_vec(y, [dims[0], dims[2]], &x.device(), x.dtype());
    }
    let xs = F32Values::of(x).expect("a float tensor has f32 values");
    let y = product(Lhs::F32(&xs), dims, w, in_out, bias.as_deref());
    crate::host::from_f32_vec(y, [dims[0], dims[2]], &x.device(), x.dtype())
}

/// The values of a CPU tensor of bf16 (its buffer when dense) or f32 (rounded)
/// as bf16; `None` for other dtypes.
#[cfg(target_arch = "x86_64")]
enum Bf16Values {
    Shared(burn::backend::flex::FlexTensor),
    Owned(Vec<bf16>),
}

#[cfg(target_arch = "x86_64")]
impl Bf16Values {
    fn of<B: Backend>(x: &Tensor<B, 2>) -> Option<Self> {
        match x.dtype() {
            DType::BF16 => match to_flex(x.clone()) {
                Ok(flex) if is_dense(&flex) => Some(Self::Shared(flex)),
                _ => x
                    .clone()
                    .into_data()
                    .into_vec::<bf16>()
                    .ok()
                    .map(Self::Owned),
            },
            DType::F32 => {
                let xs = F32Values::of(x)?;
                let mut out = vec![bf16::ZERO; xs.len()];
                super::narrow(&xs, &mut out);
                Some(Self::Owned(out))
            }
            _ => None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl std::ops::Deref for Bf16Values {
    type Target = [bf16];
    fn deref(&self) -> &[bf16] {
        match self {
            Self::Shared(t) => t.storage::<bf16>(),
            Self::Owned(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;
    use crate::quant::QuantMatrix;

    #[test]
    fn matches_the_generic_product_in_both_layouts_and_dtypes() {
        let dev = Default::default();
        // 3000 outputs: several panels of weight rows (or columns, `in_out`).
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
                // f32 activations times the 16-bit weight: no rounding of the result.
                let x32 = x.clone().cast(DType::F32);
                for (weight, in_out) in [(w.clone(), false), (wt, true)] {
                    for (x, eps) in [
                        (&x, if dtype == DType::F16 { 1e-3 } else { 8e-3 }),
                        (&x32, 1e-5),
                    ] {
                        let got = linear_many(x, &weight, in_out, Some(&b)).expect("cpu path");
                        assert_eq!(got.dims(), [m, n]);
                        assert_eq!(got.dtype(), x.dtype());
                        for (g, w) in crate::to_f32_vec(got).iter().zip(&want) {
                            assert!(
                                (g - w).abs() <= eps * w.abs() + 1e-4,
                                "{dtype:?} x {:?} {in_out} {m}x{k}x{n}: {g} vs {w}",
                                x.dtype()
                            );
                        }
                    }
                }
            }
        }
        // 16-bit activations with another weight dtype, and mismatched shapes, decline.
        let x = Tensor::<Flex, 2>::ones([20, 4], &dev);
        let h = Tensor::<Flex, 2>::ones([3, 4], &dev).cast(DType::F16);
        assert!(linear_many(&h.clone().cast(DType::BF16), &h, false, None).is_none());
        assert!(linear_many(&h, &x.clone().narrow(0, 0, 3), false, None).is_none());
        assert!(linear_many(&x, &Tensor::ones([3, 5], &dev), false, None).is_none());
        assert!(linear_many(&x, &Tensor::ones([3, 4], &dev), true, None).is_none());
    }

    /// Values `i -> [-1.2, 1.3)` spread over a few hundred levels.
    fn spread(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 2654435761 + seed) % 997) as f32 / 400.0 - 1.2)
            .collect()
    }

    #[test]
    fn bf16_rows_give_the_product_of_the_rounded_values() {
        // Every tile height (1-6 rows, 13 = 6 + 6 + 1), 130 rows (split in row
        // parts with 4 and 32 tasks); columns short of a group of 64, one past
        // it, and panels with a short last one; `k` from a single pair up.
        let shapes = (1..=13).map(|m| (m, 64, 31));
        for (m, k, n) in shapes.chain([(1, 2, 1), (12, 130, 33), (25, 96, 300), (130, 258, 70)]) {
            let x: Vec<bf16> = spread(m * k, 5)
                .iter()
                .map(|v| bf16::from_f32(*v))
                .collect();
            let w: Vec<bf16> = spread(n * k, 9)
                .iter()
                .map(|v| bf16::from_f32(*v))
                .collect();
            let bias = spread(n, 2);
            let want: Vec<f32> = (0..m * n)
                .map(|i| {
                    let (r, j) = (i / n, i % n);
                    let dot = (0..k).map(|c| x[r * k + c].to_f32() * w[j * k + c].to_f32());
                    bias[j] + dot.sum::<f32>()
                })
                .collect();
            let wide: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
            let wt: Vec<bf16> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            // The widened product everywhere, `vdpbf16ps` where the CPU has it.
            #[cfg(target_arch = "x86_64")]
            let native = crate::cpu::has_bf16_dot().then_some(Lhs::Bf16(&x));
            #[cfg(not(target_arch = "x86_64"))]
            let native = None;
            let lhs: Vec<Lhs<'_>> = std::iter::once(Lhs::F32(&wide)).chain(native).collect();
            let layouts = [(&w, false), (&wt, true)];
            for (want_tasks, x, (w, in_out)) in (0..3 * lhs.len() * 2).map(|i| {
                (
                    [1, 4, 32][i % 3],
                    lhs[i / 3 % lhs.len()],
                    layouts[i / 3 / lhs.len()],
                )
            }) {
                let got = product_in_tasks(
                    x,
                    [m, k, n],
                    &Weight::Bf16(w),
                    in_out,
                    Some(&bias),
                    want_tasks,
                );
                assert_eq!(got.len(), m * n);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (k as f32) * (1.0 + w.abs()),
                        "{m}x{k}x{n} in {want_tasks} tasks, in_out {in_out}, [{}, {}]: {g} vs {w}",
                        i / n,
                        i % n
                    );
                }
            }
        }
    }

    /// f32 rows times a bf16 weight: where the CPU multiplies bf16 natively the
    /// rows are rounded to bf16 first, else the product is the widened one.
    #[test]
    fn f32_rows_times_bf16_weights_round_only_where_bf16_is_native() {
        let (m, k, n) = (70, 96, 40);
        let dev = Default::default();
        // Values that bf16 does not hold exactly.
        let xs: Vec<f32> = spread(m * k, 3).iter().map(|v| v + 1e-3).collect();
        let w: Vec<bf16> = spread(n * k, 4)
            .iter()
            .map(|v| bf16::from_f32(*v))
            .collect();
        let x = Tensor::<Flex, 2>::from_data(TensorData::new(xs.clone(), [m, k]), &dev);
        let got = crate::to_f32_vec(product_tensor(
            &x,
            [m, k, n],
            &Weight::Bf16(&w),
            false,
            None,
        ));
        let rounded = crate::cpu::has_bf16_dot();
        let lhs: Vec<f32> = if rounded {
            xs.iter().map(|v| bf16::from_f32(*v).to_f32()).collect()
        } else {
            xs.clone()
        };
        for (i, g) in got.iter().enumerate() {
            let (r, j) = (i / n, i % n);
            let want: f32 = (0..k).map(|c| lhs[r * k + c] * w[j * k + c].to_f32()).sum();
            assert!(
                (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "[{r}, {j}] (rounded: {rounded}): {g} vs {want}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "does not hold [4, 64]")]
    fn a_weight_of_another_shape_is_refused() {
        let q = QuantMatrix::quantize(crate::quant::QuantFormat::Q8_0, 4, 32, &[0.5; 128]).unwrap();
        let q = Interleaved::new(q, 16);
        product(
            Lhs::F32(&[1.0; 3 * 64]),
            [3, 64, 4],
            &Weight::Quant(&q),
            false,
            None,
        );
    }

    #[test]
    fn every_tiling_and_weight_kind_gives_the_plain_product() {
        // 130 rows: a row split into 65 + 65 when the output is narrow; 300
        // columns: panels with a short last one.
        for (m, k, n) in [(130, 96, 70), (130, 96, 300), (17, 64, 5)] {
            let x = spread(m * k, 1);
            let w = spread(n * k, 7);
            let bias = spread(n, 3);
            let q = QuantMatrix::quantize(crate::quant::QuantFormat::Q4_0, n, k, &w).unwrap();
            let mut wq = vec![0f32; n * k];
            q.dequantize_rows(0..n, &mut wq);
            let q = Interleaved::new(q, 16);
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            let wb: Vec<bf16> = w.iter().map(|v| bf16::from_f32(*v)).collect();
            let t: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let th: Vec<f16> = t.iter().map(|v| f16::from_f32(*v)).collect();
            let plain = |w: &dyn Fn(usize, usize) -> f32| -> Vec<f32> {
                (0..m * n)
                    .map(|i| {
                        let (r, j) = (i / n, i % n);
                        bias[j] + (0..k).map(|c| x[r * k + c] * w(j, c)).sum::<f32>()
                    })
                    .collect()
            };
            let exact = plain(&|j, c| w[j * k + c]);
            let half = plain(&|j, c| wh[j * k + c].to_f32());
            let brain = plain(&|j, c| wb[j * k + c].to_f32());
            let quant = plain(&|j, c| wq[j * k + c]);
            let cases: [(&str, Weight<'_>, bool, &[f32]); 6] = [
                ("f32", Weight::F32(&w), false, &exact),
                ("f32 in_out", Weight::F32(&t), true, &exact),
                ("f16", Weight::F16(&wh), false, &half),
                ("f16 in_out", Weight::F16(&th), true, &half),
                ("bf16", Weight::Bf16(&wb), false, &brain),
                ("q4_0", Weight::Quant(&q), false, &quant),
            ];
            for want_tasks in [1, 4, 32] {
                for (name, weight, in_out, want) in &cases {
                    let got = product_in_tasks(
                        Lhs::F32(&x),
                        [m, k, n],
                        weight,
                        *in_out,
                        Some(&bias),
                        want_tasks,
                    );
                    assert_eq!(got.len(), m * n);
                    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{name} {m}x{k}x{n} in {want_tasks} tasks, [{}, {}]: {g} vs {w}",
                            i / n,
                            i % n
                        );
                    }
                }
            }
        }
    }
}
