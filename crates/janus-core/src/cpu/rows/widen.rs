//! The block kernel with f32 rows of `x`: f32 weights, or f16/bf16 weights
//! widened to f32 in registers. Written once over [`Lanes`]; each parallel task
//! dispatches it at the chosen level, so the tile loop compiles with that
//! level's instructions.

use super::super::Elem;
use super::super::simd::{self, Kernel, Lanes, Level, Load};

/// `y [m, n] = x [m, k] · w [n, k]ᵀ` at `level`.
pub(super) fn run<E: Elem + Load>(
    level: Level,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[E],
    n: usize,
) -> Vec<f32> {
    super::run(x, m, k, w, n, |x, m, k, w, yt| {
        simd::dispatch_at(level, Block { x, m, k, w, yt })
    })
}

/// One block of weight rows: `yt[j * m + i] = x[i] · w[j]`.
struct Block<'a, E> {
    x: &'a [f32],
    m: usize,
    k: usize,
    w: &'a [E],
    yt: &'a mut [f32],
}

impl<E: Elem + Load> Kernel for Block<'_, E> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self { x, m, k, w, yt } = self;
        // SAFETY: `w` holds whole rows of `k` weights, `x` `m` rows of `k`
        // values and `yt` `m` outputs per weight row; the tiles stay inside.
        let max_mt = if S::REGS >= 32 { 8 } else { 4 };
        unsafe { super::tiles!(tile[_, _](s), max_mt, S::REGS, x, m, k, w, yt) }
    }
}

/// `out[j * m + i] = x[i] · w[j]` for `MT` rows of `x` and `NT` weight rows.
///
/// # Safety
/// `x` must address `MT` rows and `w` `NT` rows of `k` values; `out` must hold
/// `(NT - 1) * m + MT` values.
// `acc[j][i]` pairs weight row `j` with row `i` of `x`: indices read clearer.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<S: Lanes, E: Elem + Load, const MT: usize, const NT: usize>(
    s: S,
    x: *const f32,
    k: usize,
    w: *const E,
    out: &mut [f32],
    m: usize,
) {
    let mut acc = [[s.zero(); MT]; NT];
    let kv = k / S::N * S::N;
    let mut kk = 0;
    while kk < kv {
        let mut wv = [s.zero(); NT];
        for (j, wv) in wv.iter_mut().enumerate() {
            // SAFETY: rows of `k` weights, `kk + N <= k`.
            *wv = unsafe { E::load(s, w.add(j * k + kk)) };
            // The next tile's rows, fetched while this one computes (a hint:
            // never faults, even past the end).
            s.prefetch_l2(w.wrapping_add((NT + j) * k + kk));
        }
        for i in 0..MT {
            // SAFETY: `MT` rows of `k` values, `kk + N <= k`.
            let xv = unsafe { s.load(x.add(i * k + kk)) };
            for j in 0..NT {
                acc[j][i] = s.fma(wv[j], xv, acc[j][i]);
            }
        }
        kk += S::N;
    }
    for j in 0..NT {
        for i in 0..MT {
            let mut sum = s.reduce_sum(acc[j][i]);
            for t in kv..k {
                // SAFETY: in bounds as above.
                sum += unsafe { (*w.add(j * k + t)).f32() * *x.add(i * k + t) };
            }
            out[j * m + i] = sum;
        }
    }
}
