//! The portable level: eight f32 lanes as a plain array. Every operation is a
//! loop the compiler vectorises for whatever the build targets (SSE2 on x86-64).

use half::{bf16, f16};

use super::Lanes;

/// Portable lanes (no explicit vector instructions).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar;

type V = [f32; 8];

#[inline(always)]
fn map(a: V, f: impl Fn(f32) -> f32) -> V {
    let mut out = a;
    out.iter_mut().for_each(|x| *x = f(*x));
    out
}

#[inline(always)]
fn zip(a: V, b: V, f: impl Fn(f32, f32) -> f32) -> V {
    let mut out = a;
    out.iter_mut().zip(b).for_each(|(x, y)| *x = f(*x, y));
    out
}

impl Lanes for Scalar {
    const N: usize = 8;
    const REGS: usize = 8;
    type V = V;

    #[inline(always)]
    fn splat(self, x: f32) -> V {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> V {
        // SAFETY: the caller guarantees 8 readable values.
        unsafe { p.cast::<V>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: V) {
        // SAFETY: the caller guarantees 8 writable values.
        unsafe { p.cast::<V>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_f16(self, p: *const f16) -> V {
        // SAFETY: the caller guarantees 8 readable values.
        let h = unsafe { p.cast::<[f16; 8]>().read_unaligned() };
        h.map(f16::to_f32)
    }
    #[inline(always)]
    unsafe fn load_bf16(self, p: *const bf16) -> V {
        // SAFETY: the caller guarantees 8 readable values.
        let h = unsafe { p.cast::<[u16; 8]>().read_unaligned() };
        h.map(|b| f32::from_bits(u32::from(b) << 16))
    }
    // Four bytes per lane, as at AVX2.
    type Q = [i8; 32];
    #[inline(always)]
    unsafe fn load_q4(self, p: *const u8) -> [[i8; 32]; 2] {
        // SAFETY: the caller guarantees 32 readable bytes.
        let b = unsafe { p.cast::<[u8; 32]>().read_unaligned() };
        [b.map(|v| (v & 15) as i8), b.map(|v| (v >> 4) as i8)]
    }
    #[inline(always)]
    unsafe fn load_q8(self, p: *const i8) -> [i8; 32] {
        // SAFETY: the caller guarantees 32 readable bytes.
        unsafe { p.cast::<[i8; 32]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn dot_rows_q4(self, w: &[[i8; 32]; 8], x: *const i8) -> V {
        // SAFETY: the caller guarantees 32 readable bytes.
        let x = unsafe { x.cast::<[i8; 32]>().read_unaligned() };
        // Exact in i32, then f32.
        std::array::from_fn(|l| {
            let mut sum = 0i32;
            for (s, w) in w.iter().enumerate() {
                for t in 0..4 {
                    sum += i32::from(w[4 * l + t]) * i32::from(x[4 * s + t]);
                }
            }
            sum as f32
        })
    }
    #[inline(always)]
    unsafe fn dot_rows_q8(self, w: &[[i8; 32]; 8], x: *const i8) -> V {
        // Signed values, read as they are.
        // SAFETY: forwarded.
        unsafe { self.dot_rows_q4(w, x) }
    }
    #[inline(always)]
    fn add(self, a: V, b: V) -> V {
        zip(a, b, |x, y| x + y)
    }
    #[inline(always)]
    fn sub(self, a: V, b: V) -> V {
        zip(a, b, |x, y| x - y)
    }
    #[inline(always)]
    fn mul(self, a: V, b: V) -> V {
        zip(a, b, |x, y| x * y)
    }
    #[inline(always)]
    fn div(self, a: V, b: V) -> V {
        zip(a, b, |x, y| x / y)
    }
    #[inline(always)]
    fn fma(self, a: V, b: V, c: V) -> V {
        // Not `mul_add`: without FMA hardware that is a libm call per lane.
        let mut out = c;
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o += x * y;
        }
        out
    }
    #[inline(always)]
    fn max(self, a: V, b: V) -> V {
        zip(a, b, f32::max)
    }
    #[inline(always)]
    fn min(self, a: V, b: V) -> V {
        zip(a, b, f32::min)
    }
    #[inline(always)]
    fn abs(self, a: V) -> V {
        map(a, f32::abs)
    }
    #[inline(always)]
    fn copysign(self, mag: V, sign: V) -> V {
        zip(mag, sign, f32::copysign)
    }
    #[inline(always)]
    fn round(self, a: V) -> V {
        map(a, f32::round_ties_even)
    }
    #[inline(always)]
    fn pow2i(self, n: V) -> V {
        map(n, |n| f32::from_bits(((n as i32 + 127) as u32) << 23))
    }
    #[inline(always)]
    fn reduce_sum(self, a: V) -> f32 {
        let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
        (s[0] + s[2]) + (s[1] + s[3])
    }
    #[inline(always)]
    fn reduce_max(self, a: V) -> f32 {
        a.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
}
