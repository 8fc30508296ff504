//! [`Embedding`]: a lookup table.

use burn::prelude::*;

use crate::error::Result;
use crate::weights::Weights;

/// A lookup table `[rows, dim]`.
#[derive(Debug, Clone)]
pub struct Embedding<B: Backend> {
    /// `[rows, dim]`.
    pub weight: Tensor<B, 2>,
}

impl<B: Backend> Embedding<B> {
    /// Loads `weight` `[rows, dim]`.
    pub fn load(w: &Weights<B>, rows: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [rows, dim])?,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `[B, T]` ids to `[B, T, dim]` vectors. Ids must be below [`Self::rows`].
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        let dim = self.weight.dims()[1];
        self.weight
            .clone()
            .select(0, ids.reshape([b * t]))
            .reshape([b, t, dim])
    }
}
