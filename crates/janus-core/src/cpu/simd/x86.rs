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

/// AVX-512 lanes; only made by [`run_avx512`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512(());

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
    k.run(Avx512(()))
}

/// A q4_0 block's 16 bytes as 32 unsigned bytes `0..=15`, low halves first.
///
/// # Safety
/// AVX2; `p..p + 16` readable.
#[inline(always)]
unsafe fn u4_b32(p: *const u8) -> __m256i {
    unsafe {
        let b = _mm_loadu_si128(p.cast());
        let m = _mm_set1_epi8(15);
        let lo = _mm_and_si128(b, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m);
        _mm256_set_m128i(hi, lo)
    }
}

/// Eight int32 partial sums of `w · x` over 32 bytes: `w` unsigned, `x`
/// signed (`maddubs`; each pair sum is at most 2 · 128 · 127 < 2¹⁵ for the
/// ranges the callers pass), pairs widened to int32. Signed weights go in as
/// `|w|` with `x` given `w`'s signs.
///
/// # Safety
/// AVX2.
#[inline(always)]
unsafe fn dot_ub32_epi32(w: __m256i, x: __m256i) -> __m256i {
    unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)) }
}

/// `acc` plus [`dot_ub32_epi32`] (`w` unsigned, `x` signed): one `vpdpbusd`
/// with `VNNI` (exact for any bytes), else `maddubs` (whose pair sums must fit
/// 16 bits, as there), `madd` and an add.
///
/// # Safety
/// AVX2; AVX-VNNI if `VNNI`.
#[inline(always)]
unsafe fn dpbusd<const VNNI: bool>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    unsafe {
        if VNNI {
            _mm256_dpbusd_avx_epi32(acc, w, x)
        } else {
            _mm256_add_epi32(acc, dot_ub32_epi32(w, x))
        }
    }
}

/// Two q4_0 blocks (32 bytes) split into halves (`Lanes::SPLIT_PAIRS`):
/// values `0..16` of both blocks (the low nibbles), then values `16..32`.
///
/// # Safety
/// AVX2; `p..p + 32` readable.
#[inline(always)]
unsafe fn u4_b64_split(p: *const u8) -> [__m256i; 2] {
    unsafe {
        let b = _mm256_loadu_si256(p.cast());
        let m = _mm256_set1_epi8(15);
        [
            _mm256_and_si256(b, m),
            _mm256_and_si256(_mm256_srli_epi16::<4>(b), m),
        ]
    }
}

/// Two q4_0 blocks (32 bytes) as two vectors of 32 unsigned bytes `0..=15`,
/// each block's low halves first (what [`u4_b32`] gives per block).
///
/// # Safety
/// AVX2; `p..p + 32` readable.
#[inline(always)]
unsafe fn u4_b64(p: *const u8) -> [__m256i; 2] {
    unsafe {
        let [lo, hi] = u4_b64_split(p);
        [
            _mm256_permute2x128_si256::<0x20>(lo, hi),
            _mm256_permute2x128_si256::<0x31>(lo, hi),
        ]
    }
}

/// Two 256-bit vectors as one 512-bit vector, `lo` in the low half.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn concat_si512(lo: __m256i, hi: __m256i) -> __m512i {
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi) }
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
    unsafe fn load_f16(self, p: *const f16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut f16, v: __m256) {
        unsafe { _mm_storeu_si128(p.cast(), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> __m256 {
        unsafe {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast()),
            )))
        }
    }
    type B32 = __m256i;
    #[inline(always)]
    unsafe fn load_b32(self, p: *const i8) -> __m256i {
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_u4_b32(self, p: *const u8) -> __m256i {
        unsafe { u4_b32(p) }
    }
    #[inline(always)]
    fn dot_b32(self, w: __m256i, x: __m256i) -> __m256 {
        unsafe {
            _mm256_cvtepi32_ps(dpbusd::<VNNI>(
                _mm256_setzero_si256(),
                _mm256_sign_epi8(w, w),
                _mm256_sign_epi8(x, w),
            ))
        }
    }
    #[inline(always)]
    fn dot_ub32(self, w: __m256i, x: __m256i) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(dpbusd::<VNNI>(_mm256_setzero_si256(), w, x)) }
    }
    // Split pairs: each 128-bit half of a register holds one block's values,
    // so the int32 sums land as [block 0 x 4 | block 1 x 4] with no shuffle
    // per row of x (the weights are laid out once per pair and weight row).
    const SPLIT_PAIRS: bool = true;
    #[inline(always)]
    unsafe fn load_b64(self, p: *const i8) -> [__m256i; 2] {
        unsafe {
            let (a, b) = (
                _mm256_loadu_si256(p.cast()),
                _mm256_loadu_si256(p.add(32).cast()),
            );
            [
                _mm256_permute2x128_si256::<0x20>(a, b),
                _mm256_permute2x128_si256::<0x31>(a, b),
            ]
        }
    }
    #[inline(always)]
    fn dot2_b32(self, w: [__m256i; 2], x: [__m256i; 2]) -> __m256 {
        // No closure here: it would not carry the target features, and the
        // intrinsics in it would stay out-of-line calls.
        unsafe {
            let z = _mm256_setzero_si256();
            let (w0, x0) = (_mm256_sign_epi8(w[0], w[0]), _mm256_sign_epi8(x[0], w[0]));
            let (w1, x1) = (_mm256_sign_epi8(w[1], w[1]), _mm256_sign_epi8(x[1], w[1]));
            _mm256_cvtepi32_ps(dpbusd::<VNNI>(dpbusd::<VNNI>(z, w0, x0), w1, x1))
        }
    }
    #[inline(always)]
    fn dot2_u4(self, w: [__m256i; 2], x: [__m256i; 2]) -> __m256 {
        unsafe {
            if VNNI {
                let z = _mm256_setzero_si256();
                return _mm256_cvtepi32_ps(dpbusd::<VNNI>(
                    dpbusd::<VNNI>(z, w[0], x[0]),
                    w[1],
                    x[1],
                ));
            }
            // Pair sums of 4-bit values are at most 2 · 15 · 127: two of them
            // still fit 16 bits.
            let s = _mm256_add_epi16(
                _mm256_maddubs_epi16(w[0], x[0]),
                _mm256_maddubs_epi16(w[1], x[1]),
            );
            _mm256_cvtepi32_ps(_mm256_madd_epi16(s, _mm256_set1_epi16(1)))
        }
    }
    #[inline(always)]
    fn halves(self, a: __m256, b: __m256) -> __m256 {
        unsafe {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        }
    }
    #[inline(always)]
    fn splat2(self, a: f32, b: f32) -> __m256 {
        unsafe { _mm256_set_m128(_mm_set1_ps(b), _mm_set1_ps(a)) }
    }
    #[inline(always)]
    fn pair_lanes(self, v: __m256, p: usize) -> __m256 {
        unsafe {
            let i = _mm256_add_epi32(
                _mm256_set1_epi32(2 * p as i32),
                _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1),
            );
            _mm256_permutevar8x32_ps(v, i)
        }
    }
    #[inline(always)]
    unsafe fn load_u4_b64(self, p: *const u8) -> [__m256i; 2] {
        unsafe { u4_b64_split(p) }
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
}

impl Lanes for Avx512 {
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
    unsafe fn load_f16(self, p: *const f16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut f16, v: __m512) {
        unsafe { _mm256_storeu_si256(p.cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> __m512 {
        unsafe {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_loadu_si256(p.cast()),
            )))
        }
    }
    type B32 = __m256i;
    #[inline(always)]
    unsafe fn load_b32(self, p: *const i8) -> __m256i {
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
    #[inline(always)]
    unsafe fn load_u4_b32(self, p: *const u8) -> __m256i {
        unsafe { u4_b32(p) }
    }
    #[inline(always)]
    fn dot_b32(self, w: __m256i, x: __m256i) -> __m512 {
        // The 256-bit products in the low half, zeros above.
        unsafe {
            let d = dot_ub32_epi32(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
            _mm512_zextps256_ps512(_mm256_cvtepi32_ps(d))
        }
    }
    #[inline(always)]
    fn dot_ub32(self, w: __m256i, x: __m256i) -> __m512 {
        unsafe { _mm512_zextps256_ps512(_mm256_cvtepi32_ps(dot_ub32_epi32(w, x))) }
    }
    #[inline(always)]
    fn dot2_b32(self, w: [__m256i; 2], x: [__m256i; 2]) -> __m512 {
        // Both blocks in one 512-bit vector (block 0 low); `|w|` times `x`
        // negated where `w` is negative (-128 reads as 128 unsigned).
        unsafe {
            let (w, x) = (concat_si512(w[0], w[1]), concat_si512(x[0], x[1]));
            let x = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
            let p = _mm512_maddubs_epi16(_mm512_abs_epi8(w), x);
            _mm512_cvtepi32_ps(_mm512_madd_epi16(p, _mm512_set1_epi16(1)))
        }
    }
    #[inline(always)]
    fn dot2_u4(self, w: [__m256i; 2], x: [__m256i; 2]) -> __m512 {
        unsafe {
            let (w, x) = (concat_si512(w[0], w[1]), concat_si512(x[0], x[1]));
            let p = _mm512_maddubs_epi16(w, x);
            _mm512_cvtepi32_ps(_mm512_madd_epi16(p, _mm512_set1_epi16(1)))
        }
    }
    #[inline(always)]
    fn halves(self, a: __m512, b: __m512) -> __m512 {
        // No closure for the two halves: it would not carry the target
        // features.
        unsafe {
            let (a, b) = (_mm512_castps_pd(a), _mm512_castps_pd(b));
            let a = _mm256_add_ps(
                _mm256_castpd_ps(_mm512_castpd512_pd256(a)),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(a)),
            );
            let b = _mm256_add_ps(
                _mm256_castpd_ps(_mm512_castpd512_pd256(b)),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(b)),
            );
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(a)),
                _mm256_castps_pd(b),
            ))
        }
    }
    #[inline(always)]
    fn splat2(self, a: f32, b: f32) -> __m512 {
        unsafe {
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(a))),
                _mm256_castps_pd(_mm256_set1_ps(b)),
            ))
        }
    }
    #[inline(always)]
    fn pair_lanes(self, v: __m512, p: usize) -> __m512 {
        unsafe {
            let i = _mm512_add_epi32(
                _mm512_set1_epi32(2 * p as i32),
                _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
            );
            _mm512_permutexvar_ps(i, v)
        }
    }
    #[inline(always)]
    unsafe fn load_u4_b64(self, p: *const u8) -> [__m256i; 2] {
        unsafe { u4_b64(p) }
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
}
