//! Stride-1 square convolutions as `k²` accumulated matrix products over a padded
//! copy of the input (no im2col buffer), optionally reading the input through a
//! nearest-neighbour 2x upsampling. The VQ decoder spends most of its time in
//! 3x3 convolutions at 192–384 px, where this avoids Burn's im2col and NHWC
//! round trips. 3x3 "same" convolutions (all of the VQ decoder's big ones) go
//! through Winograd's F(4x4, 3x3) instead (`winograd.rs`).
//!
//! For output row `y`, the products are computed over the padded width `Wp`
//! (the `Wp - W` extra columns are discarded): tap `(ky, kx)` then reads the
//! padded input at a constant offset `ky·Wp + kx`, so each tap is one
//! `[Cout, Cin] x [Cin, pixels]` product with plain strides.

use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::winograd::{self, Dims};
use super::{F32Values, SendPtr, host_f32, simd, to_flex};

/// Output pixels (in padded-width units) per parallel task, at most.
const CHUNK: usize = 2048;

/// `conv2d(x, weight, bias) + residual` with stride 1, dilation 1, one group and
/// `padding` on every side; with `upsample` the input is first enlarged 2x by
/// nearest neighbour. Computed in f32 whatever the dtype. `None` on other
/// backends or shapes (use Burn's `conv2d`).
pub fn conv2d<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    padding: usize,
    upsample: bool,
    residual: Option<&Tensor<B, 4>>,
) -> Option<Tensor<B, 4>> {
    let [b, cin, h0, w0] = x.dims();
    let [cout, wcin, kh, kw] = weight.dims();
    let (h, w) = if upsample { (2 * h0, 2 * w0) } else { (h0, w0) };
    if wcin != cin || kh != kw || kh != 2 * padding + 1 || b * cin * cout * h * w == 0 {
        return None;
    }
    if residual.is_some_and(|r| r.dims() != [b, cout, h, w]) {
        return None;
    }
    let k = kh;
    let wt = to_flex(weight.clone()).ok()?;
    if !matches!(wt.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return None;
    }
    let xs = F32Values::of(x)?;
    let ws = F32Values::of(weight)?;
    let bs = match bias {
        Some(bias) => host_f32(bias)?,
        None => vec![0.0; cout],
    };
    let rs = match residual {
        Some(r) => Some(F32Values::of(r)?),
        None => None,
    };
    let mut out = vec![0f32; b * cout * h * w];
    let images = xs
        .chunks_exact(cin * h0 * w0)
        .zip(out.chunks_exact_mut(cout * h * w))
        .enumerate();
    let residual_of = |i: usize| {
        rs.as_ref()
            .map(|r| &r[i * cout * h * w..(i + 1) * cout * h * w])
    };
    if k == 3 {
        // 3x3 "same" convolutions by Winograd.
        let dims = Dims { cin, cout, h, w };
        winograd::with_weights(&ws, cout, cin, |u| {
            for (i, (img, out)) in images {
                let res = residual_of(i);
                winograd::conv3x3(simd::level(), img, upsample, u, &bs, res, out, &dims);
            }
        });
        return Some(crate::host::from_f32_vec(
            out,
            [b, cout, h, w],
            &x.device(),
            x.dtype(),
        ));
    }
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    let plane = hp * wp;
    let n = h * wp;
    let mut padded = vec![0f32; cin * plane + k];
    // At least two tasks per thread: the VQ decoder's 1x1 convolutions at
    // 24x24 (576 pixels, 512 channels) were one task on one thread.
    let chunk = n
        .div_ceil(2 * rayon::current_num_threads())
        .next_multiple_of(16)
        .clamp(16, CHUNK);
    for (i, (img, out)) in images {
        let res = residual_of(i);
        fill_padded(img, &mut padded, [h0, w0], padding, upsample);
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let q0 = c * chunk;
            let cols = chunk.min(n - q0);
            let mut acc = vec![0f32; cout * cols];
            for tap in 0..k * k {
                let (ky, kx) = (tap / k, tap % k);
                // SAFETY: `acc` is [cout, cols]; the weight is [cout, cin, k, k];
                // the shifted input view reads at most `cin * plane + k - 1`
                // elements of `padded`.
                unsafe {
                    gemm::gemm(
                        cout,
                        cols,
                        cin,
                        acc.as_mut_ptr(),
                        1,
                        cols as isize,
                        tap > 0,
                        ws.as_ptr().add(tap),
                        (k * k) as isize,
                        (cin * k * k) as isize,
                        padded.as_ptr().add(q0 + ky * wp + kx),
                        1,
                        plane as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            // Drop the padding columns, add bias and residual, a run of one
            // padded row at a time (a division per value was 4 % of a VQ
            // decode).
            for (co, acc) in acc.chunks_exact(cols).enumerate() {
                let bias = bs[co];
                let mut j = 0;
                while j < cols {
                    let (y, xx) = ((q0 + j) / wp, (q0 + j) % wp);
                    let run = (wp - xx).min(cols - j);
                    let valid = w.saturating_sub(xx).min(run);
                    if valid == 0 {
                        // Padding columns only.
                        j += run;
                        continue;
                    }
                    let at = (co * h + y) * w + xx;
                    // SAFETY: columns `xx..xx + valid < w` of row y are inside
                    // this image's output, and every output pixel belongs to
                    // exactly one chunk.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(at), valid) };
                    let src = &acc[j..j + valid];
                    match res {
                        Some(r) => {
                            for ((o, a), r) in dst.iter_mut().zip(src).zip(&r[at..at + valid]) {
                                *o = a + bias + r;
                            }
                        }
                        None => {
                            for (o, a) in dst.iter_mut().zip(src) {
                                *o = a + bias;
                            }
                        }
                    }
                    j += run;
                }
            }
        });
    }
    Some(crate::host::from_f32_vec(
        out,
        [b, cout, h, w],
        &x.device(),
        x.dtype(),
    ))
}

/// Copies one image `[C, h0, w0]` into the zero-bordered `[C, Hp, Wp]` buffer,
/// enlarging it 2x by nearest neighbour first when `upsample`.
fn fill_padded(img: &[f32], padded: &mut [f32], [h0, w0]: [usize; 2], pad: usize, upsample: bool) {
    let s = if upsample { 2 } else { 1 };
    let (h, w) = (h0 * s, w0 * s);
    let wp = w + 2 * pad;
    let plane = (h + 2 * pad) * wp;
    padded
        .par_chunks_mut(plane)
        .zip(img.par_chunks(h0 * w0))
        .for_each(|(dst, src)| {
            for y in 0..h {
                let row = &src[(y / s) * w0..(y / s + 1) * w0];
                let out = &mut dst[(y + pad) * wp + pad..(y + pad) * wp + pad + w];
                if upsample {
                    for (pair, v) in out.chunks_exact_mut(2).zip(row) {
                        pair.fill(*v);
                    }
                } else {
                    out.copy_from_slice(row);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::Distribution;
    use burn::tensor::module;
    use burn::tensor::ops::ConvOptions;

    use super::*;

    #[test]
    fn matches_burn_conv2d_with_and_without_upsampling() {
        let dev = Default::default();
        // 3x3 "same" convolutions take Winograd's path, 1x1 and 5x5 the
        // shifted products.
        for (cin, cout, k, upsample, [h, w]) in [
            (5, 7, 3, false, [9, 11]),
            (4, 6, 3, true, [9, 11]),
            (3, 4, 1, false, [9, 11]),
            (4, 3, 5, true, [5, 7]),
            (6, 5, 3, false, [8, 12]),
            (33, 40, 3, false, [30, 6]),
        ] {
            let x = Tensor::<Flex, 4>::random([2, cin, h, w], Distribution::Normal(0.0, 1.0), &dev);
            let wt =
                Tensor::<Flex, 4>::random([cout, cin, k, k], Distribution::Normal(0.0, 0.3), &dev);
            let b = Tensor::<Flex, 1>::random([cout], Distribution::Normal(0.0, 0.3), &dev);
            let pad = k / 2;
            let input = if upsample {
                let [n, c, h, w] = x.dims();
                x.clone()
                    .reshape([n, c, h, 1, w, 1])
                    .expand([n, c, h, 2, w, 2])
                    .reshape([n, c, 2 * h, 2 * w])
            } else {
                x.clone()
            };
            let want = module::conv2d(
                input,
                wt.clone(),
                Some(b.clone()),
                ConvOptions::new([1, 1], [pad, pad], [1, 1], 1),
            );
            let got = conv2d(&x, &wt, Some(&b), pad, upsample, None).expect("fast path");
            assert_eq!(got.dims(), want.dims());
            let r = Tensor::<Flex, 4>::random(want.dims(), Distribution::Normal(0.0, 1.0), &dev);
            let with_r = conv2d(&x, &wt, Some(&b), pad, upsample, Some(&r)).expect("fast path");
            // Winograd's F(4x4, 3x3) in f32 is off by a few 1e-6 of the
            // largest output (its transforms scale values by up to 8 and
            // back; at most 5.3e-6 over 90 random cases); the shifted
            // products keep the old absolute bound.
            let scale: f32 = want.clone().abs().max().into_scalar();
            let limit = if k == 3 { 2e-5 * scale.max(1.0) } else { 1e-4 };
            let diff: f32 = (with_r - r - want.clone()).abs().max().into_scalar();
            assert!(diff < limit, "residual: {diff} (limit {limit})");
            let diff: f32 = (got - want).abs().max().into_scalar();
            assert!(
                diff < limit,
                "cin {cin} k {k} upsample {upsample} {h}x{w}: {diff} (limit {limit})"
            );
        }
    }
}
