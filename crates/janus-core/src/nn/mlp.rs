//! [`GeluMlp`]: `Linear -> GELU -> Linear`.

use burn::prelude::*;

use super::{Linear, gelu};

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
    /// The block of two layers (each checkpoint names them differently).
    pub fn new(fc1: Linear<B>, fc2: Linear<B>) -> Self {
        Self { fc1, fc2 }
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
