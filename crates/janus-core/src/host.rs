//! Tensors read back to the host, and host values made into tensors.

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use half::{bf16, f16};

/// The row-major values of `t` as f32 (any float dtype; a host copy). f16 and
/// bf16 values widen a slice at a time (vectorised), not value by value.
pub fn to_f32_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    let t = match crate::cpu::to_flex(t) {
        Ok(f) => match crate::cpu::flex_f32(&f) {
            Some(v) => return v,
            None => crate::cpu::from_flex(f),
        },
        Err(t) => t,
    };
    let data = t.into_data();
    match data.dtype {
        DType::F16 => {
            if let Ok(h) = data.as_slice::<f16>() {
                let mut out = vec![0f32; h.len()];
                crate::cpu::widen(h, &mut out);
                return out;
            }
        }
        DType::BF16 => {
            if let Ok(h) = data.as_slice::<bf16>() {
                let mut out = vec![0f32; h.len()];
                crate::cpu::widen(h, &mut out);
                return out;
            }
        }
        _ => {}
    }
    data.convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

/// A tensor of `dtype` from row-major f32 `values` (rounded to nearest, a
/// slice at a time for f16 and bf16).
pub(crate) fn from_f32_vec<B: Backend, const D: usize>(
    values: Vec<f32>,
    dims: [usize; D],
    device: &B::Device,
    dtype: DType,
) -> Tensor<B, D> {
    let data = match dtype {
        DType::F16 => {
            let mut h = vec![f16::ZERO; values.len()];
            crate::cpu::narrow(&values, &mut h);
            TensorData::new(h, dims)
        }
        DType::BF16 => {
            let mut h = vec![bf16::ZERO; values.len()];
            crate::cpu::narrow(&values, &mut h);
            TensorData::new(h, dims)
        }
        _ => TensorData::new(values, dims),
    };
    Tensor::from_data(data, (device, dtype))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;

    #[test]
    fn conversions_round_like_the_element_conversions() {
        let dev = Default::default();
        // Values between representable 16-bit numbers, ties, and extremes.
        let v: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.731).sin() * 10f32.powi(i % 9 - 4))
            .chain([
                0.0,
                -0.0,
                65504.0,
                70000.0,
                1e-8,
                f32::MAX,
                1.0 + 1.0 / 2048.0,
            ])
            .collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let n = v.len();
            let fast = from_f32_vec::<Flex, 1>(v.clone(), [n], &dev, dtype);
            let slow = Tensor::<Flex, 1>::from_data(TensorData::new(v.clone(), [n]), (&dev, dtype));
            assert_eq!(fast.dtype(), dtype);
            let (a, b) = (
                to_f32_vec(fast),
                slow.into_data().convert::<f32>().into_vec::<f32>().unwrap(),
            );
            assert_eq!(a.len(), n);
            for (x, y) in a.iter().zip(&b) {
                assert!(x.to_bits() == y.to_bits(), "{dtype:?}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn strided_views_read_like_burns_copy() {
        let dev = Default::default();
        let v: Vec<f32> = (0..2 * 3 * 5 * 16)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let t = Tensor::<Flex, 4>::from_data(
                TensorData::new(v.clone(), [2, 3, 5, 16]),
                (&dev, dtype),
            );
            let views = [
                t.clone(),
                t.clone().swap_dims(1, 2),
                t.clone().narrow(2, 1, 3).narrow(3, 4, 9),
                t.clone().permute([2, 0, 1, 3]),
                // Last dimension not contiguous, and one too short: Burn's copy.
                t.clone().swap_dims(2, 3),
                t.clone().narrow(3, 0, 4),
            ];
            for (i, view) in views.into_iter().enumerate() {
                let want = view
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap();
                assert_eq!(to_f32_vec(view), want, "{dtype:?} view {i}");
            }
        }
    }
}
