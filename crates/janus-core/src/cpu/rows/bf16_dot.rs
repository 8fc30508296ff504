//! Block kernel for bf16 rows of `x` and bf16 weights on CPUs with AVX512-BF16:
//! `vdpbf16ps` multiplies 32 bf16 pairs per instruction into f32 sums, twice the
//! work of widening to f32 and no conversion instructions. The products of two
//! bf16 values are exact in f32, so the result differs from the widening kernel
//! only in summation order.

use std::arch::x86_64::*;

use half::bf16;

/// Whether the CPU has `vdpbf16ps`.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// `out[j * m + i] = x[i] · w[j]` for `MT` rows of `x` and `NT` weight rows.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const MT: usize, const NT: usize>(
    x: *const bf16,
    k: usize,
    w: *const bf16,
    out: &mut [f32],
    m: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); NT]; MT];
    let kv = k / 32 * 32;
    let mut kk = 0;
    while kk < kv {
        let mut wv = [_mm512_setzero_si512(); NT];
        for (j, wv) in wv.iter_mut().enumerate() {
            // SAFETY: rows of `k` weights, `kk + 32 <= k`.
            *wv = unsafe { _mm512_loadu_si512(w.add(j * k + kk).cast()) };
            // The next tile's rows, fetched from memory into L2 while this one
            // computes (a hint: never faults, even past the end; as
            // `Lanes::prefetch_l2`).
            _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add((NT + j) * k + kk).cast());
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `MT` rows of `k` values, `kk + 32 <= k`.
            let xv = unsafe { _mm512_loadu_si512(x.add(i * k + kk).cast()) };
            // SAFETY: both are 512-bit vectors of 32 bf16 values.
            let xv: __m512bh = unsafe { std::mem::transmute(xv) };
            for (a, wj) in acc.iter_mut().zip(&wv) {
                // SAFETY: as above.
                let wj: __m512bh = unsafe { std::mem::transmute(*wj) };
                *a = _mm512_dpbf16_ps(*a, wj, xv);
            }
        }
        kk += 32;
    }
    for (i, acc) in acc.iter().enumerate() {
        for (j, a) in acc.iter().enumerate() {
            let mut s = _mm512_reduce_add_ps(*a);
            for t in kv..k {
                // SAFETY: in bounds as above.
                s += unsafe { (*w.add(j * k + t)).to_f32() * (*x.add(i * k + t)).to_f32() };
            }
            out[j * m + i] = s;
        }
    }
}

/// `yt[j * m + i] = x[i] · w[j]` for the weight rows `w` holds.
#[target_feature(enable = "avx512f,avx512bf16")]
pub unsafe fn block(x: &[bf16], m: usize, k: usize, w: &[bf16], yt: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe { super::tiles!(tile[](), 4, 32, x, m, k, w, yt) }
}
