use burn::prelude::*;

use super::{Linear, gelu};
use crate::error::Result;
use crate::weights::Weights;

/// `Linear -> exact GELU -> Linear`, both with bias: the ViT MLP, the `mlp_gelu`
/// aligners and the generation head all have this shape.
#[derive(Debug, Clone)]
pub struct GeluMlp<B: Backend> {
    /// First layer.
    pub fc1: Linear<B>,
    /// Second layer.
    pub fc2: Linear<B>,
}

impl<B: Backend> GeluMlp<B> {
    /// Loads the two layers from `{fc1}.*` and `{fc2}.*`.
    pub fn load(
        w: &Weights<B>,
        fc1: &str,
        fc2: &str,
        d_in: usize,
        d_hidden: usize,
        d_out: usize,
    ) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(w, fc1, d_in, d_hidden, true)?,
            fc2: Linear::load(w, fc2, d_hidden, d_out, true)?,
        })
    }

    /// Both layers for inputs of many rows ([`Linear::for_many_rows`]).
    pub fn for_many_rows(self) -> Self {
        Self {
            fc1: self.fc1.for_many_rows(),
            fc2: self.fc2.for_many_rows(),
        }
    }

    /// `fc2(gelu(fc1(x)))`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}
