//! Row-wise operations of a decoder layer that Burn runs as chains of
//! element-wise ops (each a pass over the data, a temporary and, on strided
//! views, a slow index walk): RMSNorm, the rotary embedding and the gated
//! MLP's `silu(gate) · up`, in one pass over host values. Each intermediate
//! is rounded to the tensor's dtype where the generic ops round it, so the
//! results are the generic ops' values.

use burn::prelude::*;
use burn::tensor::DType;
use half::{bf16, f16};
use rayon::prelude::*;

/// Rounds f32 values to a 16-bit float dtype and back, in place, a slice at
/// a time (vectorised conversions; a per-value call through a function
/// pointer costs more than the arithmetic around it).
#[derive(Clone, Copy)]
enum Rounding {
    None,
    F16,
    Bf16,
}

impl Rounding {
    /// The rounding of `dtype`, or `None` for dtypes the paths do not cover.
    fn of(dtype: DType) -> Option<Self> {
        match dtype {
            DType::F32 => Some(Self::None),
            DType::F16 => Some(Self::F16),
            DType::BF16 => Some(Self::Bf16),
            _ => None,
        }
    }

    fn apply(self, v: &mut [f32]) {
        const CHUNK: usize = 256;
        match self {
            Self::None => {}
            Self::F16 => {
                let mut h = [f16::ZERO; CHUNK];
                for c in v.chunks_mut(CHUNK) {
                    super::narrow(c, &mut h);
                    super::widen(&h[..c.len()], c);
                }
            }
            Self::Bf16 => {
                let mut h = [bf16::ZERO; CHUNK];
                for c in v.chunks_mut(CHUNK) {
                    super::narrow(c, &mut h);
                    super::widen(&h[..c.len()], c);
                }
            }
        }
    }
}

/// Elements below which the rows run on one thread.
const PARALLEL_FROM: usize = 1 << 16;

/// Runs `f` on each row of `d` values, on all threads for large inputs.
fn each_row(v: &mut [f32], d: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    if v.len() >= PARALLEL_FROM {
        v.par_chunks_mut(d).for_each(f);
    } else {
        v.chunks_mut(d).for_each(f);
    }
}

/// `RMSNorm(x) · weight` over the last dimension: statistics in f32,
/// `x / sqrt(mean(x²) + eps)` rounded to `x`'s dtype, then times `weight`
/// (what `RmsNorm::forward`'s generic ops compute). `None` off the CPU backend.
pub(crate) fn rms_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Option<Tensor<B, D>> {
    let dims = x.dims();
    let d = dims[D - 1];
    if !super::is_flex::<B>() || d == 0 || weight.dims() != [d] || weight.dtype() != x.dtype() {
        return None;
    }
    let dtype = x.dtype();
    let round = Rounding::of(dtype)?;
    let mut v = crate::to_f32_vec(x.clone());
    let w = crate::to_f32_vec(weight.clone());
    let norm = |row: &mut [f32]| {
        // Summed in f64: at most the f32 sum's own rounding away from it.
        let ms = (row.iter().map(|v| f64::from(v * v)).sum::<f64>() / d as f64) as f32;
        let r = 1.0 / (ms + eps as f32).sqrt();
        row.iter_mut().for_each(|v| *v *= r);
        round.apply(row);
        row.iter_mut().zip(&w).for_each(|(v, w)| *v *= w);
    };
    each_row(&mut v, d, norm);
    Some(crate::host::from_f32_vec(v, dims, &x.device(), dtype))
}

/// `LayerNorm(x) · weight + bias` over the last dimension: statistics in f32
/// (summed in f64), the normalised values rounded to `x`'s dtype, times
/// `weight` rounded, plus `bias` (what `LayerNorm::forward`'s generic ops
/// compute); `weight` and `bias` may be 16-bit under f32 `x`. `None` off the
/// CPU backend.
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
    eps: f64,
) -> Option<Tensor<B, D>> {
    let dims = x.dims();
    let d = dims[D - 1];
    let dtype = x.dtype();
    if !super::is_flex::<B>()
        || d == 0
        || weight.dims() != [d]
        || bias.dims() != [d]
        || (dtype != DType::F32 && (weight.dtype() != dtype || bias.dtype() != dtype))
    {
        return None;
    }
    let round = Rounding::of(dtype)?;
    let mut v = crate::to_f32_vec(x.clone());
    let (w, b) = (
        crate::to_f32_vec(weight.clone()),
        crate::to_f32_vec(bias.clone()),
    );
    let norm = |row: &mut [f32]| {
        let mean = (row.iter().map(|v| f64::from(*v)).sum::<f64>() / d as f64) as f32;
        row.iter_mut().for_each(|v| *v -= mean);
        let var = (row.iter().map(|v| f64::from(v * v)).sum::<f64>() / d as f64) as f32;
        let sd = (var + eps as f32).sqrt();
        row.iter_mut().for_each(|v| *v /= sd);
        round.apply(row);
        row.iter_mut().zip(&w).for_each(|(v, w)| *v *= w);
        round.apply(row);
        row.iter_mut().zip(&b).for_each(|(v, b)| *v += b);
    };
    each_row(&mut v, d, norm);
    Some(crate::host::from_f32_vec(v, dims, &x.device(), dtype))
}

/// `x · cos + rotate_half(x) · sin` for `x [b, h, t, d]` and tables
/// `[b, 1, t, d]`, where `rotate_half(x) = [-x[d/2..], x[..d/2]]`; both
/// products and the sum rounded to `x`'s dtype. `None` off the CPU backend or
/// for other shapes.
pub(crate) fn rope<B: Backend>(
    x: &Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    let [b, h, t, d] = x.dims();
    let dtype = x.dtype();
    if !super::is_flex::<B>()
        || d % 2 != 0
        || d > 512
        || b * h * t * d == 0
        || cos.dims() != [b, 1, t, d]
        || sin.dims() != [b, 1, t, d]
        || cos.dtype() != dtype
        || sin.dtype() != dtype
    {
        return None;
    }
    let round = Rounding::of(dtype)?;
    let xs = crate::to_f32_vec(x.clone());
    let (cs, ss) = (
        crate::to_f32_vec(cos.clone()),
        crate::to_f32_vec(sin.clone()),
    );
    let half = d / 2;
    let mut out = vec![0f32; xs.len()];
    // One (batch, head) plane of `t x d` values per task.
    let plane = |(p, (o, x)): (usize, (&mut [f32], &[f32]))| {
        let table = (p / h) * t * d;
        for ((o, x), (c, s)) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(
            cs[table..table + t * d]
                .chunks_exact(d)
                .zip(ss[table..table + t * d].chunks_exact(d)),
        ) {
            let mut rot = [0f32; 512];
            let rot = &mut rot[..d];
            for j in 0..half {
                rot[j] = -x[j + half] * s[j];
                rot[j + half] = x[j] * s[j + half];
            }
            o.iter_mut()
                .zip(x.iter().zip(c))
                .for_each(|(o, (x, c))| *o = x * c);
            round.apply(o);
            round.apply(rot);
            o.iter_mut().zip(rot.iter()).for_each(|(o, r)| *o += r);
        }
    };
    if xs.len() >= PARALLEL_FROM {
        out.par_chunks_mut(t * d)
            .zip(xs.par_chunks(t * d))
            .enumerate()
            .for_each(plane);
    } else {
        out.chunks_mut(t * d)
            .zip(xs.chunks(t * d))
            .enumerate()
            .for_each(plane);
    }
    Some(crate::host::from_f32_vec(
        out,
        [b, h, t, d],
        &x.device(),
        dtype,
    ))
}

/// `silu(gate) · up` (the gated MLP's activation): SiLU in f32 rounded to
/// the dtype, as PyTorch rounds it, then the product. `None` off the CPU
/// backend or for differing shapes or dtypes.
pub(crate) fn silu_mul<B: Backend, const D: usize>(
    gate: &Tensor<B, D>,
    up: &Tensor<B, D>,
) -> Option<Tensor<B, D>> {
    let dims = gate.dims();
    let dtype = gate.dtype();
    if !super::is_flex::<B>() || up.dims() != dims || up.dtype() != dtype {
        return None;
    }
    let round = Rounding::of(dtype)?;
    let mut g = crate::to_f32_vec(gate.clone());
    let u = crate::to_f32_vec(up.clone());
    zip_chunks(&mut g, &u, |g, u| {
        super::vmath::silu_in_place(g);
        round.apply(g);
        g.iter_mut().zip(u).for_each(|(g, u)| *g *= u);
    });
    Some(crate::host::from_f32_vec(g, dims, &gate.device(), dtype))
}

/// `a + b` for f16 or bf16 tensors of one shape in one pass over host values
/// (burn-flex adds 16-bit values one by one through a closure): the sum of
/// the two values in f32, rounded once, as Burn's. `None` for f32 (Burn's add
/// is vectorised), other backends, shapes or dtypes.
pub(crate) fn add<B: Backend, const D: usize>(
    a: &Tensor<B, D>,
    b: &Tensor<B, D>,
) -> Option<Tensor<B, D>> {
    let (dims, dtype) = (a.dims(), a.dtype());
    if !super::is_flex::<B>()
        || b.dims() != dims
        || b.dtype() != dtype
        || !matches!(dtype, DType::F16 | DType::BF16)
    {
        return None;
    }
    let mut x = crate::to_f32_vec(a.clone());
    let y = crate::to_f32_vec(b.clone());
    zip_chunks(&mut x, &y, |x, y| {
        x.iter_mut().zip(y).for_each(|(x, y)| *x += y)
    });
    Some(crate::host::from_f32_vec(x, dims, &a.device(), dtype))
}

/// Runs `f` on matching chunks of `x` and `y` (as long as `x`), one chunk per
/// thread for large inputs.
fn zip_chunks(x: &mut [f32], y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if x.len() >= PARALLEL_FROM {
        let chunk = x.len().div_ceil(rayon::current_num_threads().max(1));
        x.par_chunks_mut(chunk)
            .zip(y.par_chunks(chunk))
            .for_each(|(x, y)| f(x, y));
    } else {
        f(x, y);
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn half_adds_round_like_burn() {
        let dev = Default::default();
        // Large enough for the parallel path, plus a small one.
        for n in [37, PARALLEL_FROM + 5] {
            let a = Tensor::<Flex, 2>::random([n, 1], Distribution::Normal(0.0, 3.0), &dev);
            let b = Tensor::<Flex, 2>::random([n, 1], Distribution::Normal(0.0, 1e-3), &dev);
            for dtype in [DType::F16, DType::BF16] {
                let (a, b) = (a.clone().cast(dtype), b.clone().cast(dtype));
                let got = add(&a, &b).expect("16-bit on the CPU");
                assert_eq!(got.dtype(), dtype);
                assert_eq!(got.into_data(), (a + b).into_data(), "{dtype:?} {n}");
            }
        }
        let f = Tensor::<Flex, 2>::ones([3, 2], &dev);
        assert!(add(&f, &f).is_none());
        assert!(
            add(
                &f.clone().cast(DType::F16),
                &Tensor::<Flex, 2>::ones([2, 3], &dev).cast(DType::F16)
            )
            .is_none()
        );
    }

    fn generic_rope(
        x: Tensor<Flex, 4>,
        cos: Tensor<Flex, 4>,
        sin: Tensor<Flex, 4>,
    ) -> Tensor<Flex, 4> {
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        x * cos + Tensor::cat(vec![x2.neg(), x1], 3) * sin
    }

    fn generic_rms(x: Tensor<Flex, 3>, w: Tensor<Flex, 1>, eps: f64) -> Tensor<Flex, 3> {
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let ms = x.clone().square().mean_dim(2);
        (x * (ms + eps).sqrt().recip()).cast(dtype) * w.unsqueeze()
    }

    /// Largest difference in units of the dtype's epsilon at the value's scale.
    fn max_ulps(a: Vec<f32>, b: Vec<f32>, dtype: DType) -> f32 {
        let eps = match dtype {
            DType::F16 => 1.0 / 1024.0,
            DType::BF16 => 1.0 / 128.0,
            _ => f32::EPSILON,
        };
        a.iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs() / (eps * a.abs().max(b.abs()).max(1e-3)))
            .fold(0.0, f32::max)
    }

    #[test]
    fn silu_mul_matches_silu_then_the_product() {
        let dev = Default::default();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (rows, d) in [(1, 40), (80, 5632)] {
                let g = Tensor::<Flex, 2>::random([rows, d], Distribution::Normal(0.0, 3.0), &dev)
                    .cast(dtype);
                let u = Tensor::<Flex, 2>::random([rows, d], Distribution::Normal(0.0, 1.0), &dev)
                    .cast(dtype);
                let got = silu_mul(&g, &u).expect("cpu path");
                assert_eq!(got.dtype(), dtype);
                // SiLU in f64, rounded to the dtype, times up, rounded.
                let round = |v: f32| match dtype {
                    DType::F16 => f16::from_f32(v).to_f32(),
                    DType::BF16 => bf16::from_f32(v).to_f32(),
                    _ => v,
                };
                let want: Vec<f32> = crate::to_f32_vec(g)
                    .iter()
                    .zip(crate::to_f32_vec(u))
                    .map(|(&g, u)| {
                        let s = (g as f64 / (1.0 + (-(g as f64)).exp())) as f32;
                        round(round(s) * u)
                    })
                    .collect();
                // The vectorised exp is within 2e-7: in 16 bits it may flip a
                // rounding (one step, times up, rounded again).
                let tol = if dtype == DType::F32 { 8.0 } else { 3.0 };
                let ulps = max_ulps(crate::to_f32_vec(got), want, dtype);
                assert!(ulps <= tol, "silu_mul {dtype:?} {rows}x{d}: {ulps} ulps");
            }
        }
    }

    #[test]
    fn layer_norm_gives_the_generic_ops_values() {
        let dev = Default::default();
        // (activations, weight and bias): 16-bit weights also under f32 activations.
        let pairs = [
            (DType::F32, DType::F32),
            (DType::F16, DType::F16),
            (DType::BF16, DType::BF16),
            (DType::F32, DType::F16),
            (DType::F32, DType::BF16),
        ];
        for (dtype, wdtype) in pairs {
            for (rows, d) in [(3, 16), (576, 1024)] {
                let x =
                    Tensor::<Flex, 3>::random([1, rows, d], Distribution::Normal(0.5, 2.0), &dev)
                        .cast(dtype);
                let w = Tensor::<Flex, 1>::random([d], Distribution::Normal(1.0, 0.3), &dev)
                    .cast(wdtype);
                let b = Tensor::<Flex, 1>::random([d], Distribution::Normal(0.0, 0.3), &dev)
                    .cast(wdtype);
                let got = layer_norm(&x, &w, &b, 1e-6).expect("cpu path");
                assert_eq!(got.dtype(), dtype);
                let want = {
                    let x = x.clone().cast(DType::F32);
                    let c = x.clone() - x.mean_dim(2);
                    let var = c.clone().square().mean_dim(2);
                    (c / (var + 1e-6).sqrt()).cast(dtype) * w.cast(dtype).unsqueeze()
                        + b.cast(dtype).unsqueeze()
                };
                let (got, want) = (crate::to_f32_vec(got), crate::to_f32_vec(want));
                if dtype == DType::F32 {
                    // Statistics summed differently (f64 here): values of
                    // order one agree to a few f32 steps.
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(err <= 2e-5, "layer_norm f32 ({wdtype:?}) {rows}x{d}: {err}");
                } else {
                    // A flipped rounding of the normalised value (order one),
                    // times the weight, rounded twice more: steps at the scale
                    // of the intermediates, not of a result near zero.
                    let step = if dtype == DType::F16 {
                        1.0 / 1024.0
                    } else {
                        1.0 / 128.0
                    };
                    let worst = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs() / (step * a.abs().max(b.abs()).max(1.0)))
                        .fold(0.0, f32::max);
                    assert!(
                        worst <= 3.0,
                        "layer_norm {dtype:?} {rows}x{d}: {worst} steps"
                    );
                }
            }
        }
    }

    #[test]
    fn rope_and_rms_norm_give_the_generic_ops_values() {
        let dev = Default::default();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            // A swapped (strided) view as the attention passes it; two batches
            // with their own tables; sizes on both sides of PARALLEL_FROM.
            for (b, h, t, d) in [(2, 3, 5, 8), (1, 16, 40, 128)] {
                let x =
                    Tensor::<Flex, 4>::random([b, t, h, d], Distribution::Normal(0.0, 1.0), &dev)
                        .cast(dtype)
                        .swap_dims(1, 2);
                let cos =
                    Tensor::<Flex, 4>::random([b, 1, t, d], Distribution::Uniform(-1.0, 1.0), &dev)
                        .cast(dtype);
                let sin =
                    Tensor::<Flex, 4>::random([b, 1, t, d], Distribution::Uniform(-1.0, 1.0), &dev)
                        .cast(dtype);
                let got = rope(&x, &cos, &sin).expect("cpu path");
                assert_eq!(got.dims(), [b, h, t, d]);
                assert_eq!(got.dtype(), dtype);
                let want = generic_rope(x, cos, sin);
                let ulps = max_ulps(crate::to_f32_vec(got), crate::to_f32_vec(want), dtype);
                assert!(ulps <= 1.0, "rope {dtype:?} {b}x{h}x{t}x{d}: {ulps} ulps");
            }
            for (rows, d) in [(3, 16), (600, 2048)] {
                let x =
                    Tensor::<Flex, 3>::random([1, rows, d], Distribution::Normal(0.5, 2.0), &dev)
                        .cast(dtype);
                let w = Tensor::<Flex, 1>::random([d], Distribution::Normal(1.0, 0.3), &dev)
                    .cast(dtype);
                let got = rms_norm(&x, &w, 1e-6).expect("cpu path");
                assert_eq!(got.dtype(), dtype);
                let want = generic_rms(x, w, 1e-6);
                let ulps = max_ulps(crate::to_f32_vec(got), crate::to_f32_vec(want), dtype);
                // The mean's summation differs (f64 here, f32 there): in f32
                // by the f32 sum's error over 2048 terms; in 16 bits it can
                // flip the intermediate rounding (one step, times the weight,
                // then rounded again).
                let tol = if dtype == DType::F32 { 64.0 } else { 3.0 };
                assert!(ulps <= tol, "rms_norm {dtype:?} {rows}x{d}: {ulps} ulps");
            }
        }
    }
}
