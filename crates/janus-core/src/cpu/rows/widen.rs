//! Block kernels with f32 rows of `x`: f32 weights, or f16/bf16 weights widened to
//! f32 in registers (AVX-512F).

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::super::Elem;

/// One kernel per weight dtype; `$load` turns 16 weights at `$p` into f32 lanes.
macro_rules! block_kernel {
    ($name:ident, $tile:ident, $E:ty, |$p:ident| $load:expr) => {
        /// `out[j * m + i] = x[i] · w[j]` for `MT` rows of `x` and `NT` weight rows.
        #[target_feature(enable = "avx512f")]
        unsafe fn $tile<const MT: usize, const NT: usize>(
            x: *const f32,
            k: usize,
            w: *const $E,
            out: &mut [f32],
            m: usize,
        ) {
            let mut acc = [[_mm512_setzero_ps(); MT]; NT];
            let kv = k / 16 * 16;
            let mut kk = 0;
            while kk < kv {
                let mut wv = [_mm512_setzero_ps(); NT];
                for (j, wv) in wv.iter_mut().enumerate() {
                    // SAFETY: rows of `k` weights, `kk + 16 <= k`.
                    *wv = unsafe {
                        let $p = w.add(j * k + kk);
                        $load
                    };
                    // The next tile's rows, fetched while this one computes (a
                    // hint: never faults, even past the end).
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((NT + j) * k + kk).cast());
                }
                for i in 0..MT {
                    // SAFETY: `MT` rows of `k` values, `kk + 16 <= k`.
                    let xv = unsafe { _mm512_loadu_ps(x.add(i * k + kk)) };
                    for j in 0..NT {
                        acc[j][i] = _mm512_fmadd_ps(wv[j], xv, acc[j][i]);
                    }
                }
                kk += 16;
            }
            for j in 0..NT {
                for i in 0..MT {
                    let mut s = _mm512_reduce_add_ps(acc[j][i]);
                    for t in kv..k {
                        // SAFETY: in bounds as above.
                        s += unsafe { (*w.add(j * k + t)).f32() * *x.add(i * k + t) };
                    }
                    out[j * m + i] = s;
                }
            }
        }

        /// `yt[j * m + i] = x[i] · w[j]` for the weight rows `w` holds.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn $name(x: &[f32], m: usize, k: usize, w: &[$E], yt: &mut [f32]) {
            // SAFETY: forwarded from the caller.
            unsafe { super::tiles!($tile, 8, x, m, k, w, yt) }
        }
    };
}

block_kernel!(block_f32, tile_f32, f32, |p| _mm512_loadu_ps(p));
block_kernel!(block_f16, tile_f16, f16, |p| _mm512_cvtph_ps(
    _mm256_loadu_si256(p as *const __m256i)
));
block_kernel!(block_bf16, tile_bf16, bf16, |p| _mm512_castsi512_ps(
    _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
        p as *const __m256i
    )))
));
