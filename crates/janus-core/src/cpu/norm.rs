//! GroupNorm (optionally followed by SiLU) in two passes over the data, instead
//! of the dozen tensor ops and temporaries of the generic formulation.

use burn::prelude::*;
use rayon::prelude::*;

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
            let mean = (sum(x, |v| v as f64) / n) as f32;
            let var = sum(x, |v| ((v - mean) as f64).powi(2)) / n;
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

/// `Σ f(v)` in f64 over eight lanes (vectorises; keeps large groups accurate).
fn sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
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
}
