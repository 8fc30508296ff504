//! The x86-64 levels: AVX2 (8 lanes) and AVX-512 (16 lanes), both with FMA and
//! F16C. The `run_*` functions carry the target features, and every method is
//! `#[inline(always)]`, so a generic kernel called from them compiles to these
//! instructions.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{Kernel, Lanes};

/// AVX2 + FMA + F16C lanes, with AVX-VNNI dot products where `VNNI`; only
/// made by [`run_avx2`] and [`run_avx_vnni`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2<const VNNI: bool>(());

/// AVX-512 lanes, with AVX512-VNNI dot products where `VNNI`; only made by
/// [`run_avx512`] and [`run_avx512_vnni`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512<const VNNI: bool>(());

/// Runs `k` with AVX2.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run(Avx2::<false>(()))
}

/// Runs `k` with AVX2 and AVX-VNNI.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
pub(crate) unsafe fn run_avx_vnni<K: Kernel>(k: K) -> K::Output {
    k.run(Avx2::<true>(()))
}

/// Runs `k` with AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(crate) unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run(Avx512::<false>(()))
}

/// Runs `k` with AVX-512 and AVX512-VNNI.
///
/// # Safety
/// The CPU must have AVX-512F/BW/VL/VNNI, AVX2, FMA and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) unsafe fn run_avx512_vnni<K: Kernel>(k: K) -> K::Output {
    k.run(Avx512::<true>(()))
}

/// `acc` plus the int32 sums of four byte products `w · x` per lane (`w`
/// unsigned, `x` signed): one `vpdpbusd` with `VNNI` (exact for any bytes),
/// else `maddubs` (whose pair sums must fit 16 bits: the callers' values do),
/// `madd` and an add.
///
/// # Safety
/// AVX2; AVX-VNNI if `VNNI`.
#[inline(always)]
unsafe fn dpbusd<const VNNI: bool>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_avx_epi32(acc, w, x)
        } else {
            let p = _mm256_maddubs_epi16(w, x);
            _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
}

/// [`dpbusd`] at 512 bits (AVX512-VNNI where `VNNI`).
///
/// # Safety
/// AVX-512BW; AVX512-VNNI if `VNNI`.
#[inline(always)]
unsafe fn dpbusd512<const VNNI: bool>(acc: __m512i, w: __m512i, x: __m512i) -> __m512i {
    unsafe {
        if VNNI {
            _mm512_dpbusd_epi32(acc, w, x)
        } else {
            let p = _mm512_maddubs_epi16(w, x);
            _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_set1_epi16(1)))
        }
    }
}

/// Bytes `4s..4s + 4` of `x` in every 32-bit lane.
///
/// # Safety
/// AVX2; `x + 4s..x + 4s + 4` readable.
#[inline(always)]
unsafe fn splat4(x: *const i8, s: usize) -> __m256i {
    unsafe { _mm256_set1_epi32(x.add(4 * s).cast::<i32>().read_unaligned()) }
}

/// [`splat4`] at 512 bits.
///
/// # Safety
/// AVX-512F; `x + 4s..x + 4s + 4` readable.
#[inline(always)]
unsafe fn splat4_512(x: *const i8, s: usize) -> __m512i {
    unsafe { _mm512_set1_epi32(x.add(4 * s).cast::<i32>().read_unaligned()) }
}

/// A 4x4 transpose within each 128-bit half: lane `i` of the half of
/// output `j` is lane `j` of that half of input `i`.
///
/// # Safety
/// AVX.
#[inline(always)]
unsafe fn transpose4(a: __m256, b: __m256, c: __m256, d: __m256) -> [__m256; 4] {
    unsafe {
        let (ab0, ab1) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        let (cd0, cd1) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
        [
            _mm256_shuffle_ps::<0x44>(ab0, cd0),
            _mm256_shuffle_ps::<0xEE>(ab0, cd0),
            _mm256_shuffle_ps::<0x44>(ab1, cd1),
            _mm256_shuffle_ps::<0xEE>(ab1, cd1),
        ]
    }
}

/// [`transpose4`] within each 128-bit lane of 512-bit vectors.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn transpose4_512(a: __m512, b: __m512, c: __m512, d: __m512) -> [__m512; 4] {
    unsafe {
        let (ab0, ab1) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (cd0, cd1) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        [
            _mm512_shuffle_ps::<0x44>(ab0, cd0),
            _mm512_shuffle_ps::<0xEE>(ab0, cd0),
            _mm512_shuffle_ps::<0x44>(ab1, cd1),
            _mm512_shuffle_ps::<0xEE>(ab1, cd1),
        ]
    }
}

/// A 4x4 transpose of 128-bit blocks: block `L` of output `j` is block `j`
/// of input `L`.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn transpose_blocks(r: [__m512; 4]) -> [__m512; 4] {
    unsafe {
        let v0 = _mm512_shuffle_f32x4::<0x44>(r[0], r[1]);
        let v1 = _mm512_shuffle_f32x4::<0xEE>(r[0], r[1]);
        let v2 = _mm512_shuffle_f32x4::<0x44>(r[2], r[3]);
        let v3 = _mm512_shuffle_f32x4::<0xEE>(r[2], r[3]);
        [
            _mm512_shuffle_f32x4::<0x88>(v0, v2),
            _mm512_shuffle_f32x4::<0xDD>(v0, v2),
            _mm512_shuffle_f32x4::<0x88>(v1, v3),
            _mm512_shuffle_f32x4::<0xDD>(v1, v3),
        ]
    }
}

// SAFETY (all `unsafe` blocks below): an `Avx2`/`Avx512` value exists only
// inside `run_avx2`/`run_avx_vnni`/`run_avx512`, which the dispatcher calls
// only on CPUs with those features; pointer reads and writes are the callers'
// contract.

impl<const VNNI: bool> Lanes for Avx2<VNNI> {
    const N: usize = 8;
    const REGS: usize = 16;
    type V = __m256;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load4(self, p: *const f32) -> [__m256; 4] {
        unsafe {
            // Groups of four (g0..g7, 128 bits each): halves [g0 g4], [g1 g5],
            // [g2 g6], [g3 g7], then a 4x4 transpose within each half.
            // (No closures: they would not inherit the target features.)
            let r = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            transpose4(
                _mm256_permute2f128_ps::<0x20>(r[0], r[2]),
                _mm256_permute2f128_ps::<0x31>(r[0], r[2]),
                _mm256_permute2f128_ps::<0x20>(r[1], r[3]),
                _mm256_permute2f128_ps::<0x31>(r[1], r[3]),
            )
        }
    }
    #[inline(always)]
    unsafe fn store4(self, p: *mut f32, v: [__m256; 4]) {
        unsafe {
            let [a, b, c, d] = transpose4(v[0], v[1], v[2], v[3]);
            _mm256_storeu_ps(p, _mm256_permute2f128_ps::<0x20>(a, b));
            _mm256_storeu_ps(p.add(8), _mm256_permute2f128_ps::<0x20>(c, d));
            _mm256_storeu_ps(p.add(16), _mm256_permute2f128_ps::<0x31>(a, b));
            _mm256_storeu_ps(p.add(24), _mm256_permute2f128_ps::<0x31>(c, d));
        }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut f16, v: __m256) {
        unsafe { _mm_storeu_si128(p.cast(), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8, v: __m256) {
        unsafe {
            let i = _mm256_cvtps_epi32(v);
            let w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
            _mm_storel_epi64(p.cast(), _mm_packs_epi16(w, w));
        }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> __m256 {
        unsafe {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast()),
            )))
        }
    }
    // Four bytes per lane: four weights of one weight row (the block
    // kernel puts a weight row in each lane).
    type Q = __m256i;
    #[inline(always)]
    unsafe fn load_q4(self, p: *const u8) -> [__m256i; 2] {
        unsafe {
            let b = _mm256_loadu_si256(p.cast());
            let m = _mm256_set1_epi8(15);
            [
                _mm256_and_si256(b, m),
                _mm256_and_si256(_mm256_srli_epi16::<4>(b), m),
            ]
        }
    }
    #[inline(always)]
    unsafe fn load_q8(self, p: *const i8) -> __m256i {
        unsafe {
            let v = _mm256_loadu_si256(p.cast());
            if VNNI {
                // q + 128 as unsigned bytes: `vpdpbusd` takes unsigned weights.
                _mm256_xor_si256(v, _mm256_set1_epi8(i8::MIN))
            } else {
                v
            }
        }
    }
    const Q8_OFFSET: f32 = if VNNI { 128.0 } else { 0.0 };
    #[inline(always)]
    unsafe fn dot_rows_q4(self, w: &[__m256i; 8], x: *const i8) -> __m256 {
        unsafe {
            if VNNI {
                // Two chains, so consecutive dot products do not wait on each
                // other.
                let (mut a0, mut a1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for s in 0..4 {
                    a0 = dpbusd::<true>(a0, w[2 * s], splat4(x, 2 * s));
                    a1 = dpbusd::<true>(a1, w[2 * s + 1], splat4(x, 2 * s + 1));
                }
                return _mm256_cvtepi32_ps(_mm256_add_epi32(a0, a1));
            }
            // Pair sums of 4-bit values are at most 2 · 15 · 127 = 3810: all
            // eight sub-steps' sums still fit 16 bits.
            let mut p = _mm256_maddubs_epi16(w[0], splat4(x, 0));
            for (s, w) in w.iter().enumerate().skip(1) {
                p = _mm256_add_epi16(p, _mm256_maddubs_epi16(*w, splat4(x, s)));
            }
            _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    unsafe fn dot_rows_q8(self, w: &[__m256i; 8], x: *const i8) -> __m256 {
        unsafe {
            if VNNI {
                return self.dot_rows_q4(w, x);
            }
            // `|w|` times `x` given `w`'s signs (-128 reads as 128 unsigned):
            // pair sums at most 2 · 128 · 127 fit 16 bits.
            let mut acc = _mm256_setzero_si256();
            for (s, w) in w.iter().enumerate() {
                let (ws, xs) = (_mm256_sign_epi8(*w, *w), _mm256_sign_epi8(splat4(x, s), *w));
                acc = dpbusd::<false>(acc, ws, xs);
            }
            _mm256_cvtepi32_ps(acc)
        }
    }
    // Without VNNI, one chunk at a time for every row of x: the
    // accumulators, one chunk and a broadcast fit 16 registers where eight
    // unpacked chunks, the rows' sums and the caller's sums spilled. On a
    // Zen 3 EPYC (5632 x 2048 weights, best of 30, one process) q8_0 four
    // rows 0.79 -> 0.63 ms, sixteen 2.94 -> 2.70 ms; q4_0 unchanged (0.99 /
    // 0.98 ms at eight rows). With VNNI the rows are taken in turn: walked
    // a chunk at a time, `vpdpbusd` would chain on one accumulator per row,
    // where by rows each keeps two chains (unmeasured: no AVX-VNNI CPU here).
    #[inline(always)]
    unsafe fn dot_tile_q4<const MT: usize>(
        self,
        p: *const u8,
        x: *const i8,
        stride: usize,
    ) -> [__m256; MT] {
        unsafe {
            if VNNI {
                return super::tile_q4_by_rows(self, p, x, stride);
            }
            // Pair sums of 4-bit values are at most 2 · 15 · 127 = 3810: all
            // eight steps' sums still fit 16 bits.
            let mut acc = [_mm256_setzero_si256(); MT];
            for h in 0..4 {
                let [lo, hi] = self.load_q4(p.add(32 * h));
                for (i, a) in acc.iter_mut().enumerate() {
                    let xi = x.add(i * stride);
                    let low = _mm256_maddubs_epi16(lo, splat4(xi, h));
                    let high = _mm256_maddubs_epi16(hi, splat4(xi, 4 + h));
                    *a = _mm256_add_epi16(*a, _mm256_add_epi16(low, high));
                }
            }
            let mut out = [_mm256_setzero_ps(); MT];
            for (o, a) in out.iter_mut().zip(acc) {
                *o = _mm256_cvtepi32_ps(_mm256_madd_epi16(a, _mm256_set1_epi16(1)));
            }
            out
        }
    }
    #[inline(always)]
    unsafe fn dot_tile_q8<const MT: usize>(
        self,
        p: *const i8,
        x: *const i8,
        stride: usize,
    ) -> [__m256; MT] {
        unsafe {
            if VNNI {
                return super::tile_q8_by_rows(self, p, x, stride);
            }
            let mut acc = [_mm256_setzero_si256(); MT];
            for h in 0..8 {
                let w = self.load_q8(p.add(32 * h));
                // `|w|` times `x` given `w`'s signs, as in `dot_rows_q8`.
                let ws = _mm256_sign_epi8(w, w);
                for (i, a) in acc.iter_mut().enumerate() {
                    let xs = _mm256_sign_epi8(splat4(x.add(i * stride), h), w);
                    *a = dpbusd::<false>(*a, ws, xs);
                }
            }
            let mut out = [_mm256_setzero_ps(); MT];
            for (o, a) in out.iter_mut().zip(acc) {
                *o = _mm256_cvtepi32_ps(a);
            }
            out
        }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
        unsafe {
            let m = _mm256_set1_ps(-0.0);
            _mm256_or_ps(_mm256_andnot_ps(m, mag), _mm256_and_ps(m, sign))
        }
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
        }
    }
    #[inline(always)]
    fn prefetch<T>(self, p: *const T) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_l2<T>(self, p: *const T) {
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
}

impl<const VNNI: bool> Lanes for Avx512<VNNI> {
    const N: usize = 16;
    const REGS: usize = 32;
    type V = __m512;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load4(self, p: *const f32) -> [__m512; 4] {
        unsafe {
            // Groups of four (g0..g15, 128 bits each): 128-bit lane L of u_j
            // is g(4L + j) (a 4x4 transpose of the blocks), then a 4x4
            // transpose within each lane.
            let r = [
                _mm512_loadu_ps(p),
                _mm512_loadu_ps(p.add(16)),
                _mm512_loadu_ps(p.add(32)),
                _mm512_loadu_ps(p.add(48)),
            ];
            let [u0, u1, u2, u3] = transpose_blocks(r);
            transpose4_512(u0, u1, u2, u3)
        }
    }
    #[inline(always)]
    unsafe fn store4(self, p: *mut f32, v: [__m512; 4]) {
        unsafe {
            let [a, b, c, d] = transpose4_512(v[0], v[1], v[2], v[3]);
            for (i, v) in transpose_blocks([a, b, c, d]).into_iter().enumerate() {
                _mm512_storeu_ps(p.add(16 * i), v);
            }
        }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut f16, v: __m512) {
        unsafe { _mm256_storeu_si256(p.cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8, v: __m512) {
        unsafe { _mm_storeu_si128(p.cast(), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v))) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> __m512 {
        unsafe {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_loadu_si256(p.cast()),
            )))
        }
    }
    // Four bytes per lane, as at AVX2.
    type Q = __m512i;
    #[inline(always)]
    unsafe fn load_q4(self, p: *const u8) -> [__m512i; 2] {
        unsafe {
            let b = _mm512_loadu_si512(p.cast());
            let m = _mm512_set1_epi8(15);
            [
                _mm512_and_si512(b, m),
                _mm512_and_si512(_mm512_srli_epi16::<4>(b), m),
            ]
        }
    }
    #[inline(always)]
    unsafe fn load_q8(self, p: *const i8) -> __m512i {
        unsafe {
            let v = _mm512_loadu_si512(p.cast());
            if VNNI {
                // q + 128 as unsigned bytes: `vpdpbusd` takes unsigned weights.
                _mm512_xor_si512(v, _mm512_set1_epi8(i8::MIN))
            } else {
                v
            }
        }
    }
    const Q8_OFFSET: f32 = if VNNI { 128.0 } else { 0.0 };
    #[inline(always)]
    unsafe fn dot_rows_q4(self, w: &[__m512i; 8], x: *const i8) -> __m512 {
        unsafe {
            if VNNI {
                let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for s in 0..4 {
                    a0 = dpbusd512::<true>(a0, w[2 * s], splat4_512(x, 2 * s));
                    a1 = dpbusd512::<true>(a1, w[2 * s + 1], splat4_512(x, 2 * s + 1));
                }
                return _mm512_cvtepi32_ps(_mm512_add_epi32(a0, a1));
            }
            // As at AVX2: the eight sub-steps' pair sums fit 16 bits.
            let mut p = _mm512_maddubs_epi16(w[0], splat4_512(x, 0));
            for (s, w) in w.iter().enumerate().skip(1) {
                p = _mm512_add_epi16(p, _mm512_maddubs_epi16(*w, splat4_512(x, s)));
            }
            _mm512_cvtepi32_ps(_mm512_madd_epi16(p, _mm512_set1_epi16(1)))
        }
    }
    #[inline(always)]
    unsafe fn dot_rows_q8(self, w: &[__m512i; 8], x: *const i8) -> __m512 {
        unsafe {
            if VNNI {
                return self.dot_rows_q4(w, x);
            }
            // `|w|` times `x` negated where `w` is negative (no `vpsignb` at
            // 512 bits).
            let z = _mm512_setzero_si512();
            let mut acc = z;
            for (s, w) in w.iter().enumerate() {
                let xs = splat4_512(x, s);
                let xs = _mm512_mask_sub_epi8(xs, _mm512_movepi8_mask(*w), z, xs);
                acc = dpbusd512::<false>(acc, _mm512_abs_epi8(*w), xs);
            }
            _mm512_cvtepi32_ps(acc)
        }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
        unsafe {
            let m = _mm512_castps_si512(_mm512_set1_ps(-0.0));
            _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_andnot_si512(m, _mm512_castps_si512(mag)),
                _mm512_and_si512(m, _mm512_castps_si512(sign)),
            ))
        }
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        unsafe { _mm512_scalef_ps(_mm512_set1_ps(1.0), n) }
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(a) }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        unsafe { _mm512_reduce_max_ps(a) }
    }
    #[inline(always)]
    fn prefetch<T>(self, p: *const T) {
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_l2<T>(self, p: *const T) {
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
}
