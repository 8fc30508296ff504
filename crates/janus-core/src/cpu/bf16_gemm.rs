//! Many bf16 rows (a bf16 model's prompt) times bf16 weights on CPUs with
//! AVX512-BF16. The other dtypes' many-row path widens the weight and runs
//! gemm's f32 kernel, 16 multiply-adds per 512-bit instruction; `vdpbf16ps`
//! does 32, and the product of two bf16 values is exact in f32, so the result
//! differs from the widened product in summation order (and in `vdpbf16ps`
//! flushing denormals to zero, far below any activation's scale).
//!
//! The weight is packed a group of 64 rows at a time: for each pair of inputs
//! `2p, 2p + 1`, the 64 rows' two values side by side, so four 512-bit loads
//! hold one pair of 64 columns. A tile of up to 6 rows of `x` by one group
//! broadcasts each row's pair (two consecutive bf16 values of the row, read in
//! place) against them into 24 accumulators. Of the tiles with 24
//! accumulators, 6 x 64 was the fastest on a Zen 4 (one process, best of 5,
//! 600 rows times 2048 x 5632, 5632 x 2048 and 2048 x 2048 weights: 32.0,
//! 32.0 and 11.4 ms; 8 x 48 32.4, 34.5, 12.3 ms; 12 x 32 37.0, 33.4, 13.4 ms;
//! 4 x 96 32.6, 36.0, 13.0 ms): a broadcast pair feeds four instructions.

use std::arch::x86_64::*;
use std::ops::Range;

use half::bf16;

/// Weight rows (output columns) per packed group: four vectors of 16 sums.
const GROUP: usize = 64;
/// Rows of `x` per tile: 6 x 4 accumulators and 4 weight vectors of the 32
/// vector registers.
const TILE_ROWS: usize = 6;

/// Packs weight rows `js` (at most [`GROUP`]) of `w` for [`tile`] into `buf`: pair
/// by pair of inputs, the rows' values `2p` (low half) and `2p + 1` as one
/// `u32` each, [`GROUP`] to a pair (missing rows zero). `w` is `[n, k]`, or `[k, n]`
/// when `in_out`; `k` is even.
#[target_feature(enable = "avx512f")]
fn pack_group(w: &[bf16], [k, n]: [usize; 2], in_out: bool, js: Range<usize>, buf: &mut Vec<u32>) {
    debug_assert!(k.is_multiple_of(2) && w.len() >= n * k && js.end <= n && js.len() <= GROUP);
    let (pairs, c, j0) = (k / 2, js.len(), js.start);
    let pair = |lo: bf16, hi: bf16| u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16);
    // Every value is written below but a short group's missing rows.
    buf.resize(pairs * GROUP, 0);
    if c < GROUP {
        buf.fill(0);
    }
    if in_out {
        // Input rows `2p` and `2p + 1` hold the group's columns side by side.
        for (p, out) in buf.chunks_exact_mut(GROUP).enumerate() {
            let (lo, hi) = (&w[2 * p * n + j0..][..c], &w[(2 * p + 1) * n + j0..][..c]);
            for ((o, l), h) in out.iter_mut().zip(lo).zip(hi) {
                *o = pair(*l, *h);
            }
        }
        return;
    }
    // A `u32` transpose (a row's pair is one `u32` already), in blocks of 16
    // rows by 16 pairs: 16 loads, 64 shuffles, 16 stores.
    const BLOCK: usize = 16;
    for p0 in (0..pairs).step_by(BLOCK) {
        let len = BLOCK.min(pairs - p0);
        let out = &mut buf[p0 * GROUP..(p0 + len) * GROUP];
        for l0 in (0..c).step_by(BLOCK) {
            let rows = BLOCK.min(c - l0);
            let row = |lane: usize| &w[(j0 + l0 + lane) * k + 2 * p0..][..2 * len];
            if rows == BLOCK && len == BLOCK {
                // SAFETY: 16 rows of 32 bf16 values in, 16 `u32` values of
                // 16 pairs out.
                let t = transpose16(std::array::from_fn(|lane| unsafe {
                    _mm512_loadu_si512(row(lane).as_ptr().cast())
                }));
                for (p, v) in t.iter().enumerate() {
                    // SAFETY: lanes `l0..l0 + 16` of pair `p` of the block.
                    unsafe { _mm512_storeu_si512(out[p * GROUP + l0..].as_mut_ptr().cast(), *v) };
                }
                continue;
            }
            for lane in 0..rows {
                for (p, v) in row(lane).chunks_exact(2).enumerate() {
                    out[p * GROUP + l0 + lane] = pair(v[0], v[1]);
                }
            }
        }
    }
}

/// The transpose of a 16 x 16 matrix of `u32`, a row per vector.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    // Within each 128-bit block (4 columns): rows 2i and 2i + 1 interleaved,
    // then rows 4i..4i + 4 of one column in each block.
    let t: [__m512i; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    // u[4i + c]: block b holds rows 4i..4i + 4 of column 4b + c.
    let u: [__m512i; 16] = std::array::from_fn(|i| {
        let (q, c) = (i / 4, i % 4);
        let (a, b) = (t[4 * q + c / 2], t[4 * q + 2 + c / 2]);
        if c % 2 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    // Column 4b + c gathers block b of u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        let s0 = _mm512_shuffle_i32x4::<0x88>(u[c], u[4 + c]);
        let s1 = _mm512_shuffle_i32x4::<0xDD>(u[c], u[4 + c]);
        let s2 = _mm512_shuffle_i32x4::<0x88>(u[8 + c], u[12 + c]);
        let s3 = _mm512_shuffle_i32x4::<0xDD>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_i32x4::<0x88>(s0, s2);
        out[8 + c] = _mm512_shuffle_i32x4::<0xDD>(s0, s2);
        out[4 + c] = _mm512_shuffle_i32x4::<0x88>(s1, s3);
        out[12 + c] = _mm512_shuffle_i32x4::<0xDD>(s1, s3);
    }
    out
}

/// `dst[i * ldd + c] = x[i] · w[js.start + c]` for the `rows` rows of `x`
/// (`[rows, k]`) and the weight rows `js` of `w` (`[n, k]`, or `[k, n]` when
/// `in_out`), `buf` holding one packed group of [`GROUP`] weight rows at a
/// time.
///
/// # Safety
/// The CPU has AVX512F and AVX512-BF16; `x` holds `rows * k` values, `k` is
/// even, `w` holds `n * k` values, `js.end <= n`, and `dst` is valid for
/// writes of `rows` rows of `js.len()` values `ldd` apart.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    x: &[bf16],
    rows: usize,
    w: &[bf16],
    [k, n]: [usize; 2],
    in_out: bool,
    js: Range<usize>,
    buf: &mut Vec<u32>,
    dst: *mut f32,
    ldd: usize,
) {
    debug_assert!(x.len() >= rows * k);
    for g in 0..js.len().div_ceil(GROUP) {
        let j0 = js.start + g * GROUP;
        let c = (js.end - j0).min(GROUP);
        // Packed just before use, the group (256-704 KB at the LLM's widths)
        // is in L2 while every row of `x` passes it.
        pack_group(w, [k, n], in_out, j0..j0 + c, buf);
        let wp = buf.as_ptr();
        let mut i = 0;
        while i < rows {
            let mt = (rows - i).min(TILE_ROWS);
            // SAFETY: rows `i..i + mt` of `x` and of `dst`, columns
            // `g * GROUP..g * GROUP + c` of `dst`, the packed group.
            unsafe {
                let (xp, out) = (x.as_ptr().add(i * k), dst.add(i * ldd + g * GROUP));
                match mt {
                    6 => tile::<6>(xp, k, wp, out, ldd, c),
                    5 => tile::<5>(xp, k, wp, out, ldd, c),
                    4 => tile::<4>(xp, k, wp, out, ldd, c),
                    3 => tile::<3>(xp, k, wp, out, ldd, c),
                    2 => tile::<2>(xp, k, wp, out, ldd, c),
                    _ => tile::<1>(xp, k, wp, out, ldd, c),
                }
            }
            i += mt;
        }
    }
}

/// `MT` rows of `x` times one packed group of [`GROUP`] weight rows, the first `c`
/// columns stored.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const MT: usize>(
    x: *const bf16,
    k: usize,
    w: *const u32,
    out: *mut f32,
    ldd: usize,
    c: usize,
) {
    const NV: usize = GROUP / 16;
    let mut acc = [[_mm512_setzero_ps(); NV]; MT];
    for p in 0..k / 2 {
        // SAFETY: pair `p` of the group: `GROUP` `u32` values.
        let wv: [__m512bh; NV] = std::array::from_fn(|v| unsafe {
            as_bf16(_mm512_loadu_si512(w.add(p * GROUP + 16 * v).cast()))
        });
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: values `2p, 2p + 1` of row `i`, `2p + 2 <= k`.
            let pair = unsafe { x.add(i * k + 2 * p).cast::<i32>().read_unaligned() };
            let a = as_bf16(_mm512_set1_epi32(pair));
            for (acc, w) in acc.iter_mut().zip(&wv) {
                *acc = _mm512_dpbf16_ps(*acc, a, *w);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (v, acc) in acc.iter().enumerate() {
            if c > 16 * v {
                let mask = ((1u32 << (c - 16 * v).min(16)) - 1) as __mmask16;
                // SAFETY: the first `c` columns of row `i` of `out`.
                unsafe { _mm512_mask_storeu_ps(out.add(i * ldd + 16 * v), mask, *acc) };
            }
        }
    }
}

/// 512 bits as 32 bf16 values.
#[inline(always)]
fn as_bf16(v: __m512i) -> __m512bh {
    // SAFETY: two 512-bit vector types; every bit pattern is a bf16 vector.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}
