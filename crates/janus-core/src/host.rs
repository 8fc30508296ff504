//! Tensors read back to the host.

use burn::prelude::*;

/// The row-major values of `t` as f32 (any float dtype; a host copy).
pub fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32")
}
