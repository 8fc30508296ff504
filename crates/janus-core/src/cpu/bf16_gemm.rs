//! Many bf16 rows (a bf16 model's prompt) times bf16 weights on CPUs with
//! AVX512-BF16. The other dtypes' many-row path widens the weight and runs
//! gemm's f32 kernel, 16 multiply-adds per 512-bit instruction; `vdpbf16ps`
//! does 32, and the product of two bf16 values is exact in f32, so the result
//! differs from the widened product only in summation order.
//!
//! A task packs its weight rows once ([`pack`]): for each group of 32 rows and
//! each pair of inputs `2p, 2p + 1`, the 32 rows' two values side by side, so
//! two 512-bit loads hold one pair of 32 columns. A tile of up to 12 rows of `x`
//! by one group broadcasts each row's pair (two consecutive bf16 values of the
//! row, read in place) against them into 24 accumulators. Groups are the outer
//! loop, so a group (128-352 KB at the LLM's widths) stays in L2 while every
//! row of `x` passes it.

use std::arch::x86_64::*;
use std::ops::Range;

use half::bf16;

/// Weight rows (output columns) per packed group: two vectors of 16 sums.
const GROUP: usize = 32;
/// Rows of `x` per tile: 12 x 2 accumulators and 2 weight vectors of the 32
/// vector registers.
const TILE_ROWS: usize = 12;

/// Packs weight rows `js` of `w` for [`product`] into `buf`: group by group
/// of 32 rows (the last padded with zeros), pair by pair of inputs, the rows'
/// values `2p` (low half) and `2p + 1` as one `u32` each. `w` is `[n, k]`, or
/// `[k, n]` when `in_out`; `k` is even.
pub(crate) fn pack(
    w: &[bf16],
    [k, n]: [usize; 2],
    in_out: bool,
    js: Range<usize>,
    buf: &mut Vec<u32>,
) {
    debug_assert!(k.is_multiple_of(2) && w.len() >= n * k && js.end <= n);
    let pairs = k / 2;
    let pair = |lo: bf16, hi: bf16| u32::from(lo.to_bits()) | (u32::from(hi.to_bits()) << 16);
    buf.clear();
    buf.resize(js.len().div_ceil(GROUP) * pairs * GROUP, 0);
    for (g, group) in buf.chunks_exact_mut(pairs * GROUP).enumerate() {
        let j0 = js.start + g * GROUP;
        let c = (js.end - j0).min(GROUP);
        if in_out {
            // Input rows `2p` and `2p + 1` hold the group's columns side by side.
            for (p, out) in group.chunks_exact_mut(GROUP).enumerate() {
                let (lo, hi) = (&w[2 * p * n + j0..][..c], &w[(2 * p + 1) * n + j0..][..c]);
                for ((o, l), h) in out.iter_mut().zip(lo).zip(hi) {
                    *o = pair(*l, *h);
                }
            }
        } else {
            for lane in 0..c {
                let row = &w[(j0 + lane) * k..][..k];
                for (p, v) in row.chunks_exact(2).enumerate() {
                    group[p * GROUP + lane] = pair(v[0], v[1]);
                }
            }
        }
    }
}

/// `dst[i * ldd + c] = x[i] · w[c]` for the `rows` rows of `x` (`[rows, k]`)
/// and the `cols` weight rows [`pack`] put into `packed`.
///
/// # Safety
/// The CPU has AVX512F and AVX512-BF16; `x` holds `rows * k` values, `k` is
/// even, `packed` is [`pack`]'s output for `cols` rows of `k`, and `dst` is
/// valid for writes of `rows` rows of `cols` values `ldd` apart.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn product(
    x: &[bf16],
    rows: usize,
    k: usize,
    packed: &[u32],
    cols: usize,
    dst: *mut f32,
    ldd: usize,
) {
    let pairs = k / 2;
    debug_assert!(x.len() >= rows * k && packed.len() >= cols.div_ceil(GROUP) * pairs * GROUP);
    for g in 0..cols.div_ceil(GROUP) {
        let w = packed[g * pairs * GROUP..].as_ptr();
        let c = (cols - g * GROUP).min(GROUP);
        let mut i = 0;
        while i < rows {
            let mt = (rows - i).min(TILE_ROWS);
            // SAFETY: rows `i..i + mt` of `x` and of `dst`, columns
            // `g * 32..g * 32 + c` of `dst`, group `g` of `packed`.
            unsafe {
                let (xp, out) = (x.as_ptr().add(i * k), dst.add(i * ldd + g * GROUP));
                match mt {
                    12 => tile::<12>(xp, k, w, out, ldd, c),
                    11 => tile::<11>(xp, k, w, out, ldd, c),
                    10 => tile::<10>(xp, k, w, out, ldd, c),
                    9 => tile::<9>(xp, k, w, out, ldd, c),
                    8 => tile::<8>(xp, k, w, out, ldd, c),
                    7 => tile::<7>(xp, k, w, out, ldd, c),
                    6 => tile::<6>(xp, k, w, out, ldd, c),
                    5 => tile::<5>(xp, k, w, out, ldd, c),
                    4 => tile::<4>(xp, k, w, out, ldd, c),
                    3 => tile::<3>(xp, k, w, out, ldd, c),
                    2 => tile::<2>(xp, k, w, out, ldd, c),
                    _ => tile::<1>(xp, k, w, out, ldd, c),
                }
            }
            i += mt;
        }
    }
}

/// `MT` rows of `x` times one packed group of 32 weight rows, the first `c`
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
    let mut acc = [[_mm512_setzero_ps(); 2]; MT];
    for p in 0..k / 2 {
        // SAFETY: pair `p` of the group: 32 `u32` values.
        let (w0, w1) = unsafe {
            (
                as_bf16(_mm512_loadu_si512(w.add(p * GROUP).cast())),
                as_bf16(_mm512_loadu_si512(w.add(p * GROUP + 16).cast())),
            )
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: values `2p, 2p + 1` of row `i`, `2p + 2 <= k`.
            let pair = unsafe { x.add(i * k + 2 * p).cast::<i32>().read_unaligned() };
            let a = as_bf16(_mm512_set1_epi32(pair));
            acc[0] = _mm512_dpbf16_ps(acc[0], a, w0);
            acc[1] = _mm512_dpbf16_ps(acc[1], a, w1);
        }
    }
    let lanes = |n: usize| -> __mmask16 { ((1u32 << n.min(16)) - 1) as __mmask16 };
    let (m0, m1) = (lanes(c), lanes(c.saturating_sub(16)));
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: the first `c` columns of row `i` of `out`.
        unsafe {
            _mm512_mask_storeu_ps(out.add(i * ldd), m0, acc[0]);
            _mm512_mask_storeu_ps(out.add(i * ldd + 16), m1, acc[1]);
        }
    }
}

/// 512 bits as 32 bf16 values.
#[inline(always)]
fn as_bf16(v: __m512i) -> __m512bh {
    // SAFETY: two 512-bit vector types; every bit pattern is a bf16 vector.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}
