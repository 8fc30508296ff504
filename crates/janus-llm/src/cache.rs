//! The key/value cache of a generation session, with the per-row padding mask.

use burn::prelude::*;
use janus_core::nn::write_rows;

/// Keys and values of every layer for a batch, preallocated and filled in place,
/// plus which positions of each row are real tokens (left padding is `false`).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    batch: usize,
    len: usize,
    capacity: usize,
    keep: Vec<Vec<bool>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` layers and `batch` rows; `capacity` positions are
    /// allocated on first use (it grows if a longer sequence arrives).
    pub fn new(layers: usize, batch: usize, capacity: usize) -> Self {
        Self {
            layers: vec![None; layers],
            batch,
            len: 0,
            capacity: capacity.max(1),
            keep: vec![Vec::new(); batch],
        }
    }

    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether any cached position is padding.
    pub fn has_padding(&self) -> bool {
        self.keep.iter().any(|row| row.iter().any(|k| !k))
    }

    /// Per row: `true` for real tokens.
    pub fn real_tokens(&self) -> &[Vec<bool>] {
        &self.keep
    }

    /// Records the padding flags of `t` new positions (`batch * t`, row-major) and
    /// returns their HF position ids: `cumsum(mask) - 1`, with padding at 1.
    pub(crate) fn push_positions(&mut self, flags: &[bool], t: usize) -> Vec<i64> {
        let mut positions = Vec::with_capacity(flags.len());
        for (row, chunk) in self.keep.iter_mut().zip(flags.chunks(t)) {
            let mut seen = row.iter().filter(|k| **k).count() as i64;
            for &k in chunk {
                seen += k as i64;
                positions.push(if k { seen - 1 } else { 1 });
            }
            row.extend_from_slice(chunk);
        }
        positions
    }

    /// Writes `k`/`v` `[B, H, T, D]` of `layer` after the cached positions and returns
    /// the whole cache buffers `[B, H, capacity, D]` of that layer (the first
    /// `len() + T` positions are valid).
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, t, d] = k.dims();
        let end = self.len + t;
        let slot = &mut self.layers[layer];
        let (ck, cv) = match slot.take() {
            Some((ck, cv)) if ck.dims()[2] >= end => (ck, cv),
            old => {
                let cap = end
                    .max(self.capacity)
                    .max(old.as_ref().map_or(0, |(c, _)| 2 * c.dims()[2]));
                self.capacity = cap;
                let ck = Tensor::zeros([b, h, cap, d], (&k.device(), k.dtype()));
                let cv = Tensor::zeros([b, h, cap, d], (&v.device(), v.dtype()));
                match old {
                    Some((ok, ov)) if self.len > 0 => (
                        write_rows(ck, ok.slice([0..b, 0..h, 0..self.len, 0..d]), 0),
                        write_rows(cv, ov.slice([0..b, 0..h, 0..self.len, 0..d]), 0),
                    ),
                    _ => (ck, cv),
                }
            }
        };
        let ck = write_rows(ck, k, self.len);
        let cv = write_rows(cv, v, self.len);
        *slot = Some((ck.clone(), cv.clone()));
        (ck, cv)
    }

    /// Keeps only the rows `rows` (in that order), dropping the others: a batch
    /// member that is cancelled stops costing compute.
    ///
    /// # Panics
    /// If a row is out of range.
    pub fn retain_rows(&mut self, rows: &[usize]) {
        assert!(rows.iter().all(|r| *r < self.batch), "row out of range");
        let keep: Vec<Vec<bool>> = rows.iter().map(|r| self.keep[*r].clone()).collect();
        for slot in self.layers.iter_mut() {
            if let Some((k, v)) = slot.take() {
                let device = k.device();
                let index: Vec<i64> = rows.iter().map(|r| *r as i64).collect();
                let index = Tensor::<B, 1, Int>::from_data(
                    burn::tensor::TensorData::new(index, [rows.len()]),
                    &device,
                );
                *slot = Some((k.select(0, index.clone()), v.select(0, index)));
            }
        }
        self.keep = keep;
        self.batch = rows.len();
    }

    /// Appends the rows of `other` after this cache's rows. The one with fewer
    /// positions is left-padded (masked) to the other's length, so all rows go
    /// on together; each row's positions still count only its real tokens.
    ///
    /// # Panics
    /// If the caches differ in layers or one of them has not run yet.
    pub fn append_rows(&mut self, other: KvCache<B>) {
        assert_eq!(self.layers.len(), other.layers.len(), "layer counts differ");
        let len = self.len.max(other.len);
        let room = (self.capacity - self.len).max(other.capacity - other.len);
        let cap = len + room.max(1);
        let pad = |t: Tensor<B, 4>, used: usize| {
            let [b, h, _, d] = t.dims();
            let out = Tensor::zeros([b, h, cap, d], (&t.device(), t.dtype()));
            write_rows(out, t.slice([0..b, 0..h, 0..used, 0..d]), len - used)
        };
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            let ((ka, va), (kb, vb)) = mine
                .take()
                .zip(theirs)
                .expect("both caches must have run every layer");
            *mine = Some((
                Tensor::cat(vec![pad(ka, self.len), pad(kb, other.len)], 0),
                Tensor::cat(vec![pad(va, self.len), pad(vb, other.len)], 0),
            ));
        }
        let mut keep = Vec::with_capacity(self.batch + other.batch);
        for (rows, used) in [(&self.keep, self.len), (&other.keep, other.len)] {
            for row in rows {
                let mut r = vec![false; len - used];
                r.extend_from_slice(row);
                keep.push(r);
            }
        }
        self.keep = keep;
        self.batch += other.batch;
        self.len = len;
        self.capacity = cap;
    }

    /// Marks `t` positions as written (after every layer has appended them).
    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
