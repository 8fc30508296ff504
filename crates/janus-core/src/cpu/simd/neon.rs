//! The aarch64 level: NEON (Advanced SIMD, part of the aarch64 baseline), four
//! f32 lanes. f16 values widen through `half` (the f16 vector types are not
//! stable Rust); bf16 values widen with a shift.
//!
//! This file only compiles on aarch64 targets; the project's CI machines are
//! x86-64, so it is built wherever an aarch64 toolchain builds the crate.

use std::arch::aarch64::*;

use half::{bf16, f16};

use super::{Kernel, Lanes};

/// NEON lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon(());

/// Runs `k` with NEON (always present on aarch64).
pub(crate) fn run<K: Kernel>(k: K) -> K::Output {
    k.run(Neon(()))
}

// SAFETY (all `unsafe` blocks below): NEON is part of every aarch64 target;
// pointer reads and writes are the callers' contract.

impl Lanes for Neon {
    const N: usize = 4;
    const REGS: usize = 32;
    type V = float32x4_t;

    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> float32x4_t {
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: float32x4_t) {
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn load4(self, p: *const f32) -> [float32x4_t; 4] {
        let v = unsafe { vld4q_f32(p) };
        [v.0, v.1, v.2, v.3]
    }
    #[inline(always)]
    unsafe fn store4(self, p: *mut f32, v: [float32x4_t; 4]) {
        unsafe { vst4q_f32(p, float32x4x4_t(v[0], v[1], v[2], v[3])) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> float32x4_t {
        let h = unsafe { p.cast::<[f16; 4]>().read_unaligned() };
        let f = h.map(f16::to_f32);
        unsafe { vld1q_f32(f.as_ptr()) }
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> float32x4_t {
        unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast()))) }
    }
    // Four bytes per lane, as on x86.
    type Q = int8x16_t;
    #[inline(always)]
    unsafe fn load_q4(self, p: *const u8) -> [int8x16_t; 2] {
        unsafe {
            let b = vld1q_u8(p);
            [
                vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15))),
                vreinterpretq_s8_u8(vshrq_n_u8::<4>(b)),
            ]
        }
    }
    #[inline(always)]
    unsafe fn load_q8(self, p: *const i8) -> int8x16_t {
        unsafe { vld1q_s8(p) }
    }
    #[inline(always)]
    unsafe fn dot_rows_q4(self, w: &[int8x16_t; 8], x: *const i8) -> float32x4_t {
        // i8·i8 products fit i16 (at most 128 · 127), pairs of them too;
        // `vpaddq` sums each lane's four products to two pairs in order, and
        // `vpadalq` adds each pair into its int32 lane.
        unsafe {
            let mut acc = vdupq_n_s32(0);
            for (s, w) in w.iter().enumerate() {
                let xs =
                    vreinterpretq_s8_s32(vdupq_n_s32(x.add(4 * s).cast::<i32>().read_unaligned()));
                let lo = vmull_s8(vget_low_s8(*w), vget_low_s8(xs));
                let hi = vmull_high_s8(*w, xs);
                acc = vpadalq_s16(acc, vpaddq_s16(lo, hi));
            }
            vcvtq_f32_s32(acc)
        }
    }
    #[inline(always)]
    unsafe fn dot_rows_q8(self, w: &[int8x16_t; 8], x: *const i8) -> float32x4_t {
        // Signed values, read as they are.
        unsafe { self.dot_rows_q4(w, x) }
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn div(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vdivq_f32(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmaq_f32(acc, x, y) = acc + x·y.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vminq_f32(a, b) }
    }
    #[inline(always)]
    fn abs(self, a: float32x4_t) -> float32x4_t {
        unsafe { vabsq_f32(a) }
    }
    #[inline(always)]
    fn copysign(self, mag: float32x4_t, sign: float32x4_t) -> float32x4_t {
        unsafe { vbslq_f32(vdupq_n_u32(0x8000_0000), sign, mag) }
    }
    #[inline(always)]
    fn round(self, a: float32x4_t) -> float32x4_t {
        unsafe { vrndnq_f32(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: float32x4_t) -> float32x4_t {
        unsafe {
            let e = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(e))
        }
    }
    #[inline(always)]
    fn reduce_sum(self, a: float32x4_t) -> f32 {
        unsafe { vaddvq_f32(a) }
    }
    #[inline(always)]
    fn reduce_max(self, a: float32x4_t) -> f32 {
        unsafe { vmaxvq_f32(a) }
    }
}
