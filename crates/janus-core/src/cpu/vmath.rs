//! Vectorised `exp`, exact GELU and SiLU over f32 slices at the SIMD level of
//! [`super::simd::level`], for the attention softmax, the ViT/aligner MLPs and
//! the VQ decoder's GroupNorm+SiLU.
//!
//! `exp` is [`simd::exp`] (relative error below 2e-7). The GELU uses
//! Abramowitz & Stegun 7.1.26 for `erf` (absolute error below 1.5e-7), the
//! formula PyTorch's vectorised CPU `erf` uses as well.

use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::simd::{self, Kernel, Lanes, Level};
use super::{from_flex, is_dense, to_flex};

/// Exact GELU of an f32 tensor on the CPU backend, in place when its buffer is
/// not shared; `Err` gives `x` back on other backends, dtypes and layouts.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let mut f = to_flex(x)?;
    if matches!(f.dtype(), DType::F16 | DType::BF16) {
        // 16 bits: through f32 values (one rounding, as PyTorch's kernel).
        let x: Tensor<B, D> = from_flex(f);
        let (dims, device, dtype) = (x.dims(), x.device(), x.dtype());
        let mut v = crate::to_f32_vec(x);
        let chunk = v
            .len()
            .div_ceil(rayon::current_num_threads().max(1))
            .max(1 << 16);
        v.par_chunks_mut(chunk).for_each(gelu_in_place);
        return Ok(crate::host::from_f32_vec(v, dims, &device, dtype));
    }
    if f.dtype() != DType::F32 || !is_dense(&f) || !f.is_unique() {
        return Err(from_flex(f));
    }
    gelu_in_place(f.storage_mut::<f32>());
    Ok(from_flex(f))
}

/// `row[i] = exp(row[i] - max)`; returns the sum of the new values.
pub(crate) fn exp_sub_sum(row: &mut [f32], max: f32) -> f32 {
    exp_sub_sum_at(simd::level(), row, max)
}

pub(crate) fn exp_sub_sum_at(level: Level, row: &mut [f32], max: f32) -> f32 {
    struct K<'a>(&'a mut [f32], f32);
    impl Kernel for K<'_> {
        type Output = f32;
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) -> f32 {
            exp_sub_sum_lanes(s, self.0, self.1)
        }
    }
    simd::dispatch_at(level, K(row, max))
}

/// [`exp_sub_sum`] inside a kernel at level `S` (`-inf` gives a value near
/// zero, `exp(-87)`).
#[inline(always)]
pub(crate) fn exp_sub_sum_lanes<S: Lanes>(s: S, row: &mut [f32], max: f32) -> f32 {
    let m = s.splat(max);
    let mut acc = s.zero();
    let nv = row.len() / S::N * S::N;
    let mut i = 0;
    while i < nv {
        // SAFETY: `i + N <= len`.
        unsafe {
            let p = row.as_mut_ptr().add(i);
            let e = simd::exp(s, s.sub(s.load(p), m));
            s.store(p, e);
            acc = s.add(acc, e);
        }
        i += S::N;
    }
    let mut sum = s.reduce_sum(acc);
    for v in &mut row[nv..] {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

/// The largest value of `row` (`-inf` when empty).
pub(crate) fn max_of(row: &[f32]) -> f32 {
    max_of_at(simd::level(), row)
}

pub(crate) fn max_of_at(level: Level, row: &[f32]) -> f32 {
    struct K<'a>(&'a [f32]);
    impl Kernel for K<'_> {
        type Output = f32;
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) -> f32 {
            let row = self.0;
            let nv = row.len() / S::N * S::N;
            let mut acc = s.splat(f32::NEG_INFINITY);
            let mut i = 0;
            while i < nv {
                // SAFETY: `i + N <= len`.
                acc = s.max(acc, unsafe { s.load(row.as_ptr().add(i)) });
                i += S::N;
            }
            row[nv..].iter().copied().fold(s.reduce_max(acc), f32::max)
        }
    }
    simd::dispatch_at(level, K(row))
}

/// `x = x/2 · (1 + erf(x/√2))` in place.
pub(crate) fn gelu_in_place(x: &mut [f32]) {
    gelu_in_place_at(simd::level(), x)
}

pub(crate) fn gelu_in_place_at(level: Level, x: &mut [f32]) {
    struct K<'a>(&'a mut [f32]);
    impl Kernel for K<'_> {
        type Output = ();
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) {
            simd::map_in_place(s, self.0, Gelu);
        }
    }
    simd::dispatch_at(level, K(x))
}

/// `x = x · sigmoid(x)` in place.
pub(crate) fn silu_in_place(x: &mut [f32]) {
    silu_in_place_at(simd::level(), x)
}

pub(crate) fn silu_in_place_at(level: Level, x: &mut [f32]) {
    struct K<'a>(&'a mut [f32]);
    impl Kernel for K<'_> {
        type Output = ();
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) {
            simd::map_in_place(s, self.0, Silu);
        }
    }
    simd::dispatch_at(level, K(x))
}

/// `x · sigmoid(x)` per lane.
pub(crate) struct Silu;
impl simd::LaneFn for Silu {
    #[inline(always)]
    fn apply<S: Lanes>(&self, s: S, v: S::V) -> S::V {
        let e = simd::exp(s, s.sub(s.zero(), v));
        s.div(v, s.add(s.splat(1.0), e))
    }
}

/// Exact GELU per lane ([`gelu_lanes`]).
struct Gelu;
impl simd::LaneFn for Gelu {
    #[inline(always)]
    fn apply<S: Lanes>(&self, s: S, v: S::V) -> S::V {
        gelu_lanes(s, v)
    }
}

const ERF_P: f32 = 0.327_591_1;
const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_8,
    -1.453_152,
    1.061_405_4,
];

#[inline(always)]
fn gelu_lanes<S: Lanes>(s: S, v: S::V) -> S::V {
    let one = s.splat(1.0);
    let z = s.mul(v, s.splat(std::f32::consts::FRAC_1_SQRT_2));
    let za = s.abs(z);
    let t = s.div(one, s.fma(s.splat(ERF_P), za, one));
    let mut p = s.splat(ERF_A[4]);
    for a in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
        p = s.fma(p, t, s.splat(a));
    }
    p = s.mul(p, t);
    let e = simd::exp(s, s.mul(s.sub(s.zero(), za), za));
    // erf(|z|) = 1 - p·e, then the sign of z.
    let erf = s.copysign(s.sub(one, s.mul(p, e)), z);
    s.mul(s.mul(s.splat(0.5), v), s.add(one, erf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf64(x: f64) -> f64 {
        // Series for |x| < 3, 1 - erfc asymptotics are not needed at these inputs.
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_gelu_and_silu_match_f64_references_at_every_level() {
        for &level in Level::available() {
            check(level);
        }
    }

    fn check(level: Level) {
        // 1003 values: whole vectors and a tail at every lane count.
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) / 120.0).collect();
        let mut e = xs.clone();
        let sum = exp_sub_sum_at(level, &mut e, 1.5);
        let mut want_sum = 0.0f64;
        for (x, e) in xs.iter().zip(&e) {
            let want = ((*x - 1.5) as f64).exp();
            want_sum += want;
            assert!(
                ((*e as f64) - want).abs() <= 3e-7 * want,
                "{level} exp({x}): {e} vs {want}"
            );
        }
        assert!((sum as f64 - want_sum).abs() <= 1e-5 * want_sum);
        assert_eq!(max_of_at(level, &xs), xs[1002]);
        assert_eq!(max_of_at(level, &xs[..5]), xs[4]);
        assert_eq!(max_of_at(level, &[]), f32::NEG_INFINITY);
        let mut g = xs.clone();
        gelu_in_place_at(level, &mut g);
        for (x, g) in xs.iter().zip(&g) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
            assert!(
                (*g as f64 - want).abs() <= 1e-6 * (1.0 + x.abs()),
                "{level} gelu({x}): {g} vs {want}"
            );
        }
        let mut si = xs.clone();
        silu_in_place_at(level, &mut si);
        for (x, y) in xs.iter().zip(&si) {
            let x = *x as f64;
            let want = x / (1.0 + (-x).exp());
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * (1.0 + x.abs()),
                "{level} silu({x}): {y} vs {want}"
            );
        }
    }
}
