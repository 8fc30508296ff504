//! One SIMD abstraction for every CPU kernel: a kernel is written once, generic
//! over [`Lanes`] (a vector of f32 lanes and the dozen operations the kernels
//! use), and [`dispatch`] runs it at the level the CPU has, compiled with that
//! level's target features:
//!
//! | level | lanes | needs |
//! |---|---|---|
//! | [`Level::Avx512Vnni`] | 16 | [`Level::Avx512`] and AVX512-VNNI (int8 dot products in one instruction) |
//! | [`Level::Avx512`] | 16 | AVX-512F/BW/VL, FMA, F16C |
//! | [`Level::AvxVnni`] | 8 | AVX2, FMA, F16C and AVX-VNNI (int8 dot products in one instruction) |
//! | [`Level::Avx2`] | 8 | AVX2, FMA, F16C |
//! | [`Level::Neon`] | 4 | aarch64 (NEON is baseline there) |
//! | [`Level::Scalar`] | 8 | nothing: plain arrays the compiler vectorises for the build target |
//!
//! The level is detected once; `JANUS_SIMD=scalar|avx2|avxvnni|avx512|avx512vnni|neon` lowers it
//! (a level the CPU lacks is never used: the request is capped at the best the
//! CPU has). Tests run each kernel at every level of [`Level::available`].
//!
//! Why not `pulp` or `macerator`, which the dependency tree carries: pulp's
//! AVX2 level has no F16C, so f16 weights could not widen in registers there,
//! neither widens f16/bf16 vectors nor lets a test force a level. The per-level
//! code here is only the [`Lanes`] implementations; the kernels are generic.

#[cfg(target_arch = "aarch64")]
mod neon;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use half::{bf16, f16};

pub(crate) use scalar::Scalar;

/// A SIMD instruction-set level the CPU kernels run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Portable code, no explicit vector instructions.
    Scalar,
    /// aarch64 Advanced SIMD, 4 lanes.
    Neon,
    /// x86-64 AVX2 + FMA + F16C, 8 lanes.
    Avx2,
    /// [`Level::Avx2`] plus AVX-VNNI (Intel Alder Lake and later, Sapphire
    /// Rapids): the same kernels, with int8 dot products in one instruction.
    /// Above `Avx2` but not implied by `Avx512` (an AVX-512 CPU may lack it).
    AvxVnni,
    /// x86-64 AVX-512 (F, BW, VL) + FMA + F16C, 16 lanes.
    Avx512,
    /// [`Level::Avx512`] plus AVX512-VNNI (Ice Lake, Sapphire Rapids, Zen 4):
    /// the same kernels, with 512-bit int8 dot products in one instruction.
    Avx512Vnni,
}

impl Level {
    /// The name `JANUS_SIMD` takes and `bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Neon => "neon",
            Self::Avx2 => "avx2",
            Self::AvxVnni => "avxvnni",
            Self::Avx512 => "avx512",
            Self::Avx512Vnni => "avx512vnni",
        }
    }

    /// f32 lanes per vector at this level.
    pub fn lanes(self) -> usize {
        match self {
            Self::Avx512 | Self::Avx512Vnni => 16,
            Self::Neon => 4,
            Self::Scalar | Self::Avx2 | Self::AvxVnni => 8,
        }
    }

    /// Parses a `JANUS_SIMD` value.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Scalar,
            Self::Neon,
            Self::Avx2,
            Self::AvxVnni,
            Self::Avx512,
            Self::Avx512Vnni,
        ]
        .into_iter()
        .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The best level this CPU has (detected once).
    pub fn detect() -> Self {
        *Self::available().last().unwrap_or(&Self::Scalar)
    }

    /// Every level this CPU can run, lowest first (always starts with `Scalar`).
    pub fn available() -> &'static [Self] {
        static LEVELS: OnceLock<Vec<Level>> = OnceLock::new();
        LEVELS.get_or_init(detect_levels)
    }

    /// The best level the CPU has at or below `self`.
    pub fn capped(self) -> Self {
        Self::available()
            .iter()
            .copied()
            .rfind(|l| *l <= self)
            .unwrap_or(Self::Scalar)
    }
}

fn detect_levels() -> Vec<Level> {
    #[allow(unused_mut)]
    let mut levels = vec![Level::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        if v3 {
            levels.push(Level::Avx2);
            if is_x86_feature_detected!("avxvnni") {
                levels.push(Level::AvxVnni);
            }
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
            {
                levels.push(Level::Avx512);
                if is_x86_feature_detected!("avx512vnni") {
                    levels.push(Level::Avx512Vnni);
                }
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    levels.push(Level::Neon);
    levels
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The level the kernels use: the CPU's best, lowered by `JANUS_SIMD` (read
/// once; an unknown value is ignored).
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        match std::env::var("JANUS_SIMD")
            .ok()
            .and_then(|v| Level::parse(&v))
        {
            Some(want) => want.capped(),
            None => Level::detect(),
        }
    })
}

/// A vector of `N` f32 lanes at one SIMD level. The methods are
/// `#[inline(always)]` so a generic kernel compiles into the target-feature
/// function [`dispatch`] calls it from.
pub(crate) trait Lanes: Copy + Send + Sync {
    /// Lanes per vector.
    const N: usize;
    /// Vector registers the level has (sizes the kernels' register tiles).
    const REGS: usize;
    /// The vector.
    type V: Copy;

    fn splat(self, x: f32) -> Self::V;
    fn zero(self) -> Self::V {
        self.splat(0.0)
    }
    /// # Safety
    /// `p..p + N` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p..p + N` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// `4N` values split by position modulo 4: lane `i` of vector `j` is
    /// `p[4i + j]`.
    /// # Safety
    /// `p..p + 4N` must be readable.
    #[inline(always)]
    unsafe fn load4(self, p: *const f32) -> [Self::V; 4] {
        let mut a = [[0f32; 16]; 4];
        for i in 0..Self::N {
            for (j, a) in a.iter_mut().enumerate() {
                // SAFETY: `4i + j < 4N`.
                a[i] = unsafe { *p.add(4 * i + j) };
            }
        }
        // SAFETY: each array holds 16 >= N values.
        a.map(|a| unsafe { self.load(a.as_ptr()) })
    }
    /// The inverse of [`Lanes::load4`]: `p[4i + j]` is lane `i` of `v[j]`.
    /// # Safety
    /// `p..p + 4N` must be writable.
    #[inline(always)]
    unsafe fn store4(self, p: *mut f32, v: [Self::V; 4]) {
        let mut a = [[0f32; 16]; 4];
        for (a, v) in a.iter_mut().zip(v) {
            // SAFETY: each array holds 16 >= N values.
            unsafe { self.store(a.as_mut_ptr(), v) };
        }
        for i in 0..Self::N {
            for (j, a) in a.iter().enumerate() {
                // SAFETY: `4i + j < 4N`.
                unsafe { *p.add(4 * i + j) = a[i] };
            }
        }
    }
    /// `N` f16 values widened to f32.
    /// # Safety
    /// `p..p + N` must be readable.
    unsafe fn load_f16(self, p: *const f16) -> Self::V;
    /// `N` bf16 values widened to f32 (a shift).
    /// # Safety
    /// `p..p + N` must be readable.
    unsafe fn load_bf16(self, p: *const bf16) -> Self::V;
    /// `v` rounded to f16 (nearest, ties to even) into `p..p + N`.
    /// # Safety
    /// `p..p + N` must be writable.
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut f16, v: Self::V) {
        // SAFETY: forwarded.
        unsafe { store_each(self, p, v, f16::from_f32) }
    }
    /// `v` rounded to bf16 (nearest, ties to even) into `p..p + N`.
    /// # Safety
    /// `p..p + N` must be writable.
    #[inline(always)]
    unsafe fn store_bf16(self, p: *mut bf16, v: Self::V) {
        // SAFETY: forwarded.
        unsafe { store_each(self, p, v, bf16::from_f32) }
    }
    /// `v`'s lanes, integers in `-127..=127` (rounded by the caller), as `N`
    /// int8 values into `p..p + N` (saturated; non-finite lanes give some
    /// int8 value).
    /// # Safety
    /// `p..p + N` must be writable.
    #[inline(always)]
    unsafe fn store_i8(self, p: *mut i8, v: Self::V) {
        // SAFETY: forwarded.
        unsafe { store_each(self, p, v, |a| a as i8) }
    }
    /// `4·N` bytes in registers: four bytes for each of the `N` lanes, the
    /// weight values the block kernel multiplies in one integer dot product
    /// (four consecutive weights of one weight row per lane).
    type Q: Copy;
    /// `4·N` bytes of packed 4-bit values as two vectors: every byte's low
    /// half (`b & 15`) and its high half (`b >> 4`), each in the byte's place.
    /// # Safety
    /// `p..p + 4·N` must be readable.
    unsafe fn load_q4(self, p: *const u8) -> [Self::Q; 2];
    /// `4·N` int8 values, each plus [`Lanes::Q8_OFFSET`] (levels whose integer
    /// dot product takes unsigned weights read `q + 128` as an unsigned byte).
    /// # Safety
    /// `p..p + 4·N` must be readable.
    unsafe fn load_q8(self, p: *const i8) -> Self::Q;
    /// What [`Lanes::load_q8`] adds to every value (0 or 128).
    const Q8_OFFSET: f32 = 0.0;
    /// One block of 32 x values (int8 in `-127..=127`) times eight vectors of
    /// 4-bit weights `0..=15` ([`Lanes::load_q4`]): lane `l` of the result
    /// is `Σ_s Σ_t w[s][4l + t] · x[4s + t]` (`s < 8`, `t < 4`), exact
    /// (integer arithmetic), as f32. With the weight rows of a block in the
    /// lanes, this is each row's block dot product.
    /// # Safety
    /// `x..x + 32` must be readable.
    unsafe fn dot_rows_q4(self, w: &[Self::Q; 8], x: *const i8) -> Self::V;
    /// [`Lanes::dot_rows_q4`] of q8_0 weights from [`Lanes::load_q8`].
    /// # Safety
    /// As [`Lanes::dot_rows_q4`].
    unsafe fn dot_rows_q8(self, w: &[Self::Q; 8], x: *const i8) -> Self::V;
    /// One block of `N` 4-bit weight rows at `p` (four chunks of `4·N`
    /// packed bytes, chunk `c` at `p + 4·N·c`, as [`Lanes::load_q4`] reads
    /// them: low halves are steps `0..4`, high halves `4..8`) times `MT` blocks
    /// of x (block `i` at `x + i · stride`): result `i` is
    /// [`Lanes::dot_rows_q4`] of the block with x's block `i`. The default
    /// unpacks the block once into eight registers and takes the rows in
    /// turn; AVX2 without VNNI overrides it to walk the block one chunk at a
    /// time for all rows (eight weight vectors, `MT` accumulators and the
    /// caller's `MT` sums do not fit its 16 registers).
    /// # Safety
    /// The block's chunks and `x + i · stride..+ 32` (`i < MT`) must be
    /// readable.
    #[inline(always)]
    unsafe fn dot_tile_q4<const MT: usize>(
        self,
        p: *const u8,
        x: *const i8,
        stride: usize,
    ) -> [Self::V; MT] {
        // SAFETY: forwarded.
        unsafe { tile_q4_by_rows(self, p, x, stride) }
    }
    /// [`Lanes::dot_tile_q4`] of a block of q8_0 weights (eight chunks of
    /// `4·N` int8 values at `p`, read by [`Lanes::load_q8`]).
    /// # Safety
    /// As [`Lanes::dot_tile_q4`], with eight chunks.
    #[inline(always)]
    unsafe fn dot_tile_q8<const MT: usize>(
        self,
        p: *const i8,
        x: *const i8,
        stride: usize,
    ) -> [Self::V; MT] {
        // SAFETY: forwarded.
        unsafe { tile_q8_by_rows(self, p, x, stride) }
    }
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a · b + c`.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    /// `|mag|` with the sign of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    /// Round to the nearest integer.
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for integral `n` in `-126..=127`.
    fn pow2i(self, n: Self::V) -> Self::V;
    fn reduce_sum(self, a: Self::V) -> f32;
    fn reduce_max(self, a: Self::V) -> f32;
    /// A hint to fetch the cache line at `p` into every cache level, for data
    /// used soon (never faults).
    #[inline(always)]
    fn prefetch<T>(self, _p: *const T) {}
    /// A hint to fetch the cache line at `p` into the second-level cache, for
    /// weights streamed once and fetched far ahead (never faults). On an
    /// AVX-512 Xeon the few-row kernels read one or two rows' weights up to
    /// 10 % faster with it than with [`Lanes::prefetch`] (q4_0, one row: 4-7
    /// %; the same at eight rows); the attention loops, which fetch a few rows
    /// ahead, were 6-9 % slower.
    #[inline(always)]
    fn prefetch_l2<T>(self, _p: *const T) {}
}

/// [`Lanes::dot_tile_q4`] with the block unpacked once into eight registers
/// and the rows of x taken in turn (the default).
///
/// # Safety
/// As [`Lanes::dot_tile_q4`].
#[inline(always)]
pub(crate) unsafe fn tile_q4_by_rows<S: Lanes, const MT: usize>(
    s: S,
    p: *const u8,
    x: *const i8,
    stride: usize,
) -> [S::V; MT] {
    let c = 4 * S::N;
    // SAFETY: forwarded: four chunks from `p`, `MT` blocks of x.
    unsafe {
        let [a0, b0] = s.load_q4(p);
        let [a1, b1] = s.load_q4(p.add(c));
        let [a2, b2] = s.load_q4(p.add(2 * c));
        let [a3, b3] = s.load_q4(p.add(3 * c));
        let w = [a0, a1, a2, a3, b0, b1, b2, b3];
        let mut out = [s.zero(); MT];
        for (i, o) in out.iter_mut().enumerate() {
            *o = s.dot_rows_q4(&w, x.add(i * stride));
        }
        out
    }
}

/// [`Lanes::dot_tile_q8`] with the block loaded once into eight registers
/// and the rows of x taken in turn (the default).
///
/// # Safety
/// As [`Lanes::dot_tile_q8`].
#[inline(always)]
pub(crate) unsafe fn tile_q8_by_rows<S: Lanes, const MT: usize>(
    s: S,
    p: *const i8,
    x: *const i8,
    stride: usize,
) -> [S::V; MT] {
    let c = 4 * S::N;
    // Loops and closures would not inline the intrinsics here.
    // SAFETY: forwarded: eight chunks from `p`, `MT` blocks of x.
    unsafe {
        let w = [
            s.load_q8(p),
            s.load_q8(p.add(c)),
            s.load_q8(p.add(2 * c)),
            s.load_q8(p.add(3 * c)),
            s.load_q8(p.add(4 * c)),
            s.load_q8(p.add(5 * c)),
            s.load_q8(p.add(6 * c)),
            s.load_q8(p.add(7 * c)),
        ];
        let mut out = [s.zero(); MT];
        for (i, o) in out.iter_mut().enumerate() {
            *o = s.dot_rows_q8(&w, x.add(i * stride));
        }
        out
    }
}

/// `v`'s lanes converted one at a time into `p..p + N` (the portable
/// versions of the narrowing stores).
///
/// # Safety
/// `p..p + N` must be writable.
#[inline(always)]
unsafe fn store_each<S: Lanes, T>(s: S, p: *mut T, v: S::V, convert: impl Fn(f32) -> T) {
    let mut a = [0f32; 16];
    // SAFETY: `a` holds 16 >= N values; the caller guarantees `p`.
    unsafe {
        s.store(a.as_mut_ptr(), v);
        for (i, a) in a[..S::N].iter().enumerate() {
            *p.add(i) = convert(*a);
        }
    }
}

/// A kernel generic over the SIMD level (a closure cannot be generic).
pub(crate) trait Kernel {
    type Output;
    /// Runs the kernel; implementations are `#[inline(always)]`.
    fn run<S: Lanes>(self, s: S) -> Self::Output;
}

/// Runs `k` at `level`, capped to what the CPU has.
pub(crate) fn dispatch_at<K: Kernel>(level: Level, k: K) -> K::Output {
    match level.capped() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the level (capped above).
        Level::Avx512Vnni => unsafe { x86::run_avx512_vnni(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx512 => unsafe { x86::run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::AvxVnni => unsafe { x86::run_avx_vnni(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { x86::run_avx2(k) },
        #[cfg(target_arch = "aarch64")]
        Level::Neon => neon::run(k),
        _ => k.run(Scalar),
    }
}

/// Element types the kernels load as f32 vectors.
pub(crate) trait Load: Copy {
    /// # Safety
    /// `p..p + S::N` must be readable.
    unsafe fn load<S: Lanes>(s: S, p: *const Self) -> S::V;
}
impl Load for f32 {
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const Self) -> S::V {
        // SAFETY: forwarded.
        unsafe { s.load(p) }
    }
}
impl Load for f16 {
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const Self) -> S::V {
        // SAFETY: forwarded.
        unsafe { s.load_f16(p) }
    }
}
impl Load for bf16 {
    #[inline(always)]
    unsafe fn load<S: Lanes>(s: S, p: *const Self) -> S::V {
        // SAFETY: forwarded.
        unsafe { s.load_bf16(p) }
    }
}

/// Element types the kernels store f32 vectors as (rounded to nearest).
pub(crate) trait Store: Copy {
    /// # Safety
    /// `p..p + S::N` must be writable.
    unsafe fn store<S: Lanes>(s: S, p: *mut Self, v: S::V);
    fn from_f32(v: f32) -> Self;
}
impl Store for f32 {
    #[inline(always)]
    unsafe fn store<S: Lanes>(s: S, p: *mut Self, v: S::V) {
        // SAFETY: forwarded.
        unsafe { s.store(p, v) }
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl Store for f16 {
    #[inline(always)]
    unsafe fn store<S: Lanes>(s: S, p: *mut Self, v: S::V) {
        // SAFETY: forwarded.
        unsafe { s.store_f16(p, v) }
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}
impl Store for bf16 {
    #[inline(always)]
    unsafe fn store<S: Lanes>(s: S, p: *mut Self, v: S::V) {
        // SAFETY: forwarded.
        unsafe { s.store_bf16(p, v) }
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// `exp(x)` per lane; inputs are clamped to `[-87, 88]`. Reduces
/// `x = n·ln2 + r`, `|r| <= ln2/2`, a degree-6 Taylor polynomial (relative
/// error below 2e-7), scaled by `2^n`.
#[inline(always)]
pub(crate) fn exp<S: Lanes>(s: S, x: S::V) -> S::V {
    let x = s.min(s.max(x, s.splat(-87.0)), s.splat(88.0));
    let n = s.round(s.mul(x, s.splat(std::f32::consts::LOG2_E)));
    let r = s.sub(x, s.mul(n, s.splat(0.693_145_75)));
    let r = s.sub(r, s.mul(n, s.splat(1.428_606_8e-6)));
    let mut p = s.splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = s.fma(p, r, s.splat(c));
    }
    s.mul(p, s.pow2i(n))
}

/// `Σ a[i]·b[i]` (f32 `a`, `b` of any [`Load`] type), vectorised with a scalar
/// tail.
#[inline(always)]
pub(crate) fn dot<S: Lanes, E: Load + Into<f32>>(s: S, a: &[f32], b: &[E]) -> f32 {
    let n = a.len().min(b.len());
    let nv = n / S::N * S::N;
    let (mut acc0, mut acc1) = (s.zero(), s.zero());
    let mut i = 0;
    while i + 2 * S::N <= nv {
        // SAFETY: `i + 2N <= n` for both slices.
        unsafe {
            acc0 = s.fma(
                s.load(a.as_ptr().add(i)),
                E::load(s, b.as_ptr().add(i)),
                acc0,
            );
            acc1 = s.fma(
                s.load(a.as_ptr().add(i + S::N)),
                E::load(s, b.as_ptr().add(i + S::N)),
                acc1,
            );
        }
        i += 2 * S::N;
    }
    if i < nv {
        // SAFETY: `i + N <= n`.
        unsafe {
            acc0 = s.fma(
                s.load(a.as_ptr().add(i)),
                E::load(s, b.as_ptr().add(i)),
                acc0,
            )
        };
    }
    let mut sum = s.reduce_sum(s.add(acc0, acc1));
    for t in nv..n {
        sum += a[t] * b[t].into();
    }
    sum
}

/// `y[i] += alpha · x[i]` (f32 `y`, `x` of any [`Load`] type).
#[inline(always)]
pub(crate) fn axpy<S: Lanes, E: Load + Into<f32>>(s: S, alpha: f32, x: &[E], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let nv = n / S::N * S::N;
    let a = s.splat(alpha);
    let mut i = 0;
    while i < nv {
        // SAFETY: `i + N <= n` for both slices.
        unsafe {
            let yp = y.as_mut_ptr().add(i);
            s.store(yp, s.fma(a, E::load(s, x.as_ptr().add(i)), s.load(yp)));
        }
        i += S::N;
    }
    for t in nv..n {
        y[t] += alpha * x[t].into();
    }
}

/// `y[i] *= alpha`.
#[inline(always)]
pub(crate) fn scale<S: Lanes>(s: S, alpha: f32, y: &mut [f32]) {
    let nv = y.len() / S::N * S::N;
    let a = s.splat(alpha);
    let mut i = 0;
    while i < nv {
        // SAFETY: `i + N <= len`.
        unsafe {
            let p = y.as_mut_ptr().add(i);
            s.store(p, s.mul(a, s.load(p)));
        }
        i += S::N;
    }
    y[nv..].iter_mut().for_each(|v| *v *= alpha);
}

/// A function of one lane-vector, for [`map_in_place`]. A trait with an
/// `#[inline(always)]` method, not a closure or `fn` value: those are called
/// through a shim without the level's target features, where the intrinsics
/// stay out-of-line calls (measured 10-30x slower).
pub(crate) trait LaneFn {
    fn apply<S: Lanes>(&self, s: S, v: S::V) -> S::V;
}

/// Applies `f` to every lane-vector of `x` in place; the tail (fewer than `N`
/// values) goes through a zero-padded vector.
#[inline(always)]
pub(crate) fn map_in_place<S: Lanes>(s: S, x: &mut [f32], f: impl LaneFn) {
    let p = x.as_mut_ptr();
    // SAFETY: `x` is valid for reads and writes of its length; each vector is
    // read before the same vector is written.
    unsafe { map_raw(s, p, p, x.len(), f) }
}

/// `dst[i] = f(src[i])`, as [`map_in_place`]. `dst` as long as `src`.
#[inline(always)]
pub(crate) fn map_into<S: Lanes>(s: S, src: &[f32], dst: &mut [f32], f: impl LaneFn) {
    assert_eq!(src.len(), dst.len(), "map_into: lengths differ");
    // SAFETY: both slices hold `src.len()` values and cannot overlap (`dst`
    // is borrowed mutably).
    unsafe { map_raw(s, src.as_ptr(), dst.as_mut_ptr(), src.len(), f) }
}

/// # Safety
/// `src` readable and `dst` writable for `n` values; they are the same
/// pointer or do not overlap.
#[inline(always)]
unsafe fn map_raw<S: Lanes>(s: S, src: *const f32, dst: *mut f32, n: usize, f: impl LaneFn) {
    let nv = n / S::N * S::N;
    let mut i = 0;
    while i < nv {
        // SAFETY: `i + N <= n`.
        unsafe { s.store(dst.add(i), f.apply(s, s.load(src.add(i)))) };
        i += S::N;
    }
    let tail = n - nv;
    if tail > 0 {
        let mut buf = [0f32; 16];
        // SAFETY: `tail < N <= 16` values at `nv` in both buffers, and `buf`
        // holds 16 >= N values.
        unsafe {
            std::ptr::copy(src.add(nv), buf.as_mut_ptr(), tail);
            s.store(buf.as_mut_ptr(), f.apply(s, s.load(buf.as_ptr())));
            std::ptr::copy(buf.as_ptr(), dst.add(nv), tail);
        }
    }
}

/// `src` widened to f32 into `out` (as long as `src`) at the kernels' level:
/// half's slice conversion calls a non-inlined function per 8 values.
pub(crate) fn widen<T: Load + super::Elem>(src: &[T], out: &mut [f32]) {
    widen_at(level(), src, out)
}

pub(crate) fn widen_at<T: Load + super::Elem>(level: Level, src: &[T], out: &mut [f32]) {
    struct K<'a, T>(&'a [T], &'a mut [f32]);
    impl<T: Load + super::Elem> Kernel for K<'_, T> {
        type Output = ();
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) {
            let Self(src, out) = self;
            let out = &mut out[..src.len()];
            let nv = src.len() / S::N * S::N;
            let mut i = 0;
            while i < nv {
                // SAFETY: `i + N <= len` of both.
                unsafe { s.store(out.as_mut_ptr().add(i), T::load(s, src.as_ptr().add(i))) };
                i += S::N;
            }
            for (o, v) in out[nv..].iter_mut().zip(&src[nv..]) {
                *o = v.f32();
            }
        }
    }
    dispatch_at(level, K(src, out))
}

/// `src` rounded to `T` (nearest, ties to even) into `out` (as long as `src`)
/// at the kernels' level.
pub(crate) fn narrow<T: Store>(src: &[f32], out: &mut [T]) {
    narrow_at(level(), src, out)
}

pub(crate) fn narrow_at<T: Store>(level: Level, src: &[f32], out: &mut [T]) {
    struct K<'a, T>(&'a [f32], &'a mut [T]);
    impl<T: Store> Kernel for K<'_, T> {
        type Output = ();
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) {
            let Self(src, out) = self;
            let out = &mut out[..src.len()];
            let nv = src.len() / S::N * S::N;
            let mut i = 0;
            while i < nv {
                // SAFETY: `i + N <= len` of both.
                unsafe { T::store(s, out.as_mut_ptr().add(i), s.load(src.as_ptr().add(i))) };
                i += S::N;
            }
            for (o, v) in out[nv..].iter_mut().zip(&src[nv..]) {
                *o = T::from_f32(*v);
            }
        }
    }
    dispatch_at(level, K(src, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_matches_half_at_every_level() {
        let x: Vec<f32> = (0..203).map(|i| (i as f32 - 90.0) * 0.37).collect();
        let h: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
        let b: Vec<bf16> = x.iter().map(|v| bf16::from_f32(*v)).collect();
        for &level in Level::available() {
            for len in [0, 5, 16, 203] {
                let mut out = vec![f32::NAN; len];
                widen_at(level, &h[..len], &mut out);
                assert!(
                    out.iter().zip(&h).all(|(o, h)| *o == h.to_f32()),
                    "{level} f16 {len}"
                );
                widen_at(level, &b[..len], &mut out);
                assert!(
                    out.iter().zip(&b).all(|(o, b)| *o == b.to_f32()),
                    "{level} bf16 {len}"
                );
                widen_at(level, &x[..len], &mut out);
                assert_eq!(out, x[..len], "{level} f32 {len}");
            }
        }
    }

    #[test]
    fn narrowing_rounds_like_half_at_every_level() {
        // Ties, subnormals, overflow to infinity, signed zero, NaN.
        let mut x: Vec<f32> = (0..203).map(|i| (i as f32 - 90.0) * 0.37).collect();
        x.extend([
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            3e-6,
            -6e-8,
            1e-40,
            70000.0,
            -1e30,
            -0.0,
            f32::INFINITY,
            f32::NAN,
        ]);
        for &level in Level::available() {
            for len in [0, 5, 16, x.len()] {
                let mut h = vec![f16::ONE; len];
                narrow_at(level, &x[..len], &mut h);
                for (h, v) in h.iter().zip(&x) {
                    let want = f16::from_f32(*v);
                    assert!(
                        h.to_bits() == want.to_bits() || (h.is_nan() && want.is_nan()),
                        "{level} f16 {v}: {h} vs {want}"
                    );
                }
                let mut b = vec![bf16::ONE; len];
                narrow_at(level, &x[..len], &mut b);
                for (b, v) in b.iter().zip(&x) {
                    let want = bf16::from_f32(*v);
                    assert!(
                        b.to_bits() == want.to_bits() || (b.is_nan() && want.is_nan()),
                        "{level} bf16 {v}: {b} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn levels_parse_and_cap() {
        for l in [
            Level::Scalar,
            Level::Neon,
            Level::Avx2,
            Level::AvxVnni,
            Level::Avx512,
            Level::Avx512Vnni,
        ] {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("AVX2 "), Some(Level::Avx2));
        assert_eq!(Level::parse("sse9"), None);
        let avail = Level::available();
        assert_eq!(avail[0], Level::Scalar);
        assert_eq!(*avail.last().unwrap(), Level::detect());
        assert!(avail.contains(&level()));
        // Asking for more than the CPU has gives what it has.
        assert_eq!(Level::Avx512Vnni.capped(), Level::detect());
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Level::Neon.capped(), Level::Scalar);
    }

    struct Ops<'a>(&'a [f32], &'a [f16], &'a [bf16]);
    impl Kernel for Ops<'_> {
        type Output = Vec<f32>;
        #[inline(always)]
        fn run<S: Lanes>(self, s: S) -> Vec<f32> {
            let (x, h, b) = (self.0, self.1, self.2);
            let mut out = vec![dot(s, x, h), dot(s, x, b), dot(s, x, x)];
            let mut y = x.to_vec();
            axpy(s, 0.5, h, &mut y);
            scale(s, 2.0, &mut y);
            struct F;
            impl LaneFn for F {
                #[inline(always)]
                fn apply<S: Lanes>(&self, s: S, v: S::V) -> S::V {
                    let r = s.round(v);
                    s.add(s.copysign(s.abs(r), s.splat(-1.0)), exp(s, s.splat(0.25)))
                }
            }
            map_in_place(s, &mut y, F);
            out.extend(y);
            let chunk = &x[..S::N];
            // SAFETY: `chunk` holds N values.
            let v = unsafe { s.load(chunk.as_ptr()) };
            out.push(s.reduce_max(v));
            out.push(s.reduce_sum(s.div(s.pow2i(s.splat(3.0)), s.splat(4.0))));
            out
        }
    }

    #[test]
    fn every_level_computes_the_same_operations() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let h: Vec<f16> = x.iter().map(|v| f16::from_f32(v * 0.5)).collect();
        let b: Vec<bf16> = x.iter().map(|v| bf16::from_f32(v - 1.0)).collect();
        let want = {
            let dh: f32 = x.iter().zip(&h).map(|(a, b)| a * b.to_f32()).sum();
            let db: f32 = x.iter().zip(&b).map(|(a, b)| a * b.to_f32()).sum();
            let dx: f32 = x.iter().map(|a| a * a).sum();
            let mut v = vec![dh, db, dx];
            v.extend(x.iter().zip(&h).map(|(x, h)| {
                let y = (x + 0.5 * h.to_f32()) * 2.0;
                -y.round_ties_even().abs() + 0.25f32.exp()
            }));
            v
        };
        for &level in Level::available() {
            let got = dispatch_at(level, Ops(&x, &h, &b));
            let n = level.lanes();
            let max = x[..n].iter().copied().fold(f32::MIN, f32::max);
            let mut want = want.clone();
            want.push(max);
            want.push(2.0 * n as f32);
            assert_eq!(got.len(), want.len(), "{level}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{level} [{i}]: {g} vs {w}"
                );
            }
        }
    }

    /// `load4` of `0, 1, 2, ...` and `store4` of the result, per level.
    struct Split;

    impl Kernel for Split {
        type Output = (Vec<Vec<f32>>, Vec<f32>);
        fn run<S: Lanes>(self, s: S) -> Self::Output {
            let x: Vec<f32> = (0..4 * S::N).map(|i| i as f32).collect();
            // SAFETY: `x` holds 4N values, `back` too.
            let v = unsafe { s.load4(x.as_ptr()) };
            let mut lanes = Vec::new();
            for v in v {
                let mut a = [0f32; 16];
                unsafe { s.store(a.as_mut_ptr(), v) };
                lanes.push(a[..S::N].to_vec());
            }
            let mut back = vec![0f32; 4 * S::N];
            unsafe { s.store4(back.as_mut_ptr(), v) };
            (lanes, back)
        }
    }

    #[test]
    fn load4_splits_by_position_and_store4_joins_at_every_level() {
        for &level in Level::available() {
            let (lanes, back) = dispatch_at(level, Split);
            let n = level.lanes();
            for (j, lane) in lanes.iter().enumerate() {
                let want: Vec<f32> = (0..n).map(|i| (4 * i + j) as f32).collect();
                assert_eq!(lane, &want, "{level} vector {j}");
            }
            let want: Vec<f32> = (0..4 * n).map(|i| i as f32).collect();
            assert_eq!(back, want, "{level}");
        }
    }
}
