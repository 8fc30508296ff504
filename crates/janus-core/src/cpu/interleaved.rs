//! [`Interleaved`]: a [`QuantMatrix`] rearranged for the CPU block kernel, with
//! the weight rows of each group of [`GROUP`] side by side, so that the lanes
//! of one vector hold one block of many weight rows (llama.cpp's "repacked"
//! q4_0 layouts follow the same idea).
//!
//! Rows go in groups of 16 (the last group padded with zero rows). Per group
//! and block of 32 columns:
//! - 16 f16 scales, row by row;
//! - the values in chunks of 64 bytes, four bytes per row: chunk `c`, row `r`
//!   holds bytes `4c..4c + 4` of row `r`'s block as [`QuantMatrix`] stores it
//!   (q8_0: weights `4c..4c + 4`; q4_0: weights `4c..4c + 4` in the low halves
//!   and `16 + 4c..16 + 4c + 4` in the high halves). q8_0 blocks are 8 chunks,
//!   q4_0 blocks 4.
//!
//! A 16-lane vector (AVX-512) loads one chunk for all 16 rows; 8 lanes (AVX2)
//! half a chunk, 4 (NEON) a quarter. The block kernel then multiplies each
//! chunk by four x values broadcast to every lane, and one scale multiply
//! serves 16 rows: about half the instructions per weight row of the
//! row-by-row layout, which two- and eight-row products need (the q4_0
//! kernel's rate: docs/benchmarks.md). Checkpoints and the device path keep the
//! row-major [`QuantMatrix`]; this layout is made at load, in host memory only.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use crate::quant::{BLOCK, QuantFormat, QuantMatrix, dequantize_block};

/// Weight rows per group.
pub(crate) const GROUP: usize = 16;

/// Bytes per chunk: four bytes of each row of a group.
pub(crate) const CHUNK: usize = 4 * GROUP;

/// A quantized `[rows, cols]` matrix in the interleaved layout (see the
/// module docs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Interleaved {
    format: QuantFormat,
    rows: usize,
    cols: usize,
    /// `[groups, cols / 32, 16]`.
    scales: Vec<f16>,
    /// `[groups, cols / 32, chunks, 16, 4]`.
    qs: Vec<u8>,
}

impl Interleaved {
    /// `q` rearranged (groups in parallel); `q` is dropped, so a loader never
    /// holds a model's weights twice.
    pub(crate) fn new(q: QuantMatrix) -> Self {
        let (format, rows, cols) = (q.format(), q.rows(), q.cols());
        let (nb, bb) = (cols / BLOCK, format.block_bytes());
        let groups = rows.div_ceil(GROUP);
        let mut scales = vec![f16::ZERO; groups * nb * GROUP];
        let mut qs = vec![0u8; groups * nb * GROUP * bb];
        scales
            .par_chunks_mut(nb * GROUP)
            .zip(qs.par_chunks_mut(nb * GROUP * bb))
            .enumerate()
            .for_each(|(g, (scales, qs))| {
                for r in 0..GROUP.min(rows - g * GROUP) {
                    let row = g * GROUP + r;
                    let src_scales = &q.scales()[row * nb..(row + 1) * nb];
                    let src = &q.qs()[row * nb * bb..(row + 1) * nb * bb];
                    for (b, block) in src.chunks_exact(bb).enumerate() {
                        scales[b * GROUP + r] = src_scales[b];
                        for (c, word) in block.chunks_exact(4).enumerate() {
                            let at = b * GROUP * bb + c * CHUNK + 4 * r;
                            qs[at..at + 4].copy_from_slice(word);
                        }
                    }
                }
            });
        Self {
            format,
            rows,
            cols,
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

    /// Bytes held (values and scales, padding rows included).
    pub(crate) fn bytes(&self) -> usize {
        self.qs.len() + 2 * self.scales.len()
    }

    /// Group `g`'s scales, `[cols / 32, 16]`.
    pub(crate) fn group_scales(&self, g: usize) -> &[f16] {
        let n = self.cols / BLOCK * GROUP;
        &self.scales[g * n..(g + 1) * n]
    }

    /// Group `g`'s values, `[cols / 32, chunks, 16, 4]`.
    pub(crate) fn group_qs(&self, g: usize) -> &[u8] {
        let n = self.cols / BLOCK * GROUP * self.format.block_bytes();
        &self.qs[g * n..(g + 1) * n]
    }

    /// Writes rows `rows` as f32 into `out` (`rows.len() * cols` values), in
    /// parallel.
    pub(crate) fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        // About 64 KB of output per task.
        let per_task = (16384 / self.cols).max(1);
        out[..rows.len() * self.cols]
            .par_chunks_mut(per_task * self.cols)
            .enumerate()
            .for_each(|(i, out)| {
                let r0 = rows.start + i * per_task;
                self.dequantize_rows_here(r0..r0 + out.len() / self.cols, out);
            });
    }

    /// [`Interleaved::dequantize_rows`] on the calling thread.
    pub(crate) fn dequantize_rows_here(&self, rows: Range<usize>, out: &mut [f32]) {
        let (k, nb, bb) = (self.cols, self.cols / BLOCK, self.format.block_bytes());
        let mut block = [0u8; BLOCK];
        for (row, out) in rows.zip(out.chunks_exact_mut(k)) {
            let (g, r) = (row / GROUP, row % GROUP);
            let (scales, qs) = (self.group_scales(g), self.group_qs(g));
            for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
                for c in 0..bb / 4 {
                    let at = b * GROUP * bb + c * CHUNK + 4 * r;
                    block[4 * c..4 * c + 4].copy_from_slice(&qs[at..at + 4]);
                }
                let d = scales[b * GROUP + r].to_f32();
                dequantize_block(self.format, d, &block[..bb], out);
            }
            debug_assert_eq!(out.len(), nb * BLOCK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_as_the_row_major_matrix_has_them() {
        // 37 rows: two whole groups and a padded one.
        for format in QuantFormat::ALL {
            let (n, k) = (37, 96);
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
                .collect();
            let q = QuantMatrix::quantize(format, n, k, &w).unwrap();
            let mut want = vec![0f32; n * k];
            q.dequantize_rows(0..n, &mut want);
            let (bb, scales, qs) = (format.block_bytes(), q.scales().to_vec(), q.qs().to_vec());
            let p = Interleaved::new(q);
            assert_eq!((p.rows(), p.cols(), p.format()), (n, k, format));
            assert_eq!(p.bytes(), 48 * 3 * (bb + 2));
            // Row 17, block 2: the second group's row 1.
            assert_eq!(p.group_scales(1)[2 * GROUP + 1], scales[17 * 3 + 2]);
            let at = 2 * GROUP * bb + CHUNK + 4;
            assert_eq!(
                p.group_qs(1)[at..at + 4],
                qs[(17 * 3 + 2) * bb + 4..(17 * 3 + 2) * bb + 8]
            );
            // Padding rows are zero.
            assert!(p.group_scales(2)[5..GROUP].iter().all(|d| *d == f16::ZERO));
            let mut got = vec![0f32; n * k];
            p.dequantize_rows(0..n, &mut got);
            assert_eq!(got, want, "{format}");
            let mut part = vec![0f32; 3 * k];
            p.dequantize_rows_here(15..18, &mut part);
            assert_eq!(part, want[15 * k..18 * k], "{format}");
        }
    }
}
