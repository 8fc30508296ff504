//! [`Interleaved`]: a [`QuantMatrix`] rearranged for the CPU block kernel, with
//! the weight rows of each group side by side, so that the lanes of one vector
//! hold one block of many weight rows (llama.cpp's "repacked" q4_0 layouts
//! follow the same idea).
//!
//! Rows go in groups of `G`, the lanes of the SIMD level the kernel runs at
//! (16 at AVX-512, 8 at AVX2 and the portable level, 4 on NEON), the last group
//! padded with zero rows. Per group and block of 32 columns:
//! - `G` f16 scales, row by row;
//! - the values in chunks of `4·G` bytes, four bytes per row: chunk `c`, row
//!   `r` holds bytes `4c..4c + 4` of row `r`'s block as [`QuantMatrix`] stores
//!   it (q8_0: weights `4c..4c + 4`; q4_0: weights `4c..4c + 4` in the low
//!   halves and `16 + 4c..16 + 4c + 4` in the high halves). q8_0 blocks are 8
//!   chunks, q4_0 blocks 4.
//!
//! One vector load is one chunk of a group. The block kernel multiplies each
//! chunk by four x values broadcast to every lane, and one scale multiply
//! serves `G` rows: about half the instructions per weight row of the
//! row-by-row layout, which two- and eight-row products need (the q4_0
//! kernel's rate: docs/benchmarks.md); each group's blocks are one stream read
//! once. Checkpoints and the device path keep the row-major [`QuantMatrix`];
//! this layout is made at load, in host memory only.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use crate::quant::{BLOCK, QuantFormat, QuantMatrix, dequantize_block, par_rows};

/// A quantized `[rows, cols]` matrix in the interleaved layout (see the
/// module docs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Interleaved {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    /// Rows per group (`G`).
    group: usize,
    /// `[groups, cols / 32, G]`.
    scales: Vec<f16>,
    /// `[groups, cols / 32, chunks, G, 4]`.
    qs: Vec<u8>,
}

impl Interleaved {
    /// `q` rearranged in groups of `group` rows (a power of two up to 16: the
    /// lanes of the level the kernel runs at, [`super::simd::Level::lanes`]),
    /// groups in parallel; `q` is dropped, so a loader never holds a model's
    /// weights twice.
    pub(crate) fn new(q: QuantMatrix, group: usize) -> Self {
        assert!(
            group.is_power_of_two() && group <= 16,
            "{group} rows per group"
        );
        let (format, rows, cols) = (q.format(), q.rows(), q.cols());
        let (nb, bb) = (cols / BLOCK, format.block_bytes());
        let chunk = 4 * group;
        let groups = rows.div_ceil(group);
        let mut scales = vec![f16::ZERO; groups * nb * group];
        let mut qs = vec![0u8; groups * nb * group * bb];
        scales
            .par_chunks_mut(nb * group)
            .zip(qs.par_chunks_mut(nb * group * bb))
            .enumerate()
            .for_each(|(g, (scales, qs))| {
                for r in 0..group.min(rows - g * group) {
                    let row = g * group + r;
                    let src_scales = &q.scales()[row * nb..(row + 1) * nb];
                    let src = &q.qs()[row * nb * bb..(row + 1) * nb * bb];
                    for (b, block) in src.chunks_exact(bb).enumerate() {
                        scales[b * group + r] = src_scales[b];
                        for (c, word) in block.chunks_exact(4).enumerate() {
                            let at = b * group * bb + c * chunk + 4 * r;
                            qs[at..at + 4].copy_from_slice(word);
                        }
                    }
                }
            });
        Self {
            format,
            rows,
            cols,
            group,
            scales,
            qs,
        }
    }

    pub(crate) fn format(&self) -> QuantFormat {
        self.format
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Rows per group.
    pub(crate) fn group(&self) -> usize {
        self.group
    }

    /// Bytes held (values and scales, padding rows included).
    pub(crate) fn bytes(&self) -> usize {
        self.qs.len() + 2 * self.scales.len()
    }

    /// Group `g`'s scales, `[cols / 32, G]`.
    pub(crate) fn group_scales(&self, g: usize) -> &[f16] {
        let n = self.cols / BLOCK * self.group;
        &self.scales[g * n..(g + 1) * n]
    }

    /// Group `g`'s values, `[cols / 32, chunks, G, 4]`.
    pub(crate) fn group_qs(&self, g: usize) -> &[u8] {
        let n = self.cols / BLOCK * self.group * self.format.block_bytes();
        &self.qs[g * n..(g + 1) * n]
    }

    /// Writes rows `rows` as f32 into `out` (`rows.len() * cols` values), in
    /// parallel.
    pub(crate) fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        par_rows(rows, self.cols, out, |rows, out| {
            self.dequantize_rows_here(rows, out)
        });
    }

    /// [`Interleaved::dequantize_rows`] on the calling thread.
    pub(crate) fn dequantize_rows_here(&self, rows: Range<usize>, out: &mut [f32]) {
        let (k, bb, group) = (self.cols, self.format.block_bytes(), self.group);
        let mut block = [0u8; BLOCK];
        for (row, out) in rows.zip(out.chunks_exact_mut(k)) {
            let (g, r) = (row / group, row % group);
            let (scales, qs) = (self.group_scales(g), self.group_qs(g));
            for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
                for c in 0..bb / 4 {
                    let at = b * group * bb + c * 4 * group + 4 * r;
                    block[4 * c..4 * c + 4].copy_from_slice(&qs[at..at + 4]);
                }
                let d = scales[b * group + r].to_f32();
                dequantize_block(self.format, d, &block[..bb], out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_as_the_row_major_matrix_has_them() {
        // 37 rows: whole groups and a padded one at every group size.
        for format in QuantFormat::ALL {
            let (n, k) = (37, 96);
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
                .collect();
            let q = QuantMatrix::quantize(format, n, k, &w).unwrap();
            let mut want = vec![0f32; n * k];
            q.dequantize_rows(0..n, &mut want);
            let bb = format.block_bytes();
            for group in [4, 8, 16] {
                let p = Interleaved::new(q.clone(), group);
                assert_eq!((p.rows(), p.cols(), p.format()), (n, k, format));
                assert_eq!(p.bytes(), 37usize.next_multiple_of(group) * 3 * (bb + 2));
                // Row 17, block 2: row 17 % G of group 17 / G; its bytes 4..8
                // are chunk 1.
                let (g, r) = (17 / group, 17 % group);
                assert_eq!(p.group_scales(g)[2 * group + r], q.scales()[17 * 3 + 2]);
                let at = 2 * group * bb + 4 * group + 4 * r;
                assert_eq!(
                    p.group_qs(g)[at..at + 4],
                    q.qs()[(17 * 3 + 2) * bb + 4..(17 * 3 + 2) * bb + 8]
                );
                // Padding rows are zero.
                let last = 36 / group;
                assert!(
                    p.group_scales(last)[36 % group + 1..group]
                        .iter()
                        .all(|d| *d == f16::ZERO)
                );
                let mut got = vec![0f32; n * k];
                p.dequantize_rows(0..n, &mut got);
                assert_eq!(got, want, "{format} in groups of {group}");
                let mut part = vec![0f32; 3 * k];
                p.dequantize_rows_here(15..18, &mut part);
                assert_eq!(part, want[15 * k..18 * k], "{format} in groups of {group}");
            }
        }
    }
}
