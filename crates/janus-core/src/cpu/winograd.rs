//! 3x3, stride-1, pad-1 convolution by Winograd's F(4x4, 3x3): each 4x4
//! output tile takes 36 multiplies per channel pair instead of 144 (4x fewer
//! than a direct convolution). The 36 transformed positions are 36
//! independent `[cout, cin] x [cin, tiles]` products (gemm); the transforms
//! run vectorised over tiles at the CPU's SIMD level ([`Lanes`]).
//!
//! Transforms (Lavin & Gray, 2015; interpolation points 0, ±1, ±2, ∞), with
//! `d` a 6x6 input tile and `g` a 3x3 kernel: `U = G g Gᵀ`, `V = Bᵀ d B`,
//! `Y = Aᵀ (U ⊙ V) A`, where
//!
//! ```text
//! Bᵀ = [4  0 -5  0 1 0]   G = [ 1/4     0    0]   Aᵀ = [1 1  1 1  1 0]
//!      [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6]        [0 1 -1 2 -2 0]
//!      [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6]        [0 1  1 4  4 0]
//!      [0 -2 -1  2 1 0]       [1/24 1/12  1/6]        [0 1 -1 8 -8 1]
//!      [0  2 -1 -2 1 0]       [1/24 -1/12 1/6]
//!      [0  4  0 -5 0 1]       [   0    0    1]
//! ```
//!
//! Each task copies its rows of the zero-padded input, applies `Bᵀ` down
//! the rows as plain vectors, then splits each row by column modulo 4
//! ([`Lanes::load4`]) so the six columns `4t..4t + 6` of tiles `t..t + N`
//! are six vectors; the outputs are joined back the same way
//! ([`Lanes::store4`]). Sizes that are not multiples of 4 compute whole
//! tiles over extra zero padding and drop the extra outputs.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::SendPtr;
use super::simd::{self, Kernel, Lanes, Level};

/// Tiles per parallel task, about (whole tile rows).
const TILES: usize = 128;

/// Floats after each channel's row of `n` tiles in the transformed matrices:
/// room for the last vector of a tile row to run up to `N - 1` tiles past
/// its end (a tile row's overrun inside the row is overwritten by the next
/// tile row).
const SLACK: usize = 16;

/// Runs `f` with `U` for every kernel of a `[cout, cin, 3, 3]` weight:
/// `[36, cin, cout]` (each position's `[cout, cin]` matrix column-major, as
/// gemm reads it without packing), at the CPU's SIMD level. `U` is built in
/// the calling thread's buffer, kept from call to call (up to 36 MB for a
/// 512 x 512 weight): filling fresh pages took longer than the transform.
pub(super) fn with_weights<R>(
    w: &[f32],
    cout: usize,
    cin: usize,
    f: impl FnOnce(&[f32]) -> R,
) -> R {
    // Taken out of the cell, so a nested call (none today) would only
    // allocate its own.
    let mut u = U_BUFFER.take();
    transform_weights_at(simd::level(), w, cout, cin, &mut u);
    let r = f(&u);
    U_BUFFER.set(u);
    r
}

thread_local! {
    static U_BUFFER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// [`with_weights`]' transform at `level`:
/// `U` (every value written) into `u`.
fn transform_weights_at(level: Level, w: &[f32], cout: usize, cin: usize, u: &mut Vec<f32>) {
    assert_eq!(w.len(), cout * cin * 9);
    u.truncate(36 * cout * cin);
    u.resize(36 * cout * cin, 0.0);
    let dst = SendPtr(u.as_mut_ptr());
    // Blocks of 16 output channels: per input channel, 36 runs of 16 values
    // (a cache line each), read from 16 streams of the weight.
    (0..cout.div_ceil(OC_BLOCK)).into_par_iter().for_each(|b| {
        simd::dispatch_at(
            level,
            WeightBlock {
                w,
                cin,
                cout,
                oc0: b * OC_BLOCK,
                u: dst,
            },
        )
    });
}

/// Output channels per task of [`transform_weights_at`].
const OC_BLOCK: usize = 16;

/// `U` of output channels `oc0..oc0 + OC_BLOCK` (fewer at the end).
struct WeightBlock<'a> {
    w: &'a [f32],
    cin: usize,
    cout: usize,
    oc0: usize,
    u: SendPtr,
}

impl Kernel for WeightBlock<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self {
            w,
            cin,
            cout,
            oc0,
            u,
        } = self;
        let len = OC_BLOCK.min(cout - oc0);
        assert!(OC_BLOCK.is_multiple_of(S::N) && w.len() == cout * cin * 9);
        for ic in 0..cin {
            // The block's kernels for this input channel, lane-major.
            let mut g = [[0f32; OC_BLOCK]; 9];
            for o in 0..len {
                let k = &w[((oc0 + o) * cin + ic) * 9..][..9];
                for (g, v) in g.iter_mut().zip(k) {
                    g[o] = *v;
                }
            }
            let mut vals = [[0f32; OC_BLOCK]; 36];
            for l0 in (0..OC_BLOCK).step_by(S::N) {
                let mut k = [s.zero(); 9];
                for (k, g) in k.iter_mut().zip(&g) {
                    // SAFETY: `l0 + N <= OC_BLOCK`.
                    *k = unsafe { s.load(g.as_ptr().add(l0)) };
                }
                // G g (6x3, by columns), then (G g) Gᵀ (6x6, by rows).
                let mut gg = [[s.zero(); 3]; 6];
                for c in 0..3 {
                    let col = g_times(s, [k[c], k[3 + c], k[6 + c]]);
                    for (gg, v) in gg.iter_mut().zip(col) {
                        gg[c] = v;
                    }
                }
                for (r, row) in gg.into_iter().enumerate() {
                    for (c, v) in g_times(s, row).into_iter().enumerate() {
                        // SAFETY: `l0 + N <= OC_BLOCK`.
                        unsafe { s.store(vals[6 * r + c].as_mut_ptr().add(l0), v) };
                    }
                }
            }
            for (p, v) in vals.iter().enumerate() {
                // SAFETY: `(p cin + ic) cout + oc0 + len <= 36 cin cout`;
                // these columns are this task's alone.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(u.get().add((p * cin + ic) * cout + oc0), len)
                };
                dst.copy_from_slice(&v[..len]);
            }
        }
    }
}

/// `G g` for three vectors of values.
#[inline(always)]
fn g_times<S: Lanes>(s: S, [a, b, c]: [S::V; 3]) -> [S::V; 6] {
    let (b6, b12) = (s.mul(b, s.splat(1.0 / 6.0)), s.mul(b, s.splat(1.0 / 12.0)));
    let q = s.fma(a, s.splat(1.0 / 24.0), s.mul(c, s.splat(1.0 / 6.0)));
    let r = s.mul(s.add(a, c), s.splat(-1.0 / 6.0));
    [
        s.mul(a, s.splat(0.25)),
        s.sub(r, b6),
        s.add(r, b6),
        s.add(q, b12),
        s.sub(q, b12),
        c,
    ]
}

/// Sizes of one image's convolution and of its tiles.
pub(super) struct Dims {
    pub cin: usize,
    pub cout: usize,
    /// Output (and input, after any upsampling) height and width.
    pub h: usize,
    pub w: usize,
}

/// [`Dims`] and the tile grid's derived sizes.
struct Grid {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    /// Tile rows and columns (`ceil(h / 4)`, `ceil(w / 4)`).
    th: usize,
    tw: usize,
    /// Floats per padded row: `w + 2` used; vectors of `N <= 16` tiles start
    /// at multiples of `N` below `tw` and read one tile further, up to
    /// `4 tw.next_multiple_of(16) + 4` floats (+16 keeps rows a multiple of
    /// 16).
    row: usize,
}

impl Grid {
    fn new(d: &Dims) -> Self {
        let (th, tw) = (d.h.div_ceil(4), d.w.div_ceil(4));
        Self {
            cin: d.cin,
            cout: d.cout,
            h: d.h,
            w: d.w,
            th,
            tw,
            row: 4 * tw.next_multiple_of(16) + 16,
        }
    }
}

/// One image: `img` is `[cin, h0, w0]` (the input before any 2x
/// nearest-neighbour `upsample`), `u` from [`with_weights`], `out` is
/// `[cout, h, w]` and receives `conv + bias (+ res)`, computed at `level`.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv3x3(
    level: Level,
    img: &[f32],
    upsample: bool,
    u: &[f32],
    bias: &[f32],
    res: Option<&[f32]>,
    out: &mut [f32],
    d: &Dims,
) {
    let g = Grid::new(d);
    assert!(
        u.len() == 36 * g.cin * g.cout
            && bias.len() == g.cout
            && out.len() == g.cout * g.h * g.w
            && res.is_none_or(|r| r.len() == out.len())
    );
    let s = if upsample { 2 } else { 1 };
    assert!(g.h.is_multiple_of(s) && g.w.is_multiple_of(s) && g.cout > 0);
    assert_eq!(img.len(), g.cin * (g.h / s) * (g.w / s));
    // Whole tile rows per task: about TILES tiles, fewer where the threads
    // would otherwise go idle. Each task reads all of `u` (36 cin cout
    // floats), so small images take as few tasks as there are threads.
    let threads = rayon::current_num_threads();
    let rows = (TILES / g.tw.max(1)).clamp(1, g.th.div_ceil(threads).max(1));
    let out = SendPtr(out.as_mut_ptr());
    if rows * g.tw < MIN_TASK_TILES && g.th * g.tw <= SMALL_TILES {
        return by_positions(level, img, upsample, u, bias, res, out, &g);
    }
    (0..g.th.div_ceil(rows)).into_par_iter().for_each(|task| {
        let ty = task * rows..((task + 1) * rows).min(g.th);
        SCRATCH.with_borrow_mut(|scratch| {
            simd::dispatch_at(
                level,
                Task {
                    img,
                    upsample,
                    u,
                    bias,
                    res,
                    out,
                    g: &g,
                    ty,
                    scratch,
                },
            )
        })
    });
}

/// Tiles below which a task's products are too narrow (24x24 images, 18
/// tiles per task on two threads: 32 GMAC/s against 70 at 96 tiles), and the
/// whole image is transformed at once and its 36 products shared out instead.
const MIN_TASK_TILES: usize = 48;

/// Tiles of the largest image that takes that path (its input transform
/// runs on one thread): 64 x 64 pixels.
const SMALL_TILES: usize = 256;

/// [`conv3x3`] of a small image: the input transform of every tile on the
/// calling thread, then one task per position (each reads its `U[p]` once,
/// where tile-row tasks each read all of `u`), then the output transform by
/// blocks of output channels.
#[allow(clippy::too_many_arguments)]
fn by_positions(
    level: Level,
    img: &[f32],
    upsample: bool,
    u: &[f32],
    bias: &[f32],
    res: Option<&[f32]>,
    out: SendPtr,
    g: &Grid,
) {
    let n = g.th * g.tw;
    let ld = n + SLACK;
    // The calling thread's scratch, taken out of its cell while the tasks
    // below run (they are handed slices of it).
    let mut scratch = SCRATCH.take();
    let lens = [
        36 * g.cin * ld,
        36 * g.cout * ld,
        g.cin * (4 * g.th + 2) * g.row,
        6 * g.row,
    ];
    if scratch.len() < lens.iter().sum() {
        scratch.resize(lens.iter().sum(), 0.0);
    }
    let (v, rest) = scratch.split_at_mut(lens[0]);
    let (m, rest) = rest.split_at_mut(lens[1]);
    let (x, rest) = rest.split_at_mut(lens[2]);
    let rows = &mut rest[..lens[3]];
    simd::dispatch_at(
        level,
        Input {
            img,
            upsample,
            x,
            v,
            rows,
            g,
            ty: 0..g.th,
            ld,
        },
    );
    m.par_chunks_exact_mut(g.cout * ld)
        .zip(u.par_chunks_exact(g.cin * g.cout))
        .zip(v.par_chunks_exact(g.cin * ld))
        .for_each(|((m, u), v)| product(g, u, v, m, n, ld));
    let m = &*m;
    let blocks = g.cout.div_ceil(OC_BLOCK);
    (0..blocks).into_par_iter().for_each(|blk| {
        let mut orows = vec![0f32; 4 * g.row];
        let cos = blk * OC_BLOCK..((blk + 1) * OC_BLOCK).min(g.cout);
        simd::dispatch_at(
            level,
            Output {
                m,
                orows: &mut orows,
                bias,
                res,
                out,
                g,
                ty: 0..g.th,
                cos,
                ld,
            },
        );
    });
    SCRATCH.set(scratch);
}

/// [`fill_rows`] and [`input_transform`] of tile rows `ty` as a kernel.
struct Input<'a> {
    img: &'a [f32],
    upsample: bool,
    x: &'a mut [f32],
    v: &'a mut [f32],
    rows: &'a mut [f32],
    g: &'a Grid,
    ty: Range<usize>,
    ld: usize,
}

impl Kernel for Input<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self {
            img,
            upsample,
            x,
            v,
            rows,
            g,
            ty,
            ld,
        } = self;
        if upsample {
            fill_rows::<2>(img, x, g, ty.clone());
        } else {
            fill_rows::<1>(img, x, g, ty.clone());
        }
        input_transform(s, x, v, rows, g, ty.len(), ld);
    }
}

/// [`output_transform`] of tile rows `ty` for output channels `cos` as a
/// kernel.
struct Output<'a> {
    m: &'a [f32],
    orows: &'a mut [f32],
    bias: &'a [f32],
    res: Option<&'a [f32]>,
    out: SendPtr,
    g: &'a Grid,
    ty: Range<usize>,
    cos: Range<usize>,
    ld: usize,
}

impl Kernel for Output<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self {
            m,
            orows,
            bias,
            res,
            out,
            g,
            ty,
            cos,
            ld,
        } = self;
        output_transform(s, m, orows, bias, res, out, g, ty, cos, ld);
    }
}

thread_local! {
    /// Each thread's transformed input and products, reused from call to call
    /// (grown as needed, never shrunk): at the VQ decoder's sizes about 10-17
    /// MB per worker thread and 12 MB on the calling thread (small images),
    /// next to its 36 MB of transformed weights (`with_weights`).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The tile rows `ty` of one image: input transform, 36 products, output
/// transform with bias and residual.
struct Task<'a> {
    img: &'a [f32],
    upsample: bool,
    u: &'a [f32],
    bias: &'a [f32],
    res: Option<&'a [f32]>,
    out: SendPtr,
    g: &'a Grid,
    ty: Range<usize>,
    scratch: &'a mut Vec<f32>,
}

impl Kernel for Task<'_> {
    type Output = ();
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) {
        let Self {
            img,
            upsample,
            u,
            bias,
            res,
            out,
            g,
            ty,
            scratch,
        } = self;
        let n = ty.len() * g.tw;
        let ld = n + SLACK;
        let (pv, pm) = (g.cin * ld, g.cout * ld);
        // Transformed input, products, the task's padded input rows, one
        // tile row's rows after Bᵀ and one output channel's four rows.
        let lens = [
            36 * pv,
            36 * pm,
            g.cin * (4 * ty.len() + 2) * g.row,
            6 * g.row,
            4 * g.row,
        ];
        let total: usize = lens.iter().sum();
        if scratch.len() < total {
            scratch.resize(total, 0.0);
        }
        let (v, rest) = scratch.split_at_mut(lens[0]);
        let (m, rest) = rest.split_at_mut(lens[1]);
        let (x, rest) = rest.split_at_mut(lens[2]);
        let (rows, rest) = rest.split_at_mut(lens[3]);
        let orows = &mut rest[..lens[4]];
        let input = Input {
            img,
            upsample,
            x,
            v,
            rows,
            g,
            ty: ty.clone(),
            ld,
        };
        input.run(s);
        let uv = u.chunks_exact(g.cin * g.cout).zip(v.chunks_exact(pv));
        for ((u, v), m) in uv.zip(m.chunks_exact_mut(pm)) {
            product(g, u, v, m, n, ld);
        }
        let output = Output {
            m,
            orows,
            bias,
            res,
            out,
            g,
            ty,
            cos: 0..g.cout,
            ld,
        };
        output.run(s);
    }
}

/// The padded rows `4 ty.start..4 ty.end + 2` of every channel of `img`
/// (enlarged `S`x by nearest neighbour) into `x`: `[cin, 4 len + 2, row]`.
#[inline(always)]
fn fill_rows<const S: usize>(img: &[f32], x: &mut [f32], g: &Grid, ty: Range<usize>) {
    let (h0, w0, row) = (g.h / S, g.w / S, g.row);
    let nrows = 4 * ty.len() + 2;
    for (c, x) in x.chunks_exact_mut(nrows * row).take(g.cin).enumerate() {
        for (i, dst) in x.chunks_exact_mut(row).enumerate() {
            // Padded row Y is image row Y - 1 (of the enlarged image).
            let y = (4 * ty.start + i).wrapping_sub(1);
            if y >= g.h {
                dst.fill(0.0);
                continue;
            }
            let src = &img[(c * h0 + y / S) * w0..][..w0];
            dst[0] = 0.0;
            for (d, v) in dst[1..=g.w].chunks_exact_mut(S).zip(src) {
                d.fill(*v);
            }
            dst[g.w + 1..].fill(0.0);
        }
    }
}

/// `V = Bᵀ d B` for every tile of the task's `len` tile rows in `x`
/// ([`fill_rows`]) and every channel, into `v` (position `p`, channel `c`,
/// tile `i` at `p · cin · ld + c · ld + i`). `rows` holds one tile row's six
/// rows after `Bᵀ`.
#[inline(always)]
fn input_transform<S: Lanes>(
    s: S,
    x: &[f32],
    v: &mut [f32],
    rows: &mut [f32],
    g: &Grid,
    len: usize,
    ld: usize,
) {
    let row = g.row;
    let (n, plane) = (len * g.tw, (4 * len + 2) * row);
    assert!(
        x.len() >= g.cin * plane
            && rows.len() >= 6 * row
            && v.len() >= 36 * g.cin * ld
            && row.is_multiple_of(S::N)
            && S::N <= 16
            && ld >= n + S::N
    );
    for c in 0..g.cin {
        for k in 0..len {
            // The tile row's six padded rows, 4k..4k + 6 of the task's.
            let d0 = c * plane + 4 * k * row;
            for e in (0..row).step_by(S::N) {
                // (Loops rather than closures throughout: a closure does not
                // inherit the level's target features, so the intrinsics in
                // it would become calls.)
                let mut d = [s.zero(); 6];
                for (i, d) in d.iter_mut().enumerate() {
                    // SAFETY: rows 4k..4k + 6 of channel c lie inside `x`
                    // (4 len + 2 rows), `e + N <= row`.
                    *d = unsafe { s.load(x.as_ptr().add(d0 + i * row + e)) };
                }
                for (i, o) in bt(s, d).into_iter().enumerate() {
                    // SAFETY: inside `rows` (6 rows).
                    unsafe { s.store(rows.as_mut_ptr().add(i * row + e), o) };
                }
            }
            for i in 0..6 {
                let r = &rows[i * row..(i + 1) * row];
                for t0 in (0..g.tw).step_by(S::N) {
                    // Columns 4t..4t + 6 of tiles t0..t0 + N: columns 4t +
                    // 0..4, then 4(t + 1) + 0..2. SAFETY: `4 (t0 + 1 + N) <=
                    // 4 tw.next_multiple_of(16) + 4 <= row`.
                    let [d0, d1, d2, d3] = unsafe { s.load4(r.as_ptr().add(4 * t0)) };
                    let [d4, d5, _, _] = unsafe { s.load4(r.as_ptr().add(4 * (t0 + 1))) };
                    let d = [d0, d1, d2, d3, d4, d5];
                    for (j, o) in bt(s, d).into_iter().enumerate() {
                        // A row's last vector runs past tile `tw - 1` into
                        // the next tile row's start (written after this one)
                        // or the slack. SAFETY: `k tw + t0 + N <= n + N <=
                        // ld`, inside position `6i + j`'s row for channel c.
                        let at = (6 * i + j) * g.cin * ld + c * ld + k * g.tw + t0;
                        unsafe { s.store(v.as_mut_ptr().add(at), o) };
                    }
                }
            }
        }
    }
}

/// One position's product `M[p] = U[p] V[p]` over `n` tiles: `u` is
/// `[cout, cin]` column-major, `v` `[cin, n]` and `m` `[cout, n]` row-major
/// with rows of `ld`.
fn product(g: &Grid, u: &[f32], v: &[f32], m: &mut [f32], n: usize, ld: usize) {
    assert!(
        n > 0
            && ld >= n
            && u.len() >= g.cin * g.cout
            && v.len() >= (g.cin - 1) * ld + n
            && m.len() >= (g.cout - 1) * ld + n
    );
    // SAFETY: the three matrices are inside their slices (asserted above).
    unsafe {
        gemm::gemm(
            g.cout,
            n,
            g.cin,
            m.as_mut_ptr(),
            1,
            ld as isize,
            false,
            u.as_ptr(),
            g.cout as isize,
            1,
            v.as_ptr(),
            1,
            ld as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `Y = Aᵀ M A` for every tile and the output channels `cos`, plus bias and
/// residual, into `out`. `orows` holds one channel's four output rows of a
/// tile row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn output_transform<S: Lanes>(
    s: S,
    m: &[f32],
    orows: &mut [f32],
    bias: &[f32],
    res: Option<&[f32]>,
    out: SendPtr,
    g: &Grid,
    ty: Range<usize>,
    cos: Range<usize>,
    ld: usize,
) {
    let n = ty.len() * g.tw;
    assert!(
        m.len() >= 36 * g.cout * ld
            && orows.len() >= 4 * g.row
            && ld >= n + S::N
            && cos.end <= g.cout
    );
    for co in cos {
        let b = bias[co];
        for (k, ty) in ty.clone().enumerate() {
            for t0 in (0..g.tw).step_by(S::N) {
                // Aᵀ along each row of the 6x6 tile, then down the columns.
                let mut z = [[s.zero(); 4]; 6];
                for (i, z) in z.iter_mut().enumerate() {
                    let mut row = [s.zero(); 6];
                    for (j, v) in row.iter_mut().enumerate() {
                        let at = (6 * i + j) * g.cout * ld + co * ld + k * g.tw + t0;
                        // SAFETY: position 6i + j's row for channel co holds
                        // `ld >= k tw + t0 + N` floats.
                        *v = unsafe { s.load(m.as_ptr().add(at)) };
                    }
                    *z = at_(s, row);
                }
                let mut y = [[s.zero(); 4]; 4];
                for q in 0..4 {
                    let mut col = [s.zero(); 6];
                    for (c, z) in col.iter_mut().zip(&z) {
                        *c = z[q];
                    }
                    for (r, v) in at_(s, col).into_iter().enumerate() {
                        y[r][q] = v;
                    }
                }
                for (r, y) in y.into_iter().enumerate() {
                    // Output columns 4t..4t + 4 of tiles t0..t0 + N. SAFETY:
                    // `4 (t0 + N) <= row`, inside row r.
                    unsafe { s.store4(orows.as_mut_ptr().add(r * g.row + 4 * t0), y) };
                }
            }
            for r in 0..4 {
                let y = 4 * ty + r;
                if y >= g.h {
                    break;
                }
                let at = (co * g.h + y) * g.w;
                // SAFETY: row y of channel co belongs to this task's tile
                // rows only; `at + w <= cout · h · w`.
                let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(at), g.w) };
                for (o, v) in dst.iter_mut().zip(&orows[r * g.row..]) {
                    *o = v + b;
                }
                if let Some(res) = res {
                    for (o, r) in dst.iter_mut().zip(&res[at..at + g.w]) {
                        *o += r;
                    }
                }
            }
        }
    }
}

/// `Bᵀ d` for six vectors of values.
#[inline(always)]
fn bt<S: Lanes>(s: S, [d0, d1, d2, d3, d4, d5]: [S::V; 6]) -> [S::V; 6] {
    let (two, four, m4, m5) = (s.splat(2.0), s.splat(4.0), s.splat(-4.0), s.splat(-5.0));
    let d4m2 = s.sub(d4, d2);
    [
        s.fma(four, d0, s.fma(m5, d2, d4)),
        s.fma(m4, s.add(d1, d2), s.add(d3, d4)),
        s.fma(four, s.sub(d1, d2), s.sub(d4, d3)),
        s.fma(two, s.sub(d3, d1), d4m2),
        s.fma(two, s.sub(d1, d3), d4m2),
        s.fma(four, d1, s.fma(m5, d3, d5)),
    ]
}

/// `Aᵀ m` for six vectors of values.
#[inline(always)]
fn at_<S: Lanes>(s: S, [m0, m1, m2, m3, m4, m5]: [S::V; 6]) -> [S::V; 4] {
    let (a, b) = (s.add(m1, m2), s.sub(m1, m2));
    let (c, e) = (s.add(m3, m4), s.sub(m3, m4));
    [
        s.add(m0, s.add(a, c)),
        s.fma(s.splat(2.0), e, b),
        s.fma(s.splat(4.0), c, a),
        s.add(s.fma(s.splat(8.0), e, b), m5),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct 3x3 pad-1 convolution in f64 (optionally of the 2x
    /// nearest-neighbour upsampled input).
    fn direct(x: &[f32], w: &[f32], b: &[f32], d: &Dims, upsample: bool) -> Vec<f64> {
        let s = if upsample { 2 } else { 1 };
        let (h0, w0) = (d.h / s, d.w / s);
        let mut out = vec![0f64; d.cout * d.h * d.w];
        for co in 0..d.cout {
            for y in 0..d.h {
                for xx in 0..d.w {
                    let mut acc = b[co] as f64;
                    for ci in 0..d.cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (y + ky, xx + kx);
                                if iy == 0 || ix == 0 || iy > d.h || ix > d.w {
                                    continue;
                                }
                                let v = x[(ci * h0 + (iy - 1) / s) * w0 + (ix - 1) / s];
                                acc += v as f64 * w[((co * d.cin + ci) * 3 + ky) * 3 + kx] as f64;
                            }
                        }
                    }
                    out[(co * d.h + y) * d.w + xx] = acc;
                }
            }
        }
        out
    }

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_a_direct_convolution_at_every_level_and_size() {
        // Sizes that are and are not multiples of 4, one tile, a residual,
        // upsampling, more channels than one vector. Small images take the
        // path by positions (fewer than MIN_TASK_TILES tiles per task), the
        // last three (at least 49 tiles per row) tasks of whole tile rows,
        // of several rows with one and three threads.
        let cases = [
            (3, 5, 8, 12, false, false),
            (4, 6, 9, 11, false, true),
            (5, 3, 1, 1, false, false),
            (2, 4, 6, 10, true, true),
            (33, 20, 5, 7, false, false),
            (3, 17, 160, 6, false, true),
            (3, 5, 8, 200, false, true),
            (2, 18, 47, 195, false, false),
            (2, 3, 24, 196, true, true),
        ];
        for threads in [1, 3, 16] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            pool.install(|| check_cases(&cases));
        }
    }

    fn check_cases(cases: &[(usize, usize, usize, usize, bool, bool)]) {
        for &level in Level::available() {
            for (i, &(cin, cout, h, w, upsample, with_res)) in cases.iter().enumerate() {
                let d = Dims { cin, cout, h, w };
                let s = if upsample { 2 } else { 1 };
                let x = values(cin * (h / s) * (w / s), 3 * i as u64);
                let wt = values(cout * cin * 9, 3 * i as u64 + 1);
                let b = values(cout, 3 * i as u64 + 2);
                let r = values(cout * h * w, 7);
                let res = with_res.then_some(&r[..]);
                let mut u = Vec::new();
                transform_weights_at(level, &wt, cout, cin, &mut u);
                let mut out = vec![f32::NAN; cout * h * w];
                conv3x3(level, &x, upsample, &u, &b, res, &mut out, &d);
                let want = direct(&x, &wt, &b, &d, upsample);
                let mut worst = 0f64;
                for (j, (o, w)) in out.iter().zip(&want).enumerate() {
                    let w = w + if with_res { r[j] as f64 } else { 0.0 };
                    worst = worst.max((*o as f64 - w).abs());
                }
                // Values of at most ~9 cin in magnitude; f32 transforms.
                let limit = 2e-6 * (9 * cin) as f64;
                assert!(
                    worst < limit,
                    "{level:?} case {i} ({cin}->{cout}, {h}x{w}, {} threads): off by {worst} \
                     (limit {limit})",
                    rayon::current_num_threads()
                );
            }
        }
    }
}
