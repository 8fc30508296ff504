//! The machine's memory read bandwidth, read the way the few-row kernels read
//! weights: several rows' streams at once per thread, vector loads at the
//! kernels' SIMD level, and an L2 prefetch a few KiB ahead of each stream
//! ([`Lanes::prefetch_l2`]). A plain one-stream sum reads a quarter to a
//! third less on a Sapphire Rapids VM (20 against 26-30 GB/s at two threads), so the kernels'
//! own weight reads came out above "the wall" (up to 144 %).

use std::time::Instant;

use super::simd::{self, Kernel, Lanes, Level};

/// Floats in one 64-byte cache line.
const LINE: usize = 16;
/// Streams each thread walks side by side (four or more read alike).
const STREAMS: usize = 4;
/// How far ahead of each stream's reads the prefetch goes, in floats (4 KiB:
/// 1-8 KiB read alike; no prefetch reads ~15 % less).
const AHEAD: usize = 1024;

/// Bytes the probe reads per pass (far above any cache).
const PROBE_BYTES: usize = 1 << 30;
/// Timed passes after an untimed one. On a shared VM single passes varied from
/// 23 to 30 GB/s, the first ones after the buffer is written slowest; the best
/// of twelve was 29.8-30.1 GB/s in four runs, where the first three passes'
/// best ranged 28.1-29.9.
const PASSES: usize = 8;

/// The machine's memory read bandwidth in bytes per second: the best of
/// eight passes (after one untimed) of `threads` threads (at least one)
/// reading disjoint parts of a 1 GiB buffer, at the SIMD level the kernels use
/// ([`simd::level`]). Takes about half a second.
pub fn probe_read_bandwidth(threads: usize) -> f64 {
    let buf = vec![1f32; PROBE_BYTES / 4];
    read_all(simd::level(), &buf, threads);
    (0..PASSES)
        .map(|_| {
            let t = Instant::now();
            let (_, bytes) = read_all(simd::level(), &buf, threads);
            bytes as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Sums what `threads` threads read of `buf` at `level`: the sum of the values
/// read and the bytes read (whole lines of every stream; a tail shorter than
/// `threads · STREAMS` lines is left unread).
fn read_all(level: Level, buf: &[f32], threads: usize) -> (f32, usize) {
    let threads = threads.max(1);
    let lines = buf.len() / LINE / (threads * STREAMS);
    let part = lines * LINE * STREAMS;
    if part == 0 {
        return (0.0, 0);
    }
    let sum = std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks_exact(part)
            .take(threads)
            .map(|x| s.spawn(move || simd::dispatch_at(level, Streams { x, lines })))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(f32::NAN))
            .sum::<f32>()
    });
    (std::hint::black_box(sum), threads * part * 4)
}

/// One thread's part: `STREAMS` equal runs of `lines` cache lines, read in
/// lockstep.
struct Streams<'a> {
    x: &'a [f32],
    lines: usize,
}

impl Kernel for Streams<'_> {
    type Output = f32;
    #[inline(always)]
    fn run<S: Lanes>(self, s: S) -> f32 {
        let Self { x, lines } = self;
        let len = lines * LINE;
        assert!(x.len() >= STREAMS * len && LINE.is_multiple_of(S::N));
        let mut acc = [s.zero(); STREAMS];
        for line in 0..lines {
            for (j, a) in acc.iter_mut().enumerate() {
                let at = j * len + line * LINE;
                // Past the stream's end only the prefetch goes (a hint that never faults).
                s.prefetch_l2(x.as_ptr().wrapping_add(at + AHEAD));
                for v in (0..LINE).step_by(S::N) {
                    // SAFETY: `at + LINE <= STREAMS * len <= x.len()` (asserted).
                    *a = s.add(*a, unsafe { s.load(x.as_ptr().add(at + v)) });
                }
            }
        }
        acc.iter().map(|&a| s.reduce_sum(a)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level reads every value of whole streams and no other: the sum of
    /// a buffer of ones equals the count of floats read, which is the buffer
    /// less its tail.
    #[test]
    fn reads_every_line_of_every_stream_at_every_level() {
        // 1000 lines and a few floats: three threads of four streams read
        // 83 lines each, 4 lines and the floats are left over.
        let buf = vec![1f32; 1000 * LINE + 5];
        for &level in Level::available() {
            for threads in [1, 2, 3] {
                let (sum, bytes) = read_all(level, &buf, threads);
                let lines = 1000 / (threads * STREAMS) * threads * STREAMS;
                assert_eq!(bytes, lines * LINE * 4, "{level} {threads}");
                assert_eq!(sum, (lines * LINE) as f32, "{level} {threads}");
            }
        }
        assert_eq!(read_all(Level::Scalar, &buf[..LINE], 1), (0.0, 0));
    }
}
