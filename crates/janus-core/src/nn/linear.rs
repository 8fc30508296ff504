use burn::prelude::*;

use crate::error::Result;
use crate::weights::Weights;

/// A dense layer with the weight kept in PyTorch's `[out, in]` layout (no transpose
/// is materialised at load; the matmul reads a transposed view).
#[derive(Debug, Clone)]
pub struct Linear<B: Backend> {
    /// `[out, in]`.
    pub weight: Tensor<B, 2>,
    /// `[out]`.
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    /// Loads `{prefix}.weight` `[out, in]` and, if `bias`, `{prefix}.bias` `[out]`.
    pub fn load(
        w: &Weights<B>,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.tensor(&format!("{prefix}.weight"), [d_out, d_in])?,
            bias: if bias {
                Some(w.tensor(&format!("{prefix}.bias"), [d_out])?)
            } else {
                None
            },
        })
    }

    /// Output features.
    pub fn d_out(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `y = x W^T + b` over the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let y = x
            .reshape([rows, d_in])
            .matmul(self.weight.clone().transpose());
        let y = match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        };
        dims[D - 1] = self.d_out();
        y.reshape(dims)
    }
}
