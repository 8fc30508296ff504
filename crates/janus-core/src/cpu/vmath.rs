//! Vectorised `exp` and exact-GELU over f32 slices (AVX-512 with a scalar
//! fallback), for the attention softmax and the ViT/aligner MLPs.
//!
//! `exp` reduces `x = n·ln2 + r` with `|r| <= ln2/2`, evaluates a degree-6
//! Taylor polynomial (relative error below 2e-7) and scales by `2^n`. The GELU
//! uses Abramowitz & Stegun 7.1.26 for `erf` (absolute error below 1.5e-7), the
//! formula PyTorch's vectorised CPU `erf` uses as well.

use burn::prelude::*;
use burn::tensor::DType;

use super::{from_flex, is_dense, to_flex};

/// Exact GELU of an f32 tensor on the CPU backend, in place when its buffer is
/// not shared; `Err` gives `x` back on other backends, dtypes and layouts.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let mut f = to_flex(x)?;
    if f.dtype() != DType::F32 || !is_dense(&f) || !f.is_unique() {
        return Err(from_flex(f));
    }
    gelu_in_place(f.storage_mut::<f32>());
    Ok(from_flex(f))
}

/// `row[i] = exp(row[i] - max)`; returns the sum of the new values.
pub(crate) fn exp_sub_sum(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { avx512::exp_sub_sum(row, max) };
    }
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

/// `x = x/2 · (1 + erf(x/√2))` in place.
pub(crate) fn gelu_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        return unsafe { avx512::gelu_in_place(x) };
    }
    for v in x.iter_mut() {
        *v = gelu_scalar(*v);
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

fn gelu_scalar(x: f32) -> f32 {
    let z = (x * std::f32::consts::FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + ERF_P * z);
    let poly = t * (ERF_A[0] + t * (ERF_A[1] + t * (ERF_A[2] + t * (ERF_A[3] + t * ERF_A[4]))));
    let erf = 1.0 - poly * (-z * z).exp();
    0.5 * x * (1.0 + erf.copysign(x))
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{ERF_A, ERF_P};

    /// `exp(x)` on 16 lanes; inputs below -87 give (nearly) 0.
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn exp_sub_sum(row: &mut [f32], max: f32) -> f32 {
        let m = _mm512_set1_ps(max);
        let mut acc = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 values.
            unsafe {
                let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), m));
                _mm512_storeu_ps(c.as_mut_ptr(), e);
                acc = _mm512_add_ps(acc, e);
            }
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        for v in chunks.into_remainder() {
            *v = (*v - max).exp();
            sum += *v;
        }
        sum
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu_in_place(x: &mut [f32]) {
        let one = _mm512_set1_ps(1.0);
        let sign = _mm512_set1_ps(-0.0);
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` holds 16 values.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            let z = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
            let za = _mm512_abs_ps(z);
            let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(ERF_P), za, one));
            let mut p = _mm512_set1_ps(ERF_A[4]);
            for a in [ERF_A[3], ERF_A[2], ERF_A[1], ERF_A[0]] {
                p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(a));
            }
            p = _mm512_mul_ps(p, t);
            let e = exp16(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), za), za));
            // erf(|z|), then the sign of z.
            let erf = _mm512_fnmadd_ps(p, e, one);
            let erf = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_castps_si512(erf),
                _mm512_and_si512(_mm512_castps_si512(sign), _mm512_castps_si512(z)),
            ));
            let y = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(0.5), v),
                _mm512_add_ps(one, erf),
            );
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), y) };
        }
        for v in chunks.into_remainder() {
            *v = super::gelu_scalar(*v);
        }
    }
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
    fn exp_and_gelu_match_f64_references() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 120.0).collect();
        let mut e = xs.clone();
        let sum = exp_sub_sum(&mut e, 1.5);
        let mut want_sum = 0.0f64;
        for (x, e) in xs.iter().zip(&e) {
            let want = ((*x - 1.5) as f64).exp();
            want_sum += want;
            assert!(
                ((*e as f64) - want).abs() <= 3e-7 * want,
                "exp({x}): {e} vs {want}"
            );
        }
        assert!((sum as f64 - want_sum).abs() <= 1e-5 * want_sum);
        let mut g = xs.clone();
        gelu_in_place(&mut g);
        for (x, g) in xs.iter().zip(&g) {
            let x = *x as f64;
            let want = 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2));
            assert!(
                (*g as f64 - want).abs() <= 1e-6 * (1.0 + x.abs()),
                "gelu({x}): {g} vs {want}"
            );
        }
    }
}
