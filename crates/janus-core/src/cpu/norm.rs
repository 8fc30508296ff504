//! GroupNorm (optionally followed by SiLU) in two passes over the data, instead
//! of the dozen tensor ops and temporaries of the generic formulation.

use burn::prelude::*;
use rayon::prelude::*;

use super::simd::{self, Kernel, Lanes, Level};
use super::vmath::silu_in_place;
use super::{F32Values, host_f32};

/// `GroupNorm(groups, eps)` over `x [B, C, ...]` with per-channel `weight` and
/// `bias`, then `y · sigmoid(y)` when `silu`; statistics in f32. `None` on other
/// backends (use the generic ops).
pub fn group_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Option<Tensor<B, D>> {
    let dims = x.dims();
    if D < 2 {
        return None;
    }
    let (b, c) = (dims[0], dims[1]);
    let spatial: usize = dims[2..].iter().product();
    if groups == 0 || c % groups != 0 || b * c * spatial == 0 {
        return None;
    }
    if !super::is_flex::<B>() {
        return None;
    }
    let xs = F32Values::of(x)?;
    let (gamma, beta) = (host_f32(weight)?, host_f32(bias)?);
    let per_group = c / groups * spatial;
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(per_group)
        .zip(xs.par_chunks(per_group))
        .enumerate()
        .for_each(|(bg, (o, x))| {
            let n = x.len() as f64;
            let level = simd::level();
            let mean = (sum_at(level, x, None) / n) as f32;
            let var = sum_at(level, x, Some(mean)) / n;
            let rstd = (1.0 / (var + eps).sqrt()) as f32;
            let c0 = (bg % groups) * (c / groups);
            for ((o, x), ch) in o
                .chunks_exact_mut(spatial)
                .zip(x.chunks_exact(spatial))
                .zip(c0..)
            {
                let (scale, shift) = (rstd * gamma[ch], beta[ch] - mean * rstd * gamma[ch]);
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = x * scale + shift;
                }
                if silu {
                    silu_in_place(o);
                }
            }
        });
    Some(crate::host::from_f32_vec(out, dims, &x.device(), x.dtype()))
}

/// `Σ v`, or `Σ (v - mean)²` with `mean`, at `level`: f32 vectors over
/// blocks of [`SUM_BLOCK`] values (16 values or fewer per lane and
/// accumulator), the blocks' sums added in f64 (keeps large groups accurate;
/// the f64 loop it replaced ran at the build's baseline SIMD).
fn sum_at(level: Level, x: &[f32], mean: Option<f32>) -> f64 {
    simd::dispatch_at(level, Sum { x, mean })
}

/// Values per f32 partial sum of [`sum_at`].
const SUM_BLOCK: usize = 1024;

struct Sum<'a> {
    x: &'a [f32],
    mean: Option<f32>,
}

impl Kernel for Sum<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) -> f64 {
        let Self { x, mean } = self;
        let m = mean.unwrap_or(0.0);
        let (mv, centred) = (s.splat(m), mean.is_some());
        let mut total = 0f64;
        for block in x.chunks(SUM_BLOCK) {
            let mut acc = [s.zero(); 4];
            let whole = block.len() / (4 * S::N) * (4 * S::N);
            for c in (0..whole).step_by(4 * S::N) {
                for (k, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: `c + (k + 1) N <= whole <= block.len()`.
                    let v = unsafe { s.load(block.as_ptr().add(c + k * S::N)) };
                    *acc = if centred {
                        let d = s.sub(v, mv);
                        s.fma(d, d, *acc)
                    } else {
                        s.add(*acc, v)
                    };
                }
            }
            let lanes = s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3]));
            let mut part = s.reduce_sum(lanes) as f64;
            for &v in &block[whole..] {
                part += if centred {
                    ((v - m) as f64).powi(2)
                } else {
                    v as f64
                };
            }
            total += part;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn matches_the_generic_formulation() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random([2, 8, 5, 3], Distribution::Normal(0.5, 2.0), &dev);
        let g = Tensor::<Flex, 1>::random([8], Distribution::Normal(1.0, 0.3), &dev);
        let bta = Tensor::<Flex, 1>::random([8], Distribution::Normal(0.0, 0.3), &dev);
        let groups = 4;
        let grouped = x.clone().reshape([2, groups, 2 * 15]);
        let mean = grouped.clone().mean_dim(2);
        let centered = grouped - mean;
        let var = centered.clone().square().mean_dim(2);
        let norm = (centered / (var + 1e-6).sqrt()).reshape([2, 8, 5, 3]);
        let want = norm * g.clone().reshape([1, 8, 1, 1]) + bta.clone().reshape([1, 8, 1, 1]);
        for silu in [false, true] {
            let got = group_norm(&x, &g, &bta, groups, 1e-6, silu).expect("fast path");
            let want = if silu {
                burn::tensor::activation::silu(want.clone())
            } else {
                want.clone()
            };
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "silu {silu}: {diff}");
        }
    }

    #[test]
    fn sums_match_f64_at_every_level() {
        // Whole vectors, a tail and more than one block.
        let x: Vec<f32> = (0..2 * SUM_BLOCK + 77)
            .map(|i| (i as f32 * 0.37).sin() * 3.0 + 0.5)
            .collect();
        let sum: f64 = x.iter().map(|&v| v as f64).sum();
        let mean = (sum / x.len() as f64) as f32;
        let sq: f64 = x.iter().map(|&v| ((v - mean) as f64).powi(2)).sum();
        for &level in Level::available() {
            let got = sum_at(level, &x, None);
            assert!(
                (got - sum).abs() < 1e-6 * sum.abs().max(1.0),
                "{level}: {got} vs {sum}"
            );
            let got = sum_at(level, &x, Some(mean));
            assert!((got - sq).abs() < 1e-6 * sq, "{level}: {got} vs {sq}");
        }
    }
}
