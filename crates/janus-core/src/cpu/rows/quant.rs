//! The block kernel for quantized weights ([`Interleaved`]) and a few rows of
//! activations, as llama.cpp does it: each row of `x` is quantized to q8_0
//! blocks (32 int8 values and one f32 scale), each weight block is read once
//! per call and its dot product with every row's block is exact integer
//! arithmetic.
//!
//! The weight rows of a group sit side by side ([`Interleaved`], a group
//! being one vector's `N` lanes), so a vector's lanes are weight rows: one
//! block of `N` rows is eight vectors of
//! four values per lane (q4_0: four loads, each split into its low and high
//! halves; q8_0: eight loads), each multiplied by four values of x broadcast
//! to every lane (`vpdpbusd` with VNNI, [`Level::AvxVnni`] and
//! [`Level::Avx512Vnni`]: unsigned weights, so q8_0 values go in offset by
//! 128 and q4_0 values as they are stored). Then one conversion and two
//! multiply-adds per block and row of x apply both scales and take the
//! weights' offset off: `d_w · (d_x · Σ v·x - offset · d_x · Σ x)`. The
//! unpacked weights serve every row of x in registers (up to 16 rows at
//! AVX-512, 4 at AVX2, where without VNNI the block is walked one chunk at a
//! time for all four rows: [`Lanes::dot_tile_q4`]). With VNNI eight rows (a
//! parallel-4 image step) cost little more than two; plain AVX2's `maddubs`
//! products make eight rows compute-bound (on a Zen 3 EPYC, 5632 x 2048
//! weights: two rows 0.30 ms, eight 0.98 ms). Written once over [`Lanes`],
//! like [`super::widen`]. A prompt's rows take the same path where the
//! level's int8 dot products beat the f32 product ([`takes_many_rows`]): each
//! task's group of weight rows stays in L1 while it walks every row of x.

use rayon::prelude::*;

use super::super::interleaved::Interleaved;
use super::super::simd::{self, Kernel, Lanes, Level};
use crate::quant::{BLOCK, QuantFormat};

/// `y [m, n] = x [m, k] · dequant(q) [n, k]ᵀ` at `level`, with `x` quantized
/// per block of 32 to int8 ([`quantize_rows`]). `q`'s groups must be the
/// level's lanes ([`Level::lanes`] of the level the CPU runs, `level.capped()`).
#[cfg(test)]
pub(crate) fn run(level: Level, x: &[f32], m: usize, q: &Interleaved) -> Vec<f32> {
    run_many(level, x, m, &[q]).remove(0)
}

/// [`run`] for several weights of the same input width at once (q, k and v;
/// gate and up): `x` quantized once and one parallel loop over all their rows
/// (each separate call costs a hand-off to the threads and an uneven end,
/// measured ~25 µs per call at Janus-Pro-1B's shapes). One `[m, n_i]` output
/// per weight.
pub(crate) fn run_many(level: Level, x: &[f32], m: usize, qs: &[&Interleaved]) -> Vec<Vec<f32>> {
    let k = qs.first().map_or(0, |q| q.cols());
    assert!(qs.iter().all(|q| q.cols() == k) && x.len() == m * k);
    let (xq, xd, xsum) = quantize_rows(level, x, k);
    // Per format, `-offset · d · Σ values` of every block of x: the term
    // that takes the weights' offset off, made once here rather than per
    // block, row and group in the tiles (8 % off eight rows of q4_0 at
    // avx512vnni on a Zen 4; the same at one and two rows and at avx2).
    let offset_term = |format: QuantFormat| -> Vec<f32> {
        if !qs.iter().any(|q| q.format() == format) {
            return Vec::new();
        }
        let offset = simd::dispatch_at(level, Offset(format));
        xsum.iter().map(|s| -offset * s).collect()
    };
    let (xo8, xo4) = (
        offset_term(QuantFormat::Q8_0),
        offset_term(QuantFormat::Q4_0),
    );
    let acts = |format: QuantFormat| Acts {
        xq: &xq,
        xd: &xd,
        xo: match format {
            QuantFormat::Q8_0 => &xo8,
            QuantFormat::Q4_0 => &xo4,
        },
    };
    // Each weight's rows start at a multiple of the task size, so no task
    // spans two weights (the padding columns are computed by no one and
    // dropped below).
    let task = super::BLOCK;
    let mut starts = vec![0];
    for q in qs {
        starts.push(starts[starts.len() - 1] + q.rows().next_multiple_of(task));
    }
    let total = starts[qs.len()];
    // Each task stores its tiles' vectors (a group's `N` outputs of one row
    // of x, consecutive in `y`) straight into `y`, padding columns included
    // (they lie inside each weight's span, a multiple of the task size, and
    // are dropped below): no per-task buffer to transpose back (~5 % of a
    // q4_0 parallel-4 image step).
    let mut y = vec![0f32; m * total];
    let out = super::Columns(y.as_mut_ptr());
    (0..total / task).into_par_iter().for_each(|t| {
        let col0 = t * task;
        let i = starts.partition_point(|s| *s <= col0) - 1;
        let (q, local) = (qs[i], col0 - starts[i]);
        simd::dispatch_at(
            level,
            Groups {
                x: acts(q.format()),
                m,
                q,
                row0: local,
                rows: (q.rows() - local).min(task),
                y: out,
                ld: total,
                col0,
            },
        )
    });
    if let [q] = qs
        && q.rows() == total
    {
        return vec![y];
    }
    qs.iter()
        .zip(&starts)
        .map(|(q, s)| {
            let mut out = Vec::with_capacity(m * q.rows());
            for row in y.chunks_exact(total) {
                out.extend_from_slice(&row[*s..*s + q.rows()]);
            }
            out
        })
        .collect()
}

/// Whether a prompt's rows (more than [`super::MAX_ROWS`]) times a `format`
/// weight run through this kernel at `level` as well, rather than through a
/// dequantization per panel into gemm's f32 product (`cpu::many`): where the
/// level's int8 dot products beat f32 multiply-adds. Measured in one process
/// (600 rows of 2048 times 5632 rows, 2 threads, Sapphire Rapids VM; gemm at
/// AVX-512, and at AVX2 in a build without gemm's AVX-512 kernels), this
/// kernel / dequantize + gemm:
///
/// | level | q4_0 | q8_0 |
/// |---|---|---|
/// | avx512vnni | 23 / 43 ms | 28 / 49 ms |
/// | avx512 | 38 / 46 ms | 56 / 47 ms |
/// | avxvnni | 38 / 47 ms (45-49 / 85-89 against AVX2 gemm) | 37 / 47 ms (41-70 / 88-114) |
/// | avx2 | 55-59 / 89 ms (AVX2 gemm) | 72-82 / 74-89 ms (AVX2 gemm) |
///
/// q8_0 without VNNI takes three more instructions per dot product (its
/// sums overflow 16 bits), so it stays with gemm there. NEON and the portable
/// level (unmeasured; the portable one 25x slower than gemm here) keep gemm.
pub(crate) fn takes_many_rows(level: Level, format: QuantFormat) -> bool {
    match level {
        Level::Avx512Vnni | Level::AvxVnni => true,
        Level::Avx512 | Level::Avx2 => format == QuantFormat::Q4_0,
        Level::Neon | Level::Scalar => false,
    }
}

/// Rows of `x` (`k` values each, `k` a multiple of 32) as q8_0 blocks: int8
/// values `x · (1 / d)` rounded to the nearest (ties to even, as llama.cpp's
/// SIMD quantizers do) in `-127..=127` (also where x is not finite), per
/// block the scale `d = max |x| / 127` and `d · Σ values` (what a weight
/// offset multiplies, [`Unpack::offset`]). Vectorised at `level`; for finite
/// x the same values at every level (max, products and rounding are exact
/// per lane, the integer sums exact in f32).
pub(crate) fn quantize_rows(level: Level, x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    debug_assert_eq!(k % BLOCK, 0);
    let mut qs = vec![0i8; x.len()];
    let mut ds = vec![0f32; x.len() / BLOCK];
    let mut sums = vec![0f32; x.len() / BLOCK];
    if x.len() <= PAR_VALUES {
        simd::dispatch_at(level, QuantizeActs(x, &mut qs, &mut ds, &mut sums));
    } else {
        // A prompt's rows on all threads (serially ~0.7 µs per 2048 values).
        x.par_chunks(PAR_VALUES)
            .zip(qs.par_chunks_mut(PAR_VALUES))
            .zip(ds.par_chunks_mut(PAR_VALUES / BLOCK))
            .zip(sums.par_chunks_mut(PAR_VALUES / BLOCK))
            .for_each(|(((x, q), d), s)| simd::dispatch_at(level, QuantizeActs(x, q, d, s)));
    }
    (qs, ds, sums)
}

/// Values [`quantize_rows`] quantizes on the calling thread (the few rows of
/// a decode or image step, whose hand-off to other threads would cost more)
/// and per parallel task beyond that.
const PAR_VALUES: usize = 64 * 2048;

/// [`quantize_rows`] as a kernel: `x`'s blocks into int8 values, scales and
/// scaled sums.
struct QuantizeActs<'a>(&'a [f32], &'a mut [i8], &'a mut [f32], &'a mut [f32]);

impl Kernel for QuantizeActs<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let QuantizeActs(x, qs, ds, sums) = self;
        assert_eq!(BLOCK % S::N, 0);
        for (((block, q), d), sum) in x
            .chunks_exact(BLOCK)
            .zip(qs.chunks_exact_mut(BLOCK))
            .zip(ds)
            .zip(sums)
        {
            // SAFETY (the loads and stores): `c + N <= 32`, inside the block
            // of x and of q.
            let mut amax = s.zero();
            for c in (0..BLOCK).step_by(S::N) {
                // `|x|` first: where a lane is NaN, x86's max keeps the
                // other operand, so NaN does not spread into the scale.
                amax = s.max(s.abs(unsafe { s.load(block.as_ptr().add(c)) }), amax);
            }
            *d = s.reduce_max(amax) / 127.0;
            let inv = s.splat(if *d > 0.0 { 1.0 / *d } else { 0.0 });
            let (lo, hi) = (s.splat(-127.0), s.splat(127.0));
            let mut total = s.zero();
            for c in (0..BLOCK).step_by(S::N) {
                let v = s.round(s.mul(unsafe { s.load(block.as_ptr().add(c)) }, inv));
                // A no-op for finite x; keeps non-finite lanes in range (the
                // kernels' 16-bit sums rely on it).
                let v = s.min(s.max(v, lo), hi);
                total = s.add(total, v);
                unsafe { s.store_i8(q.as_mut_ptr().add(c), v) };
            }
            // Integers of at most 32 · 127 in magnitude: exact in f32.
            *sum = *d * s.reduce_sum(total);
        }
    }
}

/// `x` as q8_0 blocks ([`quantize_rows`]) and, per block, the offset term
/// of the weights' format (`-offset · d · Σ values`).
#[derive(Clone, Copy)]
struct Acts<'a> {
    xq: &'a [i8],
    xd: &'a [f32],
    xo: &'a [f32],
}

/// The offset of a format's values in registers at the dispatched level
/// ([`Unpack::offset`]).
struct Offset(QuantFormat);

impl Kernel for Offset {
    type Output = f32;
    #[inline(always)]
    fn run<S: Lanes>(self, _: S) -> f32 {
        match self.0 {
            QuantFormat::Q8_0 => Q8::offset::<S>(),
            QuantFormat::Q4_0 => Q4::offset::<S>(),
        }
    }
}

/// The weight rows `row0..row0 + rows` (whole groups but maybe the last),
/// into columns `col0..` of `y [m, ld]`: `y[i * ld + col0 + r] = x[i] ·
/// w[row0 + r]`, whole groups written (a padded group's extra lanes go to
/// the columns after the last row, which must lie inside `y`'s rows).
struct Groups<'a> {
    x: Acts<'a>,
    m: usize,
    q: &'a Interleaved,
    row0: usize,
    rows: usize,
    y: super::Columns,
    ld: usize,
    col0: usize,
}

impl Kernel for Groups<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self {
            x,
            m,
            q,
            row0,
            rows,
            y,
            ld,
            col0,
        } = self;
        // One group is one vector of weight rows; whole groups stay inside
        // `y`'s rows (`m` rows of `ld`, the caller's allocation).
        assert!(
            q.group() == S::N && row0 % S::N == 0,
            "groups of {} rows",
            q.group()
        );
        assert!(col0 + rows.div_ceil(S::N) * S::N <= ld);
        // Registers: an accumulator per row of x, a block's eight weight
        // vectors (or one chunk at a time, `Lanes::dot_tile_q4`), its scales
        // and a few temporaries: 16 rows fit 32 registers, 4 fit 16 (eight
        // rows at 16 registers were no faster).
        let max_mt = if S::REGS >= 32 { 16 } else { 4 };
        for c in 0..rows.div_ceil(S::N) {
            let g = row0 / S::N + c;
            let mut i = 0;
            while i < m {
                // Tiles of 16, 8, 4, 2 and 1 rows: few instances per level.
                let mt = 1 << (m - i).min(max_mt).ilog2();
                let t = Tile {
                    x,
                    q,
                    g,
                    i0: i,
                    y,
                    ld,
                    col: col0 + c * S::N,
                };
                match (q.format(), mt) {
                    (QuantFormat::Q8_0, 16) => t.run::<S, Q8, 16>(s),
                    (QuantFormat::Q8_0, 8) => t.run::<S, Q8, 8>(s),
                    (QuantFormat::Q8_0, 4) => t.run::<S, Q8, 4>(s),
                    (QuantFormat::Q8_0, 2) => t.run::<S, Q8, 2>(s),
                    (QuantFormat::Q8_0, _) => t.run::<S, Q8, 1>(s),
                    (QuantFormat::Q4_0, 16) => t.run::<S, Q4, 16>(s),
                    (QuantFormat::Q4_0, 8) => t.run::<S, Q4, 8>(s),
                    (QuantFormat::Q4_0, 4) => t.run::<S, Q4, 4>(s),
                    (QuantFormat::Q4_0, 2) => t.run::<S, Q4, 2>(s),
                    (QuantFormat::Q4_0, _) => t.run::<S, Q4, 1>(s),
                }
                i += mt;
            }
        }
    }
}

/// How far ahead of the reads the kernel prefetches weight bytes.
const PREFETCH_BYTES: usize = 8192;

/// Group `g` (`N` weight rows) times rows `i0..i0 + MT` of x, into
/// `y[i * ld + col..+ N]` for each row `i` of the tile.
struct Tile<'a> {
    x: Acts<'a>,
    q: &'a Interleaved,
    g: usize,
    i0: usize,
    y: super::Columns,
    ld: usize,
    col: usize,
}

impl Tile<'_> {
    #[inline(always)]
    fn run<S: Lanes, F: Unpack, const MT: usize>(self, s: S) {
        let Self {
            x,
            q,
            g,
            i0,
            y: out,
            ld,
            col,
        } = self;
        let Acts { xq, xd, xo } = x;
        let (k, bb) = (q.cols(), F::BYTES);
        let nb = k / BLOCK;
        let (scales, qs) = (q.group_scales(g), q.group_qs(g));
        debug_assert_eq!(bb, q.format().block_bytes());
        assert!(
            xq.len() >= (i0 + MT) * k
                && xd.len() >= (i0 + MT) * nb
                && xo.len() >= (i0 + MT) * nb
                && scales.len() == nb * S::N
                && qs.len() == nb * S::N * bb
        );
        let mut y = [s.zero(); MT];
        for b in 0..nb {
            let at = b * S::N * bb;
            // The blocks ahead, one cache line at a time (a hint: never
            // faults, even past the end).
            for line in (0..S::N * bb).step_by(64) {
                s.prefetch_l2(qs.as_ptr().wrapping_add(at + line + PREFETCH_BYTES));
            }
            // SAFETY: block `b`'s chunks and scales are inside the group's
            // planes, rows `i0..i0 + MT`'s blocks `b` inside `xq` (asserted
            // above).
            let (dots, dw) = unsafe {
                (
                    F::dot_tile::<S, MT>(
                        s,
                        qs.as_ptr().add(at),
                        xq.as_ptr().add(i0 * k + b * BLOCK),
                        k,
                    ),
                    s.load_f16(scales.as_ptr().add(b * S::N)),
                )
            };
            for (i, (y, dot)) in y.iter_mut().zip(dots).enumerate() {
                let r = (i0 + i) * nb + b;
                // SAFETY: row `i0 + i`'s block `b` is inside `xd` and `xo`
                // (asserted above).
                let (dx, off) = unsafe { (*xd.get_unchecked(r), *xo.get_unchecked(r)) };
                let t = s.fma(s.splat(dx), dot, s.splat(off));
                *y = s.fma(dw, t, *y);
            }
        }
        for (i, y) in y.iter().enumerate() {
            // SAFETY: row `i0 + i` of `y` holds columns `col..col + N` (the
            // caller's span), written by this task alone.
            unsafe { s.store(out.get().add((i0 + i) * ld + col), *y) };
        }
    }
}

/// One block of `N` weight rows and its dot products with a tile of blocks
/// of x ([`Lanes::dot_tile_q4`], [`Lanes::dot_tile_q8`]).
trait Unpack {
    /// Bytes a block's values take ([`QuantFormat::block_bytes`]).
    const BYTES: usize;
    /// What every value in registers is offset by (`w = d · (v - offset)`).
    fn offset<S: Lanes>() -> f32;
    /// Per lane, `Σ v·x` over the block at `p` for each of `MT` blocks of
    /// x (block `i` at `x + i · stride`).
    /// # Safety
    /// The block's chunks (`4·N` bytes each) and the blocks of x must be
    /// readable.
    unsafe fn dot_tile<S: Lanes, const MT: usize>(
        s: S,
        p: *const u8,
        x: *const i8,
        stride: usize,
    ) -> [S::V; MT];
}

/// q8_0: eight chunks of int8 values (offset by [`Lanes::Q8_OFFSET`]).
struct Q8;
impl Unpack for Q8 {
    const BYTES: usize = BLOCK;
    #[inline(always)]
    fn offset<S: Lanes>() -> f32 {
        S::Q8_OFFSET
    }
    #[inline(always)]
    unsafe fn dot_tile<S: Lanes, const MT: usize>(
        s: S,
        p: *const u8,
        x: *const i8,
        stride: usize,
    ) -> [S::V; MT] {
        // SAFETY: forwarded.
        unsafe { s.dot_tile_q8::<MT>(p.cast(), x, stride) }
    }
}

/// q4_0: four chunks of packed 4-bit values `v` (low halves: weights
/// `4c..4c + 4`, high halves `16 + 4c..`), the weights `d · (v - 8)`.
struct Q4;
impl Unpack for Q4 {
    const BYTES: usize = BLOCK / 2;
    #[inline(always)]
    fn offset<S: Lanes>() -> f32 {
        8.0
    }
    #[inline(always)]
    unsafe fn dot_tile<S: Lanes, const MT: usize>(
        s: S,
        p: *const u8,
        x: *const i8,
        stride: usize,
    ) -> [S::V; MT] {
        // SAFETY: forwarded.
        unsafe { s.dot_tile_q4::<MT>(p, x, stride) }
    }
}

/// Rows of x through q8_0 blocks and back, written out plainly (llama.cpp's
/// scale, ties rounded to even): what the kernel multiplies.
#[cfg(test)]
pub(crate) fn reference_q8(x: &[f32]) -> Vec<f32> {
    x.chunks(32)
        .flat_map(|b| {
            let amax = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
            let d = amax / 127.0;
            b.iter().map(move |v| {
                if d > 0.0 {
                    (v * (1.0 / d)).round_ties_even() * d
                } else {
                    0.0
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantMatrix;

    #[test]
    fn quantized_rows_are_llama_cpp_q8_0_blocks() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.1).collect();
        x[40..].iter_mut().for_each(|v| *v = 0.0);
        let (q, d, sums) = quantize_rows(Level::Scalar, &x, 64);
        // The same values at every level the compiler vectorises for.
        let wide: Vec<f32> = (0..16 * 2048)
            .map(|i| ((i * 7919) % 2001) as f32 / 97.0 - 10.0)
            .collect();
        let plain = quantize_rows(Level::Scalar, &wide, 2048);
        for &level in Level::available() {
            assert_eq!(quantize_rows(level, &wide, 2048), plain, "{level}");
        }
        // A prompt's rows, quantized in parallel tasks: the same values as
        // row by row on this thread.
        let long: Vec<f32> = (0..2 * PAR_VALUES + 3 * 2048)
            .map(|i| ((i * 7919) % 2003) as f32 / 89.0 - 11.0)
            .collect();
        let level = simd::level();
        let mut by_row = (Vec::new(), Vec::new(), Vec::new());
        for row in long.chunks(2048) {
            let (q, d, s) = quantize_rows(level, row, 2048);
            by_row.0.extend(q);
            by_row.1.extend(d);
            by_row.2.extend(s);
        }
        assert_eq!(quantize_rows(level, &long, 2048), by_row);
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
        // Non-finite values give values in range (NaN may be ignored by the
        // scale or not, depending on the level).
        let mut odd = wide[..64].to_vec();
        odd[3] = f32::NAN;
        odd[40] = f32::INFINITY;
        odd[41] = f32::NEG_INFINITY;
        for &level in Level::available() {
            let (q, _, _) = quantize_rows(level, &odd, 64);
            assert!(q.iter().all(|v| (-127..=127).contains(v)), "{level}");
        }
        // Scale 1: halves round to even at every level.
        let mut ties = vec![0f32; 32];
        ties[..8].copy_from_slice(&[127.0, 2.5, 3.5, -2.5, -0.5, 0.5, 1.5, -126.5]);
        for &level in Level::available() {
            let (q, d, sums) = quantize_rows(level, &ties, 32);
            assert_eq!(d, [1.0], "{level}");
            assert_eq!(q[..8], [127, 2, 4, -2, 0, 0, 2, -126], "{level}");
            assert_eq!(sums, [7.0], "{level}");
        }
    }

    /// A block of `N` lanes from `w8` and `w4` (eight and four chunks of
    /// `4·N` bytes) times the two blocks of `x` (32 values each), through the
    /// level's tile products (`dot_tile_q8`, `dot_tile_q4`: a level's own or
    /// the default) and through the defaults (`dot_rows_q8`, `dot_rows_q4`
    /// row by row): per way, the q8_0 lanes of both rows, then the q4_0
    /// lanes; then `N` and the q8_0 offset.
    struct RowDots<'a>(&'a [i8], &'a [u8], &'a [i8]);
    impl Kernel for RowDots<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) -> Vec<f32> {
            let mut lanes = [0f32; 16];
            let mut out = Vec::new();
            let (w8, w4, x) = (self.0.as_ptr(), self.1.as_ptr(), self.2.as_ptr());
            // SAFETY: 8 x 64 and 4 x 64 bytes hold every chunk at every level
            // (`4·N <= 64`), `x` two blocks of 32; `lanes` holds 16 >= N values.
            unsafe {
                let ways = [
                    s.dot_tile_q8::<2>(w8, x, 32),
                    s.dot_tile_q4::<2>(w4, x, 32),
                    simd::tile_q8_by_rows::<S, 2>(s, w8, x, 32),
                    simd::tile_q4_by_rows::<S, 2>(s, w4, x, 32),
                ];
                for v in ways.into_iter().flatten() {
                    s.store(lanes.as_mut_ptr(), v);
                    out.extend_from_slice(&lanes[..S::N]);
                }
            }
            out.extend([S::N as f32, S::Q8_OFFSET]);
            out
        }
    }

    #[test]
    fn block_dot_products_are_exact_at_every_level() {
        // Extremes included: -128 q8_0 weights (hostile checkpoints), 0 and
        // 15 q4_0 values, ±127 x.
        let w8: Vec<i8> = (0..8 * 64)
            .map(|t| [-128, 127, -1, 0, 5, 99, -77][t % 7])
            .collect();
        let w4: Vec<u8> = (0..4 * 64)
            .map(|t| ((t * 7) % 16) as u8 | ((((t * 5 + 3) % 16) as u8) << 4))
            .collect();
        let x: Vec<i8> = (0..64)
            .map(|t| [127, -127, 3, -64, 11, 127, 127][t % 7])
            .collect();
        for &level in Level::available() {
            let got = simd::dispatch_at(level, RowDots(&w8, &w4, &x));
            let (n, offset) = (got[got.len() - 2] as usize, got[got.len() - 1]);
            assert_eq!(n, level.lanes(), "{level}");
            assert!([0.0, 128.0].contains(&offset), "{level}");
            let mut want = Vec::new();
            // q8_0: chunk `s` holds x values `4s..4s + 4`.
            for x in x.chunks(32) {
                for l in 0..n {
                    let mut sum = 0i32;
                    for s in 0..8 {
                        for t in 0..4 {
                            let w = i32::from(w8[s * 4 * n + 4 * l + t]) + offset as i32;
                            sum += w * i32::from(x[4 * s + t]);
                        }
                    }
                    want.push(sum as f32);
                }
            }
            // q4_0: chunk `c`'s low halves meet x values `4c..`, its high
            // halves x values `16 + 4c..`.
            for x in x.chunks(32) {
                for l in 0..n {
                    let mut sum = 0i32;
                    for c in 0..4 {
                        for t in 0..4 {
                            let byte = w4[c * 4 * n + 4 * l + t];
                            sum += i32::from(byte & 15) * i32::from(x[4 * c + t]);
                            sum += i32::from(byte >> 4) * i32::from(x[16 + 4 * c + t]);
                        }
                    }
                    want.push(sum as f32);
                }
            }
            let ways = &got[..got.len() - 2];
            assert_eq!(ways[..want.len()], want[..], "{level}: the level's tiles");
            assert_eq!(ways[want.len()..], want[..], "{level}: row by row");
        }
    }

    #[test]
    fn several_weights_of_mixed_formats_give_what_each_gives_alone() {
        // Rows that are not multiples of the task size (each weight's span
        // padded), q8_0 between two q4_0 weights (each gets its own offset
        // term), one and nine rows of x.
        let k = 96;
        let weights: Vec<(QuantFormat, usize)> = vec![
            (QuantFormat::Q4_0, 37),
            (QuantFormat::Q8_0, 21),
            (QuantFormat::Q4_0, 6),
        ];
        for &level in Level::available() {
            let qs: Vec<Interleaved> = weights
                .iter()
                .map(|&(format, n)| {
                    let w: Vec<f32> = (0..n * k)
                        .map(|i| ((i * 7919 + n) % 1013) as f32 / 506.0 - 1.0)
                        .collect();
                    let q = QuantMatrix::quantize(format, n, k, &w).unwrap();
                    Interleaved::new(q, level.lanes())
                })
                .collect();
            let refs: Vec<&Interleaved> = qs.iter().collect();
            for m in [1, 9] {
                let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.29).cos()).collect();
                let together = run_many(level, &x, m, &refs);
                for (q, got) in qs.iter().zip(&together) {
                    assert_eq!(got, &run(level, &x, m, q), "{level} m={m}");
                }
            }
        }
    }

    #[test]
    fn matches_the_dequantized_product_at_every_level_and_row_count() {
        // n = 37, 21, 13, 9, 6: the last group of weight rows padded at
        // every level; m = 3, 5, 9: tiles of 2 + 1, 4 + 1, 8 + 1 rows (and
        // 4 + 4 + 1 at 16 registers); m = 37: a prompt's rows, 16 + 16 + 4 +
        // 1 (nine tiles of 4 and one of 1 at 16 registers).
        for (n, k) in [(37, 96), (21, 544), (13, 704), (9, 1600), (6, 2048)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 2_654_435_761) % 1009) as f32 / 500.0 - 1.0)
                .collect();
            for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
                let q = QuantMatrix::quantize(format, n, k, &w).unwrap();
                let mut wd = vec![0f32; n * k];
                q.dequantize_rows(0..n, &mut wd);
                // Each level's layout (groups of its lanes), made once.
                let layouts: Vec<(Level, Interleaved)> = Level::available()
                    .iter()
                    .map(|&level| (level, Interleaved::new(q.clone(), level.lanes())))
                    .collect();
                for m in [1, 2, 3, 4, 5, 8, 9, 16, 37] {
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
                    for (level, layout) in &layouts {
                        let got = run(*level, &x, m, layout);
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
