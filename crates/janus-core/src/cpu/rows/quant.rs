//! The block kernel for quantized weights ([`QuantMatrix`]) and a few rows of
//! activations, as llama.cpp does it: each row of `x` is quantized to q8_0
//! blocks (32 int8 values and one f32 scale), each weight block is read once
//! per call and its dot product with every row's block is exact integer
//! arithmetic. Blocks go `N / 4` at a time (a dot group, [`Lanes::Q`]): the
//! group's halves are split so that each block's integer sums land in four
//! lanes of one vector, so one int-to-float conversion and one multiply-add
//! by the blocks' scale products serve `8·N` weights: 128 at AVX-512, 64 at
//! AVX2. Scales go `N` blocks at a time: `N` f16 weight scales widen in one
//! instruction, times `N` x scales, and each dot group picks its scales with
//! one permute ([`Lanes::group_lanes`]). With VNNI ([`Level::AvxVnni`],
//! [`Level::Avx512Vnni`]) a half group's integer dot product is one
//! instruction (`vpdpbusd`, unsigned weights: q8_0 values go in offset by 128
//! and q4_0 values as they are stored, the offsets taken off in the
//! accumulators once per `N` blocks).
//! Integer products take fewer instructions per weight than widening every
//! weight to f32; eight rows (a parallel-4 image step) are bound by these
//! instructions, one or two rows by memory (docs/benchmarks.md). Written once
//! over [`Lanes`], like [`super::widen`].

use super::super::simd::{self, Kernel, Lanes, Level};
use crate::quant::{BLOCK, QuantFormat, QuantMatrix};

/// `y [m, n] = x [m, k] · dequant(q) [n, k]ᵀ` at `level`, with `x` quantized
/// per block of 32 to int8 ([`quantize_rows`]).
pub(crate) fn run(level: Level, x: &[f32], m: usize, q: &QuantMatrix) -> Vec<f32> {
    let (n, k) = (q.rows(), q.cols());
    debug_assert_eq!(x.len(), m * k);
    let (xq, xd, xsum) = quantize_rows(level, x, k);
    let xq = split_rows(xq, k, simd::dispatch_at(level, GroupBlocks));
    super::par_columns(n, m, |row0, yt| {
        let rows = yt.len() / m;
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
    })
}

/// Blocks per dot group at the level (`N / 4`).
struct GroupBlocks;

impl Kernel for GroupBlocks {
    type Output = usize;
    #[inline(always)]
    fn run<S: Lanes>(self, _: S) -> usize {
        S::N / 4
    }
}

/// Rows of `k` int8 values with each whole dot group of `g` blocks in the
/// split layout of [`simd::split_groups`] (the blocks after the last whole
/// group stay as they are).
fn split_rows(mut xq: Vec<i8>, k: usize, g: usize) -> Vec<i8> {
    if g == 1 {
        // One block split in halves is the block.
        return xq;
    }
    let mut group = vec![0i8; g * BLOCK];
    for row in xq.chunks_exact_mut(k) {
        for blocks in row.chunks_exact_mut(g * BLOCK) {
            simd::split_groups(blocks, &mut group);
            blocks.copy_from_slice(&group);
        }
    }
    xq
}

/// Rows of `x` (`k` values each, `k` a multiple of 32) as q8_0 blocks: int8
/// values `round(x · (1 / d))` in `-127..=127`, per block the scale
/// `d = max |x| / 127` (llama.cpp's q8_0 rounding) and `d · Σ values` (what a
/// weight offset multiplies, [`Unpack::offset`]). Plain scalar code compiled at
/// `level` (vectorised by the compiler; the same values at every level).
pub(crate) fn quantize_rows(level: Level, x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    debug_assert_eq!(k % BLOCK, 0);
    simd::dispatch_at(level, QuantizeActs(x))
}

/// [`quantize_rows`] as a kernel.
struct QuantizeActs<'a>(&'a [f32]);

impl Kernel for QuantizeActs<'_> {
    type Output = (Vec<i8>, Vec<f32>, Vec<f32>);
    #[inline(always)]
    fn run<S: Lanes>(self, _: S) -> Self::Output {
        let x = self.0;
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
        // Accumulators and scale products (`MT x NT` each), a dot group of
        // weights per weight row and one of x in registers: 8 x 1 and 2 x 4
        // tiles fit 32 registers; with 16 (AVX2) 4 x 1 and 2 x 2.
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

    /// A dot group at a time: one integer dot product per group and row of
    /// `x` ([`Lanes::dot_q4`]), converted and scaled as one vector.
    // `acc[r][i]` pairs weight row `r` with row `i` of `x`: indices read clearer.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn run<S: Lanes, F: Unpack, const MT: usize, const NT: usize>(self, s: S) {
        let Self { x, q, j, out, m } = self;
        let Acts { xq, xd, xsum } = x;
        let k = q.cols();
        let nb = k / BLOCK;
        let bb = F::BYTES;
        // Blocks per dot group, whole dot groups, whole scale groups.
        let gb = S::N / 4;
        let (dot_groups, scale_groups) = (nb / gb, nb / S::N);
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
        // tiles' blocks; a hint: never faults, even past the end), one cache
        // line at a time.
        let ahead = q.qs().as_ptr().wrapping_add(j * nb * bb + PREFETCH_BYTES);
        let group_bytes = gb * bb;
        let mut acc = [[s.zero(); MT]; NT];
        // One dot group at block `blk` with the scale products `d(r, i)`.
        // SAFETY (the loads): the group's blocks of weight row `r` are inside
        // `qs`, its values of row `i` of x inside `xq` (asserted above).
        macro_rules! dot_group {
            ($blk:expr, |$r:ident, $i:ident| $d:expr) => {{
                let blk = $blk;
                // Loops, not `array::from_fn`: a closure has no target
                // features, so the intrinsics would not inline into it.
                let mut w = [unsafe { F::load(s, qs.as_ptr().add(blk * bb)) }; NT];
                for r in 1..NT {
                    w[r] = unsafe { F::load(s, qs.as_ptr().add((r * nb + blk) * bb)) };
                }
                for r in 0..NT {
                    let at = (r * nb + blk) * bb;
                    for line in (0..group_bytes).step_by(64) {
                        if group_bytes >= 64 || (at + line) % 64 == 0 {
                            s.prefetch(ahead.wrapping_add(at + line));
                        }
                    }
                }
                for $i in 0..MT {
                    let xv = unsafe {
                        let xp = xq.as_ptr().add($i * k + blk * BLOCK);
                        [s.load_q(xp), s.load_q(xp.add(4 * S::N))]
                    };
                    for $r in 0..NT {
                        acc[$r][$i] = s.fma(F::dot(s, w[$r], xv), $d, acc[$r][$i]);
                    }
                }
            }};
        }
        // Groups of N blocks (4 dot groups): N weight scales widen at once,
        // times N x scales, and each dot group takes its scales from that
        // product with one permute ([`Lanes::group_lanes`]) per weight row
        // and row of x.
        // The values' offset (`w = d · (v - offset)`) is taken off per
        // scale group: `offset · d_w · (d_x · Σ x)` per block, lane by lane
        // into the accumulators (their lanes are summed at the end).
        let offset = F::offset::<S>();
        let neg_offset = s.splat(-offset);
        for g in 0..scale_groups {
            let b0 = g * S::N;
            let mut sc = [[s.zero(); MT]; NT];
            // SAFETY: blocks `b0..b0 + N` of weight row `r` are inside
            // `scales`, of row `i` of x inside `xd` and `xsum` (asserted
            // above).
            let mut ws = [unsafe { s.load_f16(scales.as_ptr().add(b0)) }; NT];
            for r in 1..NT {
                ws[r] = unsafe { s.load_f16(scales.as_ptr().add(r * nb + b0)) };
            }
            for i in 0..MT {
                let xs = unsafe { s.load(xd.as_ptr().add(i * nb + b0)) };
                for r in 0..NT {
                    sc[r][i] = s.mul(ws[r], xs);
                }
                if offset != 0.0 {
                    let sums = unsafe { s.load(xsum.as_ptr().add(i * nb + b0)) };
                    let off = s.mul(sums, neg_offset);
                    for r in 0..NT {
                        acc[r][i] = s.fma(ws[r], off, acc[r][i]);
                    }
                }
            }
            for dg in 0..4 {
                dot_group!(b0 + dg * gb, |r, i| s.group_lanes(sc[r][i], dg));
            }
        }
        // The dot groups after the last whole scale group: their scale
        // products lane by lane.
        for dg in scale_groups * 4..dot_groups {
            let b0 = dg * gb;
            dot_group!(b0, |r, i| {
                let mut lanes = [0f32; 16];
                for (l, v) in lanes[..S::N].iter_mut().enumerate() {
                    let b = b0 + l / 4;
                    *v = scales[r * nb + b].to_f32() * xd[i * nb + b];
                }
                // SAFETY: `lanes` holds 16 >= N values.
                unsafe { s.load(lanes.as_ptr()) }
            });
        }
        // The blocks after the last whole dot group (fewer than N / 4), in
        // plain integer arithmetic on the values the vectors would hold.
        let mut tail = [[0f32; MT]; NT];
        for blk in dot_groups * gb..nb {
            for r in 0..NT {
                let w = &qs[(r * nb + blk) * bb..][..bb];
                for i in 0..MT {
                    let xb = &xq[i * k + blk * BLOCK..][..BLOCK];
                    let dot: i32 = (0..BLOCK)
                        .map(|t| F::value::<S>(w, t) * i32::from(xb[t]))
                        .sum();
                    tail[r][i] += scales[r * nb + blk].to_f32() * xd[i * nb + blk] * dot as f32;
                }
            }
        }
        for r in 0..NT {
            for i in 0..MT {
                let mut y = s.reduce_sum(acc[r][i]) + tail[r][i];
                if offset != 0.0 {
                    // The offset of the blocks after the whole scale groups.
                    for b in scale_groups * S::N..nb {
                        y -= offset * scales[r * nb + b].to_f32() * xsum[i * nb + b];
                    }
                }
                out[r * m + i] = y;
            }
        }
    }
}

/// A dot group of weight blocks in registers and its dot product with x.
trait Unpack {
    /// Bytes a block's values take ([`QuantFormat::block_bytes`]).
    const BYTES: usize;
    /// What every value in registers is offset by (`w = d · (v - offset)`).
    fn offset<S: Lanes>() -> f32;
    /// The dot group's `N / 4` blocks.
    /// # Safety
    /// `p` must address `N / 4` whole blocks.
    unsafe fn load<S: Lanes>(s: S, p: *const u8) -> [S::Q; 2];
    /// `Σ v·x` per block, four lanes each.
    fn dot<S: Lanes>(s: S, w: [S::Q; 2], x: [S::Q; 2]) -> S::V;
    /// Value `t` of the block `b` as the vectors hold it.
    fn value<S: Lanes>(b: &[u8], t: usize) -> i32;
}

/// q8_0: the block's 32 int8 values (offset by [`Lanes::Q8_OFFSET`]).
struct Q8;
impl Unpack for Q8 {
    const BYTES: usize = BLOCK;
    #[inline(always)]
    fn offset<S: Lanes>() -> f32 {
        S::Q8_OFFSET
    }
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const u8) -> [S::Q; 2] {
        // SAFETY: N / 4 q8_0 blocks are 8·N bytes.
        unsafe { s.load_q8(p.cast()) }
    }
    #[inline(always)]
    fn dot<S: Lanes>(s: S, w: [S::Q; 2], x: [S::Q; 2]) -> S::V {
        s.dot_q8(w, x)
    }
    #[inline(always)]
    fn value<S: Lanes>(b: &[u8], t: usize) -> i32 {
        i32::from(b[t] as i8) + S::Q8_OFFSET as i32
    }
}

/// q4_0: the block's 32 4-bit values `v`, the weights `d · (v - 8)` (the
/// offset applied once per row, not per value).
struct Q4;
impl Unpack for Q4 {
    const BYTES: usize = BLOCK / 2;
    #[inline(always)]
    fn offset<S: Lanes>() -> f32 {
        8.0
    }
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const u8) -> [S::Q; 2] {
        // SAFETY: N / 4 q4_0 blocks are 4·N bytes.
        unsafe { s.load_q4(p) }
    }
    #[inline(always)]
    fn dot<S: Lanes>(s: S, w: [S::Q; 2], x: [S::Q; 2]) -> S::V {
        s.dot_q4(w, x)
    }
    #[inline(always)]
    fn value<S: Lanes>(b: &[u8], t: usize) -> i32 {
        i32::from(if t < 16 { b[t] & 15 } else { b[t - 16] >> 4 })
    }
}

#[cfg(test)]
mod tests {
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
        let (q, d, sums) = quantize_rows(Level::Scalar, &x, 64);
        // The same values at every level the compiler vectorises for.
        let wide: Vec<f32> = (0..16 * 2048)
            .map(|i| ((i * 7919) % 2001) as f32 / 97.0 - 10.0)
            .collect();
        let plain = quantize_rows(Level::Scalar, &wide, 2048);
        for &level in Level::available() {
            assert_eq!(quantize_rows(level, &wide, 2048), plain, "{level}");
        }
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

    /// Per block of a dot group: `Σ (v + offset)·x` (q8_0, the level's
    /// offset), `Σ u·x` (q4_0), then `group_lanes` of lanes `100 + l` for
    /// each of the four groups, then the offset and blocks per group.
    struct GroupDots<'a>(&'a [i8], &'a [u8], &'a [i8]);
    impl Kernel for GroupDots<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) -> Vec<f32> {
            let gb = S::N / 4;
            let mut xs = vec![0i8; gb * 32];
            simd::split_groups(&self.2[..gb * 32], &mut xs);
            let mut lanes = [0f32; 16];
            let mut out = Vec::new();
            // SAFETY: 128, 64 and 128 bytes hold a dot group at every level;
            // `lanes` holds 16 >= N values.
            unsafe {
                let x = [s.load_q(xs.as_ptr()), s.load_q(xs.as_ptr().add(4 * S::N))];
                for v in [
                    s.dot_q8(s.load_q8(self.0.as_ptr()), x),
                    s.dot_q4(s.load_q4(self.1.as_ptr()), x),
                ] {
                    s.store(lanes.as_mut_ptr(), v);
                    out.extend((0..gb).map(|b| lanes[4 * b..4 * b + 4].iter().sum::<f32>()));
                }
                let v: Vec<f32> = (0..S::N).map(|l| 100.0 + l as f32).collect();
                for g in 0..4 {
                    s.store(lanes.as_mut_ptr(), s.group_lanes(s.load(v.as_ptr()), g));
                    out.extend_from_slice(&lanes[..S::N]);
                }
            }
            out.extend([S::Q8_OFFSET, gb as f32]);
            out
        }
    }

    #[test]
    fn dot_groups_are_exact_at_every_level() {
        // Four blocks (the largest dot group); extremes included: -128
        // weights (hostile checkpoints), ±127 x.
        let w: Vec<i8> = (0..128).map(|t| [-128, 127, -1, 0, 5, 99][t % 6]).collect();
        let x: Vec<i8> = (0..128)
            .map(|t| [127, -127, 3, -64, 11][t % 5] / (1 + t as i8 / 32))
            .collect();
        let w4: Vec<u8> = (0..64)
            .map(|t| ((t * 7) % 16) as u8 | ((((t * 5 + 3) % 16) as u8) << 4))
            .collect();
        let nibble = |b: usize, t: usize| -> i32 {
            let byte = w4[b * 16 + t % 16];
            i32::from(if t < 16 { byte & 15 } else { byte >> 4 })
        };
        for &level in Level::available() {
            let got = simd::dispatch_at(level, GroupDots(&w, &w4, &x));
            let (offset, gb) = (got[got.len() - 2], got[got.len() - 1] as usize);
            assert_eq!(gb, level.lanes() / 4, "{level}");
            let mut want = Vec::new();
            for b in 0..gb {
                let xb = &x[b * 32..][..32];
                want.push(
                    (0..32)
                        .map(|t| (i32::from(w[b * 32 + t]) + offset as i32) * i32::from(xb[t]))
                        .sum::<i32>() as f32,
                );
            }
            for b in 0..gb {
                let xb = &x[b * 32..][..32];
                want.push(
                    (0..32)
                        .map(|t| nibble(b, t) * i32::from(xb[t]))
                        .sum::<i32>() as f32,
                );
            }
            for g in 0..4 {
                want.extend((0..4 * gb).map(|l| (100 + g * gb + l / 4) as f32));
            }
            assert_eq!(got[..got.len() - 2], want[..], "{level}");
            assert!([0.0, 128.0].contains(&offset), "{level}");
        }
    }

    #[test]
    fn matches_the_dequantized_product_at_every_level_and_row_count() {
        // k = 96: three blocks (a scale group shorter than N at every level);
        // k = 544: 17 blocks (whole groups of 8 or 16 and an odd block);
        // k = 704: 22 (groups, then single pairs); n = 37 leaves partial
        // tasks and single-row tiles.
        for (n, k) in [(37, 96), (21, 544), (13, 704), (9, 1600), (6, 2048)] {
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
