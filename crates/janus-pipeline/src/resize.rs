//! A resampler that reproduces Pillow's `Image.resize(..., BICUBIC)` bit for bit:
//! separable convolution (horizontal pass, then vertical), Keys cubic with
//! `a = -0.5`, support widened by the downscale factor (anti-aliasing), and
//! Pillow's 22-bit fixed-point coefficients with 8-bit rounding and clipping
//! between the passes.

const PRECISION_BITS: u32 = 32 - 8 - 2;
const SUPPORT: f64 = 2.0;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index, tap count and fixed-point weights.
struct Coeffs {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn coeffs(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, kx) in k.iter().enumerate().take(n) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let fixed = w * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes an interleaved `channels`-per-pixel 8-bit image of `w x h` to `nw x nh`.
pub fn resize_bicubic(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    nw: usize,
    nh: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), w * h * channels, "image buffer size");
    let cv = coeffs(h, nh);
    // Rows of the source that the vertical pass reads.
    let (y_first, y_last) = if nh > 0 {
        let (s, n) = cv.bounds[nh - 1];
        (cv.bounds[0].0, s + n)
    } else {
        (0, 0)
    };
    let need_h = nw != w;
    let need_v = nh != h;
    let (tmp, tw, ty0) = if need_h {
        let ch = coeffs(w, nw);
        let rows = y_last - y_first;
        let mut out = vec![0u8; rows * nw * channels];
        for y in 0..rows {
            let row = &src[(y + y_first) * w * channels..(y + y_first + 1) * w * channels];
            for xx in 0..nw {
                let (xmin, n) = ch.bounds[xx];
                let k = &ch.weights[xx * ch.ksize..xx * ch.ksize + n];
                for c in 0..channels {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, kx) in k.iter().enumerate() {
                        ss += row[(xmin + x) * channels + c] as i64 * *kx as i64;
                    }
                    out[(y * nw + xx) * channels + c] = clip8(ss);
                }
            }
        }
        (out, nw, y_first)
    } else {
        (src.to_vec(), w, 0)
    };
    if !need_v {
        return tmp;
    }
    let mut out = vec![0u8; nh * tw * channels];
    for yy in 0..nh {
        let (ymin, n) = cv.bounds[yy];
        let k = &cv.weights[yy * cv.ksize..yy * cv.ksize + n];
        for xx in 0..tw {
            for c in 0..channels {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (y, ky) in k.iter().enumerate() {
                    ss += tmp[((ymin - ty0 + y) * tw + xx) * channels + c] as i64 * *ky as i64;
                }
                out[(yy * tw + xx) * channels + c] = clip8(ss);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        assert_eq!(resize_bicubic(&src, 4, 3, 3, 4, 3), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 50 * 30 * 3];
        let out = resize_bicubic(&src, 50, 30, 3, 17, 9);
        assert!(out.iter().all(|v| *v == 77));
    }
}
