//! 3x3, stride-1, pad-1 convolution by Winograd's F(2x2, 3x3): each 2x2 output
//! tile takes 16 multiplies per channel pair instead of 36, so the VQ decoder's
//! large convolutions run 2.25x fewer multiply-adds. The 16 transformed
//! positions are 16 independent `[Cout, Cin] x [Cin, tiles]` matrix products.
//!
//! Transforms (Lavin & Gray, 2015), with `d` a 4x4 input tile and `g` a 3x3
//! kernel: `U = G g Gᵀ`, `V = Bᵀ d B`, `Y = Aᵀ (U ⊙ V) A`, where
//! `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`,
//! `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`, `Aᵀ = [1 1 1 0; 0 1 -1 -1]`.

use rayon::prelude::*;

use super::SendPtr;

/// Transformed tiles per parallel task (before the channel dimension).
const TILES: usize = 256;

/// `U` for every kernel: `[16, cout, cin]`, position-major, from a
/// `[cout, cin, 3, 3]` weight.
pub(super) fn transform_weights(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * cout * cin];
    for (oc, g) in w.chunks_exact(9).enumerate() {
        // G g: 4x3.
        let mut t = [[0f32; 3]; 4];
        for c in 0..3 {
            let (a, b, d) = (g[c], g[3 + c], g[6 + c]);
            t[0][c] = a;
            t[1][c] = 0.5 * (a + b + d);
            t[2][c] = 0.5 * (a - b + d);
            t[3][c] = d;
        }
        // (G g) Gᵀ: 4x4.
        for (r, row) in t.iter().enumerate() {
            let (a, b, d) = (row[0], row[1], row[2]);
            let vals = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
            for (c, v) in vals.into_iter().enumerate() {
                u[(r * 4 + c) * cout * cin + oc] = v;
            }
        }
    }
    u
}

/// Shapes of one image's convolution.
pub(super) struct Dims {
    pub cin: usize,
    pub cout: usize,
    /// Output (and unpadded input) height and width, both even.
    pub h: usize,
    pub w: usize,
}

/// One image: `padded` is `[cin, h + 2, w + 2]` (zero border of 1), `u` from
/// [`transform_weights`], `out` is `[cout, h, w]` and receives
/// `conv + bias (+ res)`.
pub(super) fn conv3x3(
    padded: &[f32],
    u: &[f32],
    bias: &[f32],
    res: Option<&[f32]>,
    out: &mut [f32],
    d: &Dims,
) {
    let Dims { cin, cout, h, w } = *d;
    let (th, tw) = (h / 2, w / 2);
    // Whole tile rows per task: about TILES tiles, and at least 4 tasks.
    let rows = (TILES / tw).clamp(1, th.div_ceil(4).max(1));
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..th.div_ceil(rows)).into_par_iter().for_each(|task| {
        let ty0 = task * rows;
        let ty1 = (ty0 + rows).min(th);
        let n = (ty1 - ty0) * tw;
        // One [cin, n] / [cout, n] matrix per position; the extra cache line
        // keeps the 16 positions of a tile out of the same cache sets.
        let (vp, mp) = (cin * n + PAD, cout * n + PAD);
        let mut v = vec![0f32; 16 * vp];
        input_transform(padded, &mut v, vp, d, ty0..ty1);
        let mut m = vec![0f32; 16 * mp];
        for p in 0..16 {
            // SAFETY: `u[p]` is [cout, cin], `v[p]` is [cin, n] and `m[p]` is
            // [cout, n], all row-major and inside their buffers.
            unsafe {
                gemm::gemm(
                    cout,
                    n,
                    cin,
                    m.as_mut_ptr().add(p * mp),
                    1,
                    n as isize,
                    false,
                    u.as_ptr().add(p * cout * cin),
                    1,
                    cin as isize,
                    v.as_ptr().add(p * vp),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        let mut y = vec![0f32; 4 * tw];
        for (co, &b) in bias.iter().enumerate() {
            for k in 0..ty1 - ty0 {
                let at = |p: usize| &m[p * mp + co * n + k * tw..][..tw];
                output_transform(&at, &mut y, tw);
                let ty = ty0 + k;
                for dy in 0..2 {
                    let row = (co * h + 2 * ty + dy) * w;
                    let (y0, y1) = y[2 * dy * tw..(2 * dy + 2) * tw].split_at(tw);
                    // SAFETY: rows 2ty and 2ty+1 of channel `co` belong to this
                    // task's tile rows only; `row + w <= cout * h * w`.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(row), w) };
                    for ((pair, a), c) in dst.chunks_exact_mut(2).zip(y0).zip(y1) {
                        pair[0] = a + b;
                        pair[1] = c + b;
                    }
                    if let Some(r) = res {
                        for (o, r) in dst.iter_mut().zip(&r[row..row + w]) {
                            *o += r;
                        }
                    }
                }
            }
        }
    });
}

/// Floats between consecutive positions' matrices (one cache line).
const PAD: usize = 16;

/// Tiles per vector block of the transforms.
const L: usize = 16;

/// `Y = Aᵀ M A` for one row of `tw` tiles: `at(p)` gives position `p` of every
/// tile; `y` receives `[y00, y01, y10, y11]`, each `tw` long.
fn output_transform<'a>(at: &impl Fn(usize) -> &'a [f32], y: &mut [f32], tw: usize) {
    for t0 in (0..tw).step_by(L) {
        let len = L.min(tw - t0);
        let mut m = [[0f32; L]; 16];
        for (p, m) in m.iter_mut().enumerate() {
            m[..len].copy_from_slice(&at(p)[t0..t0 + len]);
        }
        let mut out = [[0f32; L]; 4];
        for t in 0..L {
            // Aᵀ M: 2x4, then (Aᵀ M) A: 2x2.
            let s0: [f32; 4] = std::array::from_fn(|c| m[c][t] + m[4 + c][t] + m[8 + c][t]);
            let s1: [f32; 4] = std::array::from_fn(|c| m[4 + c][t] - m[8 + c][t] - m[12 + c][t]);
            out[0][t] = s0[0] + s0[1] + s0[2];
            out[1][t] = s0[1] - s0[2] - s0[3];
            out[2][t] = s1[0] + s1[1] + s1[2];
            out[3][t] = s1[1] - s1[2] - s1[3];
        }
        for (q, out) in out.iter().enumerate() {
            y[q * tw + t0..q * tw + t0 + len].copy_from_slice(&out[..len]);
        }
    }
}

/// `V = Bᵀ d B` for the tiles of tile rows `tiles` into `v` (position `p`,
/// channel `c`, tile `i` at `p * vp + c * n + i`).
fn input_transform(
    padded: &[f32],
    v: &mut [f32],
    vp: usize,
    d: &Dims,
    tiles: std::ops::Range<usize>,
) {
    let Dims { cin, h, w, .. } = *d;
    let (wp, plane, tw) = (w + 2, (h + 2) * (w + 2), w / 2);
    let n = tiles.len() * tw;
    // Even and odd columns of the 4 input rows of a tile row: tile `t` reads
    // columns 2t..2t+3 = even[t], odd[t], even[t + 1], odd[t + 1].
    let mut eo = vec![0f32; 8 * (tw + 1)];
    for c in 0..cin {
        let img = &padded[c * plane..(c + 1) * plane];
        for (k, ty) in tiles.clone().enumerate() {
            for (r, eo) in eo.chunks_exact_mut(2 * (tw + 1)).enumerate() {
                let row = &img[(2 * ty + r) * wp..(2 * ty + r + 1) * wp];
                let (even, odd) = eo.split_at_mut(tw + 1);
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
            let col = |r: usize, j: usize| -> &[f32] {
                let base = 2 * r * (tw + 1) + if j.is_multiple_of(2) { 0 } else { tw + 1 };
                &eo[base + j / 2..][..tw]
            };
            let base = c * n + k * tw;
            for t0 in (0..tw).step_by(L) {
                let len = L.min(tw - t0);
                let mut d = [[[0f32; L]; 4]; 4];
                for (r, d) in d.iter_mut().enumerate() {
                    for (j, d) in d.iter_mut().enumerate() {
                        d[..len].copy_from_slice(&col(r, j)[t0..t0 + len]);
                    }
                }
                let mut out = [[0f32; L]; 16];
                for t in 0..L {
                    // Bᵀ d: 4x4 (rows), then (Bᵀ d) B (columns).
                    let bt: [[f32; 4]; 4] = std::array::from_fn(|j| {
                        let (d0, d1, d2, d3) = (d[0][j][t], d[1][j][t], d[2][j][t], d[3][j][t]);
                        [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
                    });
                    for r in 0..4 {
                        let (b0, b1, b2, b3) = (bt[0][r], bt[1][r], bt[2][r], bt[3][r]);
                        out[r * 4][t] = b0 - b2;
                        out[r * 4 + 1][t] = b1 + b2;
                        out[r * 4 + 2][t] = b2 - b1;
                        out[r * 4 + 3][t] = b1 - b3;
                    }
                }
                for (p, out) in out.iter().enumerate() {
                    let at = p * vp + base + t0;
                    v[at..at + len].copy_from_slice(&out[..len]);
                }
            }
        }
    }
}
