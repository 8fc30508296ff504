//! GroupNorm (optionally followed by SiLU) in two passes over the data, instead
//! of the dozen tensor ops and temporaries of the generic formulation.

use burn::prelude::*;
use rayon::prelude::*;

use super::simd::{self, Kernel, Lanes, Level};
use super::vmath::Silu;
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
            let c0 = (bg % groups) * (c / groups);
            let ch = c0..c0 + c / groups;
            let (gamma, beta) = (&gamma[ch.clone()], &beta[ch]);
            normalize_group(simd::level(), x, o, gamma, beta, eps, silu);
        });
    Some(crate::host::from_f32_vec(out, dims, &x.device(), x.dtype()))
}

/// One group's values `x` (its channels' planes in turn, one per `gamma`
/// and `beta` value) normalised into `o` at `level`, SiLU after when `silu`.
fn normalize_group(
    level: Level,
    x: &[f32],
    o: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    silu: bool,
) {
    let n = x.len() as f64;
    let mean = (sum_at(level, x, None) / n) as f32;
    let var = sum_at(level, x, Some(mean)) / n;
    let rstd = (1.0 / (var + eps).sqrt()) as f32;
    let spatial = x.len() / gamma.len();
    simd::dispatch_at(
        level,
        Normalize {
            x,
            o,
            spatial,
            gamma,
            beta,
            mean,
            rstd,
            silu,
        },
    )
}

/// `o = x · scale + shift` per channel plane, then SiLU when `silu`.
struct Normalize<'a> {
    x: &'a [f32],
    o: &'a mut [f32],
    spatial: usize,
    gamma: &'a [f32],
    beta: &'a [f32],
    mean: f32,
    rstd: f32,
    silu: bool,
}

impl Kernel for Normalize<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self {
            x,
            o,
            spatial,
            gamma,
            beta,
            mean,
            rstd,
            silu,
        } = self;
        let planes = o.chunks_exact_mut(spatial).zip(x.chunks_exact(spatial));
        for ((o, x), (&g, &b)) in planes.zip(gamma.iter().zip(beta)) {
            let (scale, shift) = (rstd * g, b - mean * rstd * g);
            simd::map_into(s, x, o, Affine { scale, shift, silu });
        }
    }
}

/// `v · scale + shift`, then `SiLU` when `silu`.
struct Affine {
    scale: f32,
    shift: f32,
    silu: bool,
}

impl simd::LaneFn for Affine {
    #[inline(always)]
    fn apply<S: Lanes>(&self, s: S, v: S::V) -> S::V {
        let y = s.fma(v, s.splat(self.scale), s.splat(self.shift));
        if self.silu { Silu.apply(s, y) } else { y }
    }
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
    fn groups_normalise_like_f64_at_every_level() {
        // Three channels of 37 values: whole vectors and a tail per plane.
        let (spatial, eps) = (37, 1e-6);
        let x: Vec<f32> = (0..3 * spatial)
            .map(|i| (i as f32 * 0.71).cos() * 2.5 - 0.4)
            .collect();
        let (gamma, beta) = ([0.8f32, -1.3, 0.05], [0.1f32, 0.0, -2.0]);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        for silu in [false, true] {
            let want: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = i / spatial;
                    let y =
                        (v as f64 - mean) / (var + eps).sqrt() * gamma[ch] as f64 + beta[ch] as f64;
                    if silu { y / (1.0 + (-y).exp()) } else { y }
                })
                .collect();
            for &level in Level::available() {
                let mut got = vec![f32::NAN; x.len()];
                normalize_group(level, &x, &mut got, &gamma, &beta, eps, silu);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() < 2e-6 * w.abs().max(1.0),
                        "{level} silu {silu} [{i}]: {g} vs {w}"
                    );
                }
            }
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
