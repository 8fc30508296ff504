//! The block kernel for quantized weights ([`QuantMatrix`]): each block of 32
//! weights is read once per call, dequantized in registers (int8 or 4-bit
//! values widened to f32, times the block's scale) and multiplied with every
//! f32 row of `x`. Written once over [`Lanes`], like [`super::widen`].

use rayon::prelude::*;

use super::super::simd::{self, Kernel, Lanes, Level};
use super::BLOCK as ROWS_PER_TASK;
use crate::quant::{BLOCK, QuantFormat, QuantMatrix};

/// `y [m, n] = x [m, k] · dequant(q) [n, k]ᵀ` at `level`.
pub(crate) fn run(level: Level, x: &[f32], m: usize, q: &QuantMatrix) -> Vec<f32> {
    let (n, k) = (q.rows(), q.cols());
    debug_assert_eq!(x.len(), m * k);
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(b, yt)| {
            let rows = yt.len() / m;
            let row0 = b * ROWS_PER_TASK;
            simd::dispatch_at(
                level,
                Block {
                    x,
                    m,
                    q,
                    rows: row0..row0 + rows,
                    yt,
                },
            )
        });
    let mut y = vec![0f32; m * n];
    for (j, col) in yt.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            y[i * n + j] = *v;
        }
    }
    y
}

/// Rows `rows` of the weight: `yt[(j - rows.start) * m + i] = x[i] · w[j]`.
struct Block<'a> {
    x: &'a [f32],
    m: usize,
    q: &'a QuantMatrix,
    rows: std::ops::Range<usize>,
    yt: &'a mut [f32],
}

impl Kernel for Block<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self { x, m, q, rows, yt } = self;
        let max_mt = if S::REGS >= 32 { 8 } else { 4 };
        let mut j = rows.start;
        while j < rows.end {
            let nt = if m <= 2 { 4 } else { 2 };
            let nt = if j + nt <= rows.end { nt } else { 1 };
            let mut i = 0;
            while i < m {
                let mt = (m - i).min(max_mt);
                let out = &mut yt[(j - rows.start) * m + i..];
                let t = Tile {
                    x: &x[i * q.cols()..],
                    q,
                    j,
                    out,
                    m,
                };
                match (q.format(), nt) {
                    (QuantFormat::Q8_0, 4) => t.run_mt::<S, Q8, 4>(s, mt),
                    (QuantFormat::Q8_0, 2) => t.run_mt::<S, Q8, 2>(s, mt),
                    (QuantFormat::Q8_0, _) => t.run_mt::<S, Q8, 1>(s, mt),
                    (QuantFormat::Q4_0, 4) => t.run_mt::<S, Q4, 4>(s, mt),
                    (QuantFormat::Q4_0, 2) => t.run_mt::<S, Q4, 2>(s, mt),
                    (QuantFormat::Q4_0, _) => t.run_mt::<S, Q4, 1>(s, mt),
                }
                i += mt;
            }
            j += nt;
        }
    }
}

/// One tile: `NT` weight rows from row `j`, `MT` rows of `x`.
struct Tile<'a> {
    x: &'a [f32],
    q: &'a QuantMatrix,
    j: usize,
    out: &'a mut [f32],
    m: usize,
}

impl Tile<'_> {
    #[inline(always)]
    fn run_mt<S: Lanes, F: Dequant, const NT: usize>(self, s: S, mt: usize) {
        match mt {
            1 => self.run::<S, F, 1, NT>(s),
            2 => self.run::<S, F, 2, NT>(s),
            3 => self.run::<S, F, 3, NT>(s),
            4 => self.run::<S, F, 4, NT>(s),
            5 => self.run::<S, F, 5, NT>(s),
            6 => self.run::<S, F, 6, NT>(s),
            7 => self.run::<S, F, 7, NT>(s),
            _ => self.run::<S, F, 8, NT>(s),
        }
    }

    // `acc[j][i]` pairs weight row `j` with row `i` of `x`: indices read clearer.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn run<S: Lanes, F: Dequant, const MT: usize, const NT: usize>(self, s: S) {
        let Self { x, q, j, out, m } = self;
        let k = q.cols();
        let nb = k / BLOCK;
        let bb = q.format().block_bytes();
        assert!(x.len() >= MT * k && q.rows() >= j + NT && out.len() > (NT - 1) * m + MT - 1);
        let scales = &q.scales()[j * nb..(j + NT) * nb];
        let qs = &q.qs()[j * nb * bb..(j + NT) * nb * bb];
        let mut acc = [[s.zero(); MT]; NT];
        let mut d = [[0f32; 16]; NT];
        let mut kb = 0;
        while kb < nb {
            // The scales of the next (up to) N blocks, widened in one load.
            let g = (nb - kb).min(S::N);
            for r in 0..NT {
                let row = &scales[r * nb + kb..r * nb + kb + g];
                if g == S::N {
                    // SAFETY: `row` holds N scales and `d[r]` 16 >= N values.
                    unsafe { s.store(d[r].as_mut_ptr(), s.load_f16(row.as_ptr())) };
                } else {
                    row.iter().zip(&mut d[r]).for_each(|(h, d)| *d = h.to_f32());
                }
            }
            for b in 0..g {
                let blk = kb + b;
                let blocks: [&[u8]; NT] =
                    std::array::from_fn(|r| &qs[(r * nb + blk) * bb..(r * nb + blk + 1) * bb]);
                let mut c = 0;
                while c < BLOCK {
                    let mut wv = [s.zero(); NT];
                    for r in 0..NT {
                        // SAFETY: `blocks[r]` is one whole block and `c + N <= 32`.
                        wv[r] = unsafe { F::load(s, blocks[r].as_ptr(), c, d[r][b]) };
                    }
                    for i in 0..MT {
                        // SAFETY: row `i` of `x` holds `k` values, `blk * 32 + c + N <= k`.
                        let xv = unsafe { s.load(x.as_ptr().add(i * k + blk * BLOCK + c)) };
                        for r in 0..NT {
                            acc[r][i] = s.fma(wv[r], xv, acc[r][i]);
                        }
                    }
                    c += S::N;
                }
            }
            kb += g;
        }
        for r in 0..NT {
            for i in 0..MT {
                out[r * m + i] = s.reduce_sum(acc[r][i]);
            }
        }
    }
}

/// Dequantizes `N` weights of one block in registers.
trait Dequant {
    /// Weights `c..c + N` of the block at `p`, scaled by `d`.
    ///
    /// # Safety
    /// `p` must address a whole block and `c + N <= 32`.
    unsafe fn load<S: Lanes>(s: S, p: *const u8, c: usize, d: f32) -> S::V;
}

/// q8_0: `d · q`.
struct Q8;
impl Dequant for Q8 {
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const u8, c: usize, d: f32) -> S::V {
        // SAFETY: `c + N <= 32` bytes of the block.
        s.mul(unsafe { s.load_i8(p.add(c).cast()) }, s.splat(d))
    }
}

/// q4_0: `d · (q - 8)`; weights `0..16` are the low halves of the block's 16
/// bytes, `16..32` the high halves.
struct Q4;
impl Dequant for Q4 {
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const u8, c: usize, d: f32) -> S::V {
        let half = BLOCK / 2;
        let (high, at) = if c < half {
            (false, c)
        } else {
            (true, c - half)
        };
        // SAFETY: `at + N <= 16` bytes of the block (N divides 16).
        let u = unsafe { s.load_u4(p.add(at), high) };
        s.fma(u, s.splat(d), s.splat(-8.0 * d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_dequantized_product_at_every_level_and_row_count() {
        // k = 96: three blocks (a scale group shorter than N at every level);
        // k = 544: 17 blocks (one full group of 16 plus a tail); n = 37 leaves
        // partial tasks and single-row tiles.
        for (n, k) in [(37, 96), (21, 544)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 2_654_435_761) % 1009) as f32 / 500.0 - 1.0)
                .collect();
            for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
                let q = QuantMatrix::quantize(format, n, k, &w).unwrap();
                let mut wd = vec![0f32; n * k];
                q.dequantize_rows(0..n, &mut wd);
                for m in [1, 2, 3, 4, 5, 8, 9, 16] {
                    let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                    let want: Vec<f64> = (0..m * n)
                        .map(|t| {
                            let (i, j) = (t / n, t % n);
                            (0..k)
                                .map(|c| x[i * k + c] as f64 * wd[j * k + c] as f64)
                                .sum()
                        })
                        .collect();
                    for &level in Level::available() {
                        let got = run(level, &x, m, &q);
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "{level} {format} m={m} k={k}: {g} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
