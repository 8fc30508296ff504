//! The block kernel for quantized weights ([`QuantMatrix`]) and a few rows of
//! activations, as llama.cpp does it: each row of `x` is quantized to q8_0
//! blocks (32 int8 values and one f32 scale), each weight block is read once
//! per call and its dot product with every row's block is exact integer
//! arithmetic. Blocks go two at a time ([`Lanes::dot2_b32`]): both blocks'
//! integer sums land in one vector (block 0 in the low half of the lanes), so
//! one int-to-float conversion and one multiply-add by the two blocks' scale
//! products serve 64 weights — at AVX-512 the pair fills a 512-bit register.
//! Scales go `N` blocks at a time: `N` f16 weight scales widen in one
//! instruction, times `N` x scales, and each pair picks its two products with
//! one permute ([`Lanes::pair_lanes`]). With AVX-VNNI ([`Level::AvxVnni`]) a
//! block's integer dot product is one instruction
//! (`vpdpbusd`). Integer products take fewer instructions per weight than
//! widening every weight to f32; eight rows (a parallel-4 image step) are
//! bound by these instructions, one or two rows by memory
//! (docs/benchmarks.md). Written once over [`Lanes`], like [`super::widen`].

use rayon::prelude::*;

use super::super::simd::{self, Kernel, Lanes, Level};
use super::BLOCK as ROWS_PER_TASK;
use crate::quant::{BLOCK, QuantFormat, QuantMatrix};

/// `y [m, n] = x [m, k] · dequant(q) [n, k]ᵀ` at `level`, with `x` quantized
/// per block of 32 to int8 ([`quantize_rows`]).
pub(crate) fn run(level: Level, x: &[f32], m: usize, q: &QuantMatrix) -> Vec<f32> {
    let (n, k) = (q.rows(), q.cols());
    debug_assert_eq!(x.len(), m * k);
    let (xq, xd, xsum) = quantize_rows(x, k);
    let xq = if simd::dispatch_at(level, SplitsPairs) {
        split_rows(xq, k)
    } else {
        xq
    };
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(b, yt)| {
            let rows = yt.len() / m;
            let row0 = b * ROWS_PER_TASK;
            simd::dispatch_at(
                level,
                Block {
                    x: Acts {
                        xq: &xq,
                        xd: &xd,
                        xsum: &xsum,
                    },
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

/// Whether the level takes pairs of blocks split into halves
/// ([`Lanes::SPLIT_PAIRS`]).
struct SplitsPairs;

impl Kernel for SplitsPairs {
    type Output = bool;
    #[inline(always)]
    fn run<S: Lanes>(self, _: S) -> bool {
        S::SPLIT_PAIRS
    }
}

/// Rows of `k` int8 values with each pair of blocks in the split layout of
/// [`simd::split_pair`] (an odd last block stays as it is).
fn split_rows(mut xq: Vec<i8>, k: usize) -> Vec<i8> {
    for row in xq.chunks_exact_mut(k) {
        for pair in row.chunks_exact_mut(2 * BLOCK) {
            let p = simd::split_pair(pair);
            pair.copy_from_slice(&p);
        }
    }
    xq
}

/// Rows of `x` (`k` values each, `k` a multiple of 32) as q8_0 blocks: int8
/// values `round(x · (1 / d))` in `-127..=127`, per block the scale
/// `d = max |x| / 127` (llama.cpp's q8_0 rounding) and `d · Σ values` (what a
/// weight offset multiplies, [`Unpack::OFFSET`]).
pub(crate) fn quantize_rows(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    debug_assert_eq!(k % BLOCK, 0);
    let mut qs = vec![0i8; x.len()];
    let mut ds = vec![0f32; x.len() / BLOCK];
    let mut sums = vec![0f32; x.len() / BLOCK];
    for (((block, q), d), sum) in x
        .chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .zip(&mut ds)
        .zip(&mut sums)
    {
        let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
        *d = amax / 127.0;
        let inv = if *d > 0.0 { 1.0 / *d } else { 0.0 };
        let mut total = 0i32;
        for (q, v) in q.iter_mut().zip(block) {
            // Half away from zero without a libm call; `as` saturates (and
            // maps NaN to 0): always in range.
            let t = v * inv;
            *q = (t + 0.5f32.copysign(t)) as i8;
            total += i32::from(*q);
        }
        *sum = *d * total as f32;
    }
    (qs, ds, sums)
}

/// `x` as q8_0 blocks ([`quantize_rows`], pairs in the level's layout), from
/// row `i` on.
#[derive(Clone, Copy)]
struct Acts<'a> {
    xq: &'a [i8],
    xd: &'a [f32],
    xsum: &'a [f32],
}

impl<'a> Acts<'a> {
    /// The rows from row `i` on (`k` values each).
    #[inline(always)]
    fn rows_from(self, i: usize, k: usize) -> Acts<'a> {
        let nb = k / BLOCK;
        Acts {
            xq: &self.xq[i * k..],
            xd: &self.xd[i * nb..],
            xsum: &self.xsum[i * nb..],
        }
    }
}

/// Rows `rows` of the weight: `yt[(j - rows.start) * m + i] = x[i] · w[j]`.
struct Block<'a> {
    x: Acts<'a>,
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
        let k = q.cols();
        // Accumulators and scale products (`MT x NT` each), a pair of weight
        // blocks per weight row and one pair of x blocks in registers: 8 x 1
        // and 2 x 4 tiles fit 32 registers; with 16 (AVX2) 4 x 1 and 2 x 2.
        let max_mt = if S::REGS >= 32 { 8 } else { 4 };
        let mut j = rows.start;
        while j < rows.end {
            let nt = if S::REGS >= 32 {
                if m <= 2 { 4 } else { 1 }
            } else if m <= 2 {
                2
            } else {
                1
            };
            let nt = if j + nt <= rows.end { nt } else { 1 };
            let mut i = 0;
            while i < m {
                let mt = (m - i).min(max_mt);
                let t = Tile {
                    x: x.rows_from(i, k),
                    q,
                    j,
                    out: &mut yt[(j - rows.start) * m + i..],
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

/// How far ahead of the reads the kernel prefetches weight bytes.
const PREFETCH_BYTES: usize = 8192;

/// One tile: `NT` weight rows from row `j`, `MT` quantized rows of `x`.
struct Tile<'a> {
    x: Acts<'a>,
    q: &'a QuantMatrix,
    j: usize,
    out: &'a mut [f32],
    m: usize,
}

impl Tile<'_> {
    #[inline(always)]
    fn run_mt<S: Lanes, F: Unpack, const NT: usize>(self, s: S, mt: usize) {
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

    /// Two blocks at a time: one integer dot product per pair of blocks and
    /// row of `x` ([`Lanes::dot2_b32`]), converted and scaled as one vector.
    // `acc[r][i]` pairs weight row `r` with row `i` of `x`: indices read clearer.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn run<S: Lanes, F: Unpack, const MT: usize, const NT: usize>(self, s: S) {
        let Self { x, q, j, out, m } = self;
        let Acts { xq, xd, xsum } = x;
        let k = q.cols();
        let nb = k / BLOCK;
        let np = nb / 2;
        let bb = F::BYTES;
        debug_assert_eq!(bb, q.format().block_bytes());
        assert!(
            xq.len() >= MT * k
                && xd.len() >= MT * nb
                && xsum.len() >= MT * nb
                && q.rows() >= j + NT
                && out.len() > (NT - 1) * m + MT - 1
        );
        let scales = &q.scales()[j * nb..(j + NT) * nb];
        let qs = &q.qs()[j * nb * bb..(j + NT) * nb * bb];
        // Prefetch this far ahead of each weight row's reads (the next
        // tiles' blocks; a hint: never faults, even past the end).
        let ahead = q.qs().as_ptr().wrapping_add(j * nb * bb + PREFETCH_BYTES);
        let mut acc = [[s.zero(); MT]; NT];
        // Groups of N blocks (N / 2 pairs): N weight scales widen at once,
        // times N x scales, and each pair takes its two scales from that
        // product with one permute ([`Lanes::pair_lanes`]) per weight row and
        // row of x, instead of widening and multiplying per pair.
        let groups = nb / S::N;
        for g in 0..groups {
            let b0 = g * S::N;
            let mut sc = [[s.zero(); MT]; NT];
            for r in 0..NT {
                // SAFETY: blocks `b0..b0 + N` of weight row `r` are inside
                // `scales`, of row `i` of x inside `xd` (asserted above).
                let ws = unsafe { s.load_f16(scales.as_ptr().add(r * nb + b0)) };
                for i in 0..MT {
                    sc[r][i] = s.mul(ws, unsafe { s.load(xd.as_ptr().add(i * nb + b0)) });
                }
            }
            for pp in 0..S::N / 2 {
                let blk = b0 + 2 * pp;
                // Loops, not `array::from_fn`: a closure has no target
                // features, so the intrinsics would not inline into it.
                // SAFETY: blocks `blk`, `blk + 1` of weight row `r` are
                // inside `qs`.
                let mut w = [unsafe { F::load2(s, qs.as_ptr().add(blk * bb)) }; NT];
                for r in 1..NT {
                    w[r] = unsafe { F::load2(s, qs.as_ptr().add((r * nb + blk) * bb)) };
                }
                if (blk * bb) % 64 == 0 || 2 * bb >= 64 {
                    for r in 0..NT {
                        s.prefetch(ahead.wrapping_add((r * nb + blk) * bb));
                    }
                }
                for i in 0..MT {
                    // SAFETY: row `i` of `xq` holds `k` values; `blk + 1 < nb`.
                    let xv = unsafe {
                        let xp = xq.as_ptr().add(i * k + blk * BLOCK);
                        [s.load_b32(xp), s.load_b32(xp.add(BLOCK))]
                    };
                    for r in 0..NT {
                        let d = s.pair_lanes(sc[r][i], pp);
                        acc[r][i] = s.fma(F::dot2(s, w[r], xv), d, acc[r][i]);
                    }
                }
            }
        }
        // The pairs after the last whole group: scales one pair at a time.
        for p in groups * S::N / 2..np {
            let blk = 2 * p;
            // SAFETY: as above.
            let mut w = [unsafe { F::load2(s, qs.as_ptr().add(blk * bb)) }; NT];
            for r in 1..NT {
                w[r] = unsafe { F::load2(s, qs.as_ptr().add((r * nb + blk) * bb)) };
            }
            for i in 0..MT {
                // SAFETY: as above.
                let xv = unsafe {
                    let xp = xq.as_ptr().add(i * k + blk * BLOCK);
                    [s.load_b32(xp), s.load_b32(xp.add(BLOCK))]
                };
                let (x0, x1) = (xd[i * nb + blk], xd[i * nb + blk + 1]);
                for r in 0..NT {
                    let w0 = scales[r * nb + blk].to_f32();
                    let w1 = scales[r * nb + blk + 1].to_f32();
                    let d = s.splat2(w0 * x0, w1 * x1);
                    acc[r][i] = s.fma(F::dot2(s, w[r], xv), d, acc[r][i]);
                }
            }
        }
        if nb % 2 == 1 {
            // The last block of an odd count, alone.
            let blk = nb - 1;
            // SAFETY: as above, for block `blk`.
            let mut w = [unsafe { F::load(s, qs.as_ptr().add(blk * bb)) }; NT];
            for r in 1..NT {
                // SAFETY: as above.
                w[r] = unsafe { F::load(s, qs.as_ptr().add((r * nb + blk) * bb)) };
            }
            for i in 0..MT {
                // SAFETY: as above.
                let xv = unsafe { s.load_b32(xq.as_ptr().add(i * k + blk * BLOCK)) };
                for r in 0..NT {
                    let d = scales[r * nb + blk].to_f32() * xd[i * nb + blk];
                    acc[r][i] = s.fma(F::dot(s, w[r], xv), s.splat(d), acc[r][i]);
                }
            }
        }
        for r in 0..NT {
            for i in 0..MT {
                let mut y = s.reduce_sum(acc[r][i]);
                if F::OFFSET != 0.0 {
                    // Σ_b d_w · d_x · Σ (q - offset) x = the above minus
                    // offset · Σ_b d_w · (d_x · Σ x).
                    let sums = &xsum[i * nb..(i + 1) * nb];
                    let row = &scales[r * nb..(r + 1) * nb];
                    y -= F::OFFSET * super::super::simd::dot(s, sums, row);
                }
                out[r * m + i] = y;
            }
        }
    }
}

/// A weight block's 32 values in registers and their dot product with a
/// block of x.
trait Unpack {
    /// Bytes a block's values take ([`QuantFormat::block_bytes`]).
    const BYTES: usize;
    /// What every stored value is offset by (`w = d · (q - OFFSET)`).
    const OFFSET: f32;
    /// # Safety
    /// `p` must address a whole block.
    unsafe fn load<S: Lanes>(s: S, p: *const u8) -> S::B32;
    /// `Σ q·x` of the stored values `q`.
    fn dot<S: Lanes>(s: S, w: S::B32, x: S::B32) -> S::V;
    /// Two consecutive blocks.
    /// # Safety
    /// `p` must address two whole blocks.
    unsafe fn load2<S: Lanes>(s: S, p: *const u8) -> [S::B32; 2];
    /// [`Unpack::dot`] of two blocks, as [`Lanes::dot2_b32`] lays them out.
    fn dot2<S: Lanes>(s: S, w: [S::B32; 2], x: [S::B32; 2]) -> S::V;
}

/// q8_0: the block's 32 int8 values.
struct Q8;
impl Unpack for Q8 {
    const BYTES: usize = BLOCK;
    const OFFSET: f32 = 0.0;
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const u8) -> S::B32 {
        // SAFETY: a q8_0 block is 32 bytes.
        unsafe { s.load_b32(p.cast()) }
    }
    #[inline(always)]
    fn dot<S: Lanes>(s: S, w: S::B32, x: S::B32) -> S::V {
        s.dot_b32(w, x)
    }
    #[inline(always)]
    unsafe fn load2<S: Lanes>(s: S, p: *const u8) -> [S::B32; 2] {
        // SAFETY: two q8_0 blocks are 64 bytes.
        unsafe { s.load_b64(p.cast()) }
    }
    #[inline(always)]
    fn dot2<S: Lanes>(s: S, w: [S::B32; 2], x: [S::B32; 2]) -> S::V {
        s.dot2_b32(w, x)
    }
}

/// q4_0: the block's 32 4-bit values `q`, the weights `d · (q - 8)` (the
/// offset applied once per row, not per value).
struct Q4;
impl Unpack for Q4 {
    const BYTES: usize = BLOCK / 2;
    const OFFSET: f32 = 8.0;
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const u8) -> S::B32 {
        // SAFETY: a q4_0 block is 16 bytes.
        unsafe { s.load_u4_b32(p) }
    }
    #[inline(always)]
    fn dot<S: Lanes>(s: S, w: S::B32, x: S::B32) -> S::V {
        s.dot_ub32(w, x)
    }
    #[inline(always)]
    unsafe fn load2<S: Lanes>(s: S, p: *const u8) -> [S::B32; 2] {
        // SAFETY: two q4_0 blocks are 32 bytes.
        unsafe { s.load_u4_b64(p) }
    }
    #[inline(always)]
    fn dot2<S: Lanes>(s: S, w: [S::B32; 2], x: [S::B32; 2]) -> S::V {
        s.dot2_u4(w, x)
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    /// x through q8_0 and back, written out plainly (llama.cpp's rounding).
    fn reference_q8(x: &[f32]) -> Vec<f32> {
        x.chunks(32)
            .flat_map(|b| {
                let amax = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
                let d = amax / 127.0;
                b.iter().map(move |v| {
                    if d > 0.0 {
                        (v * (1.0 / d)).round() * d
                    } else {
                        0.0
                    }
                })
            })
            .collect()
    }

    #[test]
    fn quantized_rows_are_llama_cpp_q8_0_blocks() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.1).collect();
        x[40..].iter_mut().for_each(|v| *v = 0.0);
        let (q, d, sums) = quantize_rows(&x, 64);
        assert_eq!(d[0], 2.0 / 127.0);
        assert_eq!(q[0], -127);
        assert_eq!(q[20], 0);
        assert_eq!(q[31], 70); // 1.1 · 63.5 = 69.85
        // A block of zeros has scale 0 and values 0; the max maps to 127.
        assert_eq!(d[1], x[39] / 127.0);
        assert_eq!(q[39], 127);
        assert!(q[40..].iter().all(|v| *v == 0));
        for b in 0..2 {
            let total: i32 = q[b * 32..(b + 1) * 32].iter().map(|v| i32::from(*v)).sum();
            assert_eq!(sums[b], d[b] * total as f32);
        }
    }

    #[test]
    fn block_dot_products_are_exact_at_every_level() {
        // Extremes included: -128 weights (hostile checkpoints), ±127 x.
        let w: Vec<i8> = (0..32).map(|t| [-128, 127, -1, 0, 5][t % 5]).collect();
        let x: Vec<i8> = (0..32).map(|t| [127, -127, 3, -64][t % 4]).collect();
        let q4: Vec<u8> = (0..16)
            .map(|t| ((t as u8 * 7) % 16) | (((15 - t) as u8) << 4))
            .collect();
        let w4: Vec<i32> = (0..32)
            .map(|t| {
                if t < 16 {
                    (q4[t] & 15) as i32
                } else {
                    (q4[t - 16] >> 4) as i32
                }
            })
            .collect();
        let want: i32 = w.iter().zip(&x).map(|(a, b)| *a as i32 * *b as i32).sum();
        let want4: i32 = w4.iter().zip(&x).map(|(a, b)| a * *b as i32).sum();
        struct Dots<'a>(&'a [i8], &'a [i8], &'a [u8]);
        impl Kernel for Dots<'_> {
            type Output = (f32, f32);
            #[inline(always)]
            fn run<S: Lanes>(self, s: S) -> (f32, f32) {
                // SAFETY: 32, 32 and 16 bytes.
                unsafe {
                    let x = s.load_b32(self.1.as_ptr());
                    (
                        s.reduce_sum(s.dot_b32(s.load_b32(self.0.as_ptr()), x)),
                        s.reduce_sum(s.dot_ub32(s.load_u4_b32(self.2.as_ptr()), x)),
                    )
                }
            }
        }
        for &level in Level::available() {
            let got = simd::dispatch_at(level, Dots(&w, &x, &q4));
            assert_eq!(got, (want as f32, want4 as f32), "{level}");
        }

        // Pairs of blocks: the second block of each pair differs from the
        // first, and each block's sum is weighted by its own scale (f16 and
        // f32 paths), exactly (powers of two).
        let w2: Vec<i8> = w.iter().chain(w.iter().rev()).copied().collect();
        let x2: Vec<i8> = x.iter().copied().chain(x.iter().map(|v| v / 3)).collect();
        let q42: Vec<u8> = q4
            .iter()
            .copied()
            .chain(q4.iter().map(|b| b.rotate_left(4)))
            .collect();
        let dot =
            |a: &[i32], b: &[i8]| -> i32 { a.iter().zip(b).map(|(a, b)| a * *b as i32).sum() };
        let w2i: Vec<i32> = w2.iter().map(|v| *v as i32).collect();
        let scales = [f16::from_f32(0.5), f16::from_f32(-4.0)];
        let pair = |d: [i32; 2]| 0.5 * d[0] as f32 - 4.0 * d[1] as f32;
        let want2 = pair([dot(&w2i[..32], &x2[..32]), dot(&w2i[32..], &x2[32..])]);
        let unpacked: Vec<i32> = q42
            .chunks(16)
            .flat_map(|b| {
                (0..32).map(move |t| {
                    if t < 16 {
                        (b[t] & 15) as i32
                    } else {
                        (b[t - 16] >> 4) as i32
                    }
                })
            })
            .collect();
        let want42 = pair([
            dot(&unpacked[..32], &x2[..32]),
            dot(&unpacked[32..], &x2[32..]),
        ]);
        struct PairDots<'a>(&'a [i8], &'a [i8], &'a [u8], &'a [f16; 2]);
        impl Kernel for PairDots<'_> {
            type Output = [f32; 4];
            #[inline(always)]
            fn run<S: Lanes>(self, s: S) -> [f32; 4] {
                // SAFETY: 64, 64 and 32 bytes, 64 f16 values.
                unsafe {
                    // x in the level's pair layout, as `run` lays it out.
                    let xs = if S::SPLIT_PAIRS {
                        simd::split_pair(self.1)
                    } else {
                        std::array::from_fn(|t| self.1[t])
                    };
                    let x = [s.load_b32(xs.as_ptr()), s.load_b32(xs.as_ptr().add(32))];
                    let w = s.load_b64(self.0.as_ptr());
                    let w4 = s.load_u4_b64(self.2.as_ptr());
                    // The scales as the last and the first pair of a group
                    // of N widened f16 scales (the other lanes distractors).
                    let mut group = [f16::from_f32(99.0); 64];
                    group[S::N - 2..S::N].copy_from_slice(self.3);
                    let last = s.pair_lanes(s.load_f16(group.as_ptr()), S::N / 2 - 1);
                    let mut group = [f16::from_f32(-99.0); 64];
                    group[..2].copy_from_slice(self.3);
                    let first = s.pair_lanes(s.load_f16(group.as_ptr()), 0);
                    let d32 = s.splat2(self.3[0].to_f32(), self.3[1].to_f32());
                    [
                        s.reduce_sum(s.mul(s.dot2_b32(w, x), last)),
                        s.reduce_sum(s.mul(s.dot2_u4(w4, x), last)),
                        s.reduce_sum(s.mul(s.dot2_b32(w, x), first)),
                        s.reduce_sum(s.mul(s.halves(s.splat(1.0), s.splat(2.0)), d32)),
                    ]
                }
            }
        }
        for &level in Level::available() {
            let got = simd::dispatch_at(level, PairDots(&w2, &x2, &q42, &scales));
            let n = got[3] / (0.5 - 8.0);
            assert_eq!(got[..3], [want2, want42, want2], "{level}");
            assert!([4.0, 8.0, 16.0].contains(&n), "{level}: halves {}", got[3]);
        }
    }

    #[test]
    fn matches_the_dequantized_product_at_every_level_and_row_count() {
        // k = 96: three blocks (a scale group shorter than N at every level);
        // k = 544: 17 blocks (whole groups of 8 or 16 and an odd block);
        // k = 704: 22 (groups, then single pairs); n = 37 leaves partial
        // tasks and single-row tiles.
        for (n, k) in [(37, 96), (21, 544), (13, 704)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 2_654_435_761) % 1009) as f32 / 500.0 - 1.0)
                .collect();
            for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
                let q = QuantMatrix::quantize(format, n, k, &w).unwrap();
                let mut wd = vec![0f32; n * k];
                q.dequantize_rows(0..n, &mut wd);
                for m in [1, 2, 3, 4, 5, 8, 9, 16] {
                    let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                    // The product with x's q8_0 values (what the kernel
                    // computes, up to f32 summation order) and with x itself.
                    let xr = reference_q8(&x);
                    let dot = |x: &[f32], i: usize, j: usize| -> f64 {
                        (0..k)
                            .map(|c| x[i * k + c] as f64 * wd[j * k + c] as f64)
                            .sum()
                    };
                    let want: Vec<f64> = (0..m * n).map(|t| dot(&xr, t / n, t % n)).collect();
                    let exact: Vec<f64> = (0..m * n).map(|t| dot(&x, t / n, t % n)).collect();
                    // Rounding x moves each value by at most half its block's
                    // step (max |x| / 127 / 2): the product moves by at most
                    // Σ |w| times that.
                    let bound = |t: usize| -> f64 {
                        let (i, j) = (t / n, t % n);
                        (0..k)
                            .map(|c| {
                                let b = &x[i * k + c / 32 * 32..][..32];
                                let amax = b.iter().fold(0f32, |a, v| a.max(v.abs()));
                                wd[j * k + c].abs() as f64 * amax as f64 / 254.0
                            })
                            .sum::<f64>()
                    };
                    for &level in Level::available() {
                        let got = run(level, &x, m, &q);
                        for (t, ((g, w), e)) in got.iter().zip(&want).zip(&exact).enumerate() {
                            assert!(
                                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "{level} {format} m={m} k={k}: {g} vs {w}"
                            );
                            assert!(
                                (*g as f64 - e).abs() <= bound(t) + 1e-4 * (1.0 + e.abs()),
                                "{level} {format} m={m} k={k}: {g} vs unquantized {e}"
                            );
                        }
                    }
                }
            }
        }
    }
}
