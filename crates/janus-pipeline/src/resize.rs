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

/// The filter of one axis: Keys cubic, widened by the downscale factor.
/// Taps are computed as the passes need them, never all at once (that takes
/// `4 x in_size` weights: 640 MB for a 40-megapixel-wide image of one row).
struct Filter {
    in_size: usize,
    scale: f64,
    filterscale: f64,
    support: f64,
    ksize: usize,
}

impl Filter {
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = SUPPORT * filterscale;
        Self {
            in_size,
            scale,
            filterscale,
            support,
            ksize: support.ceil() as usize * 2 + 1,
        }
    }

    /// The first input index and the tap count of output pixel `xx`.
    fn bounds(&self, xx: usize) -> (usize, usize) {
        let center = (xx as f64 + 0.5) * self.scale;
        let xmin = ((center - self.support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + self.support + 0.5) as i64).min(self.in_size as i64) as usize;
        (xmin, xmax.saturating_sub(xmin))
    }

    /// [`Filter::bounds`] of output pixel `xx`, with its fixed-point weights
    /// in `taps.fixed[..n]`.
    fn taps(&self, xx: usize, taps: &mut Taps) -> (usize, usize) {
        let center = (xx as f64 + 0.5) * self.scale;
        let ss = 1.0 / self.filterscale;
        let (xmin, n) = self.bounds(xx);
        let mut ww = 0.0;
        for (x, kx) in taps.k.iter_mut().enumerate().take(n) {
            let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (kx, fixed) in taps.k.iter().zip(&mut taps.fixed).take(n) {
            let w = if ww != 0.0 { kx / ww } else { *kx };
            let f = w * (1u32 << PRECISION_BITS) as f64;
            *fixed = if w < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        (xmin, n)
    }
}

/// One output pixel's weights, as computed and in fixed point.
struct Taps {
    k: Vec<f64>,
    fixed: Vec<i32>,
}

impl Taps {
    fn of(filter: &Filter) -> Self {
        Self {
            k: vec![0.0; filter.ksize],
            fixed: vec![0; filter.ksize],
        }
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

/// The most bytes the horizontal pass's rows may take at once: more (a tall
/// image of one column is widened to the output's width before it is
/// shortened: 40 megapixels made 1.7 GB) are done in strips of output rows.
const STRIP_BYTES: usize = 16 << 20;

/// Resizes an interleaved `channels`-per-pixel 8-bit image of `w x h` to `nw x nh`.
pub fn resize_bicubic(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    nw: usize,
    nh: usize,
) -> Vec<u8> {
    resize_in_pieces(src, (w, h), channels, (nw, nh), STRIP_BYTES, MAX_TAPS)
}

/// [`resize_bicubic`] with the horizontal pass's rows in strips of at most
/// `strip_bytes` (at least one output row's) and its taps in groups of at
/// most `max_taps` (at least one column's).
fn resize_in_pieces(
    src: &[u8],
    (w, h): (usize, usize),
    channels: usize,
    (nw, nh): (usize, usize),
    strip_bytes: usize,
    max_taps: usize,
) -> Vec<u8> {
    assert_eq!(src.len(), w * h * channels, "image buffer size");
    if nw == 0 || nh == 0 {
        return Vec::new();
    }
    let row = |y: usize| &src[y * w * channels..(y + 1) * w * channels];
    let fh = (nw != w).then(|| Filter::new(w, nw));
    if nh == h {
        return match &fh {
            Some(fh) => {
                let mut out = vec![0u8; h * nw * channels];
                horizontal(row, channels, 0..h, fh, nw, max_taps, &mut out);
                out
            }
            None => src.to_vec(),
        };
    }
    let fv = Filter::new(h, nh);
    let Some(fh) = fh else {
        let mut out = vec![0u8; nh * w * channels];
        vertical(src, w * channels, 0, &fv, 0..nh, &mut out);
        return out;
    };
    // Horizontal pass first (as Pillow 10), over the source rows a strip of
    // output rows reads; every output row in one strip unless that is over
    // `strip_bytes`. Rows two strips share are widened once: the next strip
    // starts with them.
    let stride = nw * channels;
    let mut out = vec![0u8; nh * stride];
    let rows_end = |yy: usize| {
        let (ymin, n) = fv.bounds(yy);
        ymin + n
    };
    let mut strip: Vec<u8> = Vec::new();
    let mut widened = 0usize..0;
    let mut yy = 0;
    while yy < nh {
        let first = fv.bounds(yy).0;
        let mut end = yy + 1;
        while end < nh && (rows_end(end) - first) * stride <= strip_bytes {
            end += 1;
        }
        let last = rows_end(end - 1);
        let kept = widened.end.saturating_sub(first);
        if kept > 0 {
            let from = (first - widened.start) * stride;
            strip.copy_within(from..from + kept * stride, 0);
        }
        strip.resize((last - first) * stride, 0);
        let new_rows = first + kept..last;
        horizontal(
            row,
            channels,
            new_rows,
            &fh,
            nw,
            max_taps,
            &mut strip[kept * stride..],
        );
        widened = first..last;
        vertical(&strip, stride, first, &fv, yy..end, &mut out);
        yy = end;
    }
    out
}

/// The most weights the horizontal pass holds at once: the columns of a wider
/// output are done in groups whose taps take at most this many.
const MAX_TAPS: usize = 1 << 20;

/// The horizontal pass over source rows `rows` (`row(y)`: row `y`), to `nw`
/// pixels each, into `out` (`rows.len()` rows); the taps of at most
/// `max_taps` are held at once.
fn horizontal<'a>(
    row: impl Fn(usize) -> &'a [u8],
    channels: usize,
    rows: std::ops::Range<usize>,
    f: &Filter,
    nw: usize,
    max_taps: usize,
    out: &mut [u8],
) {
    debug_assert_eq!(out.len(), rows.len() * nw * channels);
    let mut taps = Taps::of(f);
    let group = (max_taps / f.ksize).max(1);
    let mut weights = vec![0i32; group.min(nw) * f.ksize];
    let mut bounds = Vec::with_capacity(group.min(nw));
    for first in (0..nw).step_by(group) {
        let columns = first..(first + group).min(nw);
        bounds.clear();
        for (i, xx) in columns.clone().enumerate() {
            let (xmin, n) = f.taps(xx, &mut taps);
            weights[i * f.ksize..i * f.ksize + n].copy_from_slice(&taps.fixed[..n]);
            bounds.push((xmin, n));
        }
        for (y, src) in rows.clone().map(&row).enumerate() {
            for (i, (xx, &(xmin, n))) in columns.clone().zip(&bounds).enumerate() {
                let k = &weights[i * f.ksize..i * f.ksize + n];
                let src = &src[xmin * channels..(xmin + n) * channels];
                for c in 0..channels {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, kx) in k.iter().enumerate() {
                        ss += src[x * channels + c] as i64 * *kx as i64;
                    }
                    out[(y * nw + xx) * channels + c] = clip8(ss);
                }
            }
        }
    }
}

/// The vertical pass for output rows `out_rows` of `out`, reading `src`
/// whose first row is source row `first` (`stride` bytes a row).
fn vertical(
    src: &[u8],
    stride: usize,
    first: usize,
    f: &Filter,
    out_rows: std::ops::Range<usize>,
    out: &mut [u8],
) {
    let mut taps = Taps::of(f);
    for yy in out_rows {
        let (ymin, n) = f.taps(yy, &mut taps);
        let k = &taps.fixed[..n];
        let dst = &mut out[yy * stride..(yy + 1) * stride];
        for (i, v) in dst.iter_mut().enumerate() {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (y, ky) in k.iter().enumerate() {
                ss += src[(ymin - first + y) * stride + i] as i64 * *ky as i64;
            }
            *v = clip8(ss);
        }
    }
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
    fn strips_and_tap_groups_give_the_same_pixels() {
        // Every shape of pass: both, each alone, up and down.
        let (w, h) = (37, 91);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 7919 % 251) as u8).collect();
        for (nw, nh) in [(16, 40), (80, 13), (37, 20), (12, 91), (90, 200), (5, 3)] {
            let whole = resize_bicubic(&src, w, h, 3, nw, nh);
            assert_eq!(whole.len(), nw * nh * 3);
            for strip_bytes in [0, 1, nw * 3 * 10, nw * 3 * 45] {
                for max_taps in [1, 5, 17, 100] {
                    let pieces = resize_in_pieces(&src, (w, h), 3, (nw, nh), strip_bytes, max_taps);
                    assert_eq!(
                        pieces, whole,
                        "{nw}x{nh} in strips of {strip_bytes} bytes, {max_taps} taps"
                    );
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 50 * 30 * 3];
        let out = resize_bicubic(&src, 50, 30, 3, 17, 9);
        assert!(out.iter().all(|v| *v == 77));
    }
}
