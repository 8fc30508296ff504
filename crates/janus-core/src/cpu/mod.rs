//! Fast paths for the CPU backend (burn-flex) where Burn's generic ops are the
//! bottleneck: multiplying a few rows by a large weight (decode and
//! image-generation steps), 3x3 convolutions without im2col and GroupNorm+SiLU
//! in two passes (VQ decoder), and the
//! KV-cache kernels. Only the layers of [`crate::nn`] call them: each entry point
//! returns `None` (or gives its inputs back) on other backends or layouts it does
//! not cover, and the layer then runs Burn's generic ops, so callers stay
//! backend-generic.

mod attention;
#[cfg(target_arch = "x86_64")]
mod bf16_gemm;
mod cached;
mod conv;
mod elementwise;
mod interleaved;
mod many;
mod norm;
mod probe;
mod rows;
pub(crate) mod simd;
mod vmath;
mod winograd;

use std::any::Any;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};
use half::{bf16, f16};
use rayon::prelude::*;

pub(crate) use attention::attention;
pub(crate) use cached::{attend_cached, write_rows};
pub(crate) use conv::conv2d;
pub(crate) use elementwise::{add, layer_norm, rms_norm, rope, silu_mul};
pub(crate) use interleaved::Interleaved;
pub(crate) use many::{Weight, linear_many, product_tensor};
pub(crate) use norm::group_norm;
pub use probe::probe_read_bandwidth;
pub use rows::has_bf16_dot;
#[cfg(test)]
pub(crate) use rows::reference_q8;
pub(crate) use rows::{MAX_ROWS, linear_rows, quant_rows, quant_takes};
pub(crate) use simd::{narrow, widen};
pub(crate) use vmath::gelu;

/// Whether `B` is the burn-flex CPU backend.
pub fn is_flex<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<Flex>()
}

/// The flex primitive behind `t`, or `t` back when `B` is another backend.
pub(crate) fn to_flex<B: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Result<FlexTensor, Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(t);
    match boxed.downcast::<Tensor<Flex, D>>() {
        Ok(t) => Ok(t.into_primitive().tensor()),
        Err(b) => Err(*b.downcast::<Tensor<B, D>>().expect("same type")),
    }
}

/// Wraps a flex primitive as a `Tensor<B, D>`; only called when `B` is Flex.
pub(crate) fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let t = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(t));
    let boxed: Box<dyn Any> = Box::new(t);
    *boxed
        .downcast::<Tensor<B, D>>()
        .expect("called only when B is Flex")
}

/// Whether the buffer of `t` is exactly its elements in row-major order.
pub(crate) fn is_dense(t: &FlexTensor) -> bool {
    t.is_contiguous() && t.layout().start_offset() == 0
}

/// The values of a CPU float tensor (f32, f16, bf16) as row-major f32, read
/// through its strides a row of the last dimension at a time (widened
/// vectorised, rows in parallel for large tensors): burn-flex copies a strided
/// view (the attention's heads, `swap_dims` of a projection) value by value.
/// `None` for other dtypes, negative strides or a last dimension that is not
/// contiguous or shorter than 8 values.
pub(crate) fn flex_f32(t: &FlexTensor) -> Option<Vec<f32>> {
    let l = t.layout();
    let (dims, strides) = (l.shape().as_slice(), l.strides());
    let d = *dims.last()?;
    let n = l.num_elements();
    if d < 8 || strides[dims.len() - 1] != 1 || strides.iter().any(|s| *s < 0) {
        return None;
    }
    let (off, lead) = (l.start_offset(), &dims[..dims.len() - 1]);
    // Buffer offset of row `r` (an index over the leading dimensions).
    let row_at = |mut r: usize| {
        let mut at = off;
        for (dim, stride) in lead.iter().zip(strides).rev() {
            at += (r % dim) * *stride as usize;
            r /= dim;
        }
        at
    };
    fn rows<T: simd::Load + Elem>(
        src: &[T],
        out: &mut [f32],
        d: usize,
        at: &(dyn Fn(usize) -> usize + Sync),
    ) {
        let each = |(r, o): (usize, &mut [f32])| simd::widen(&src[at(r)..at(r) + d], o);
        if out.len() >= 1 << 16 {
            out.par_chunks_mut(d).enumerate().for_each(each);
        } else {
            out.chunks_mut(d).enumerate().for_each(each);
        }
    }
    let mut out = vec![0f32; n];
    if n == 0 {
        return Some(out);
    }
    match t.dtype() {
        DType::F32 => rows(t.storage::<f32>(), &mut out, d, &row_at),
        DType::F16 => rows(t.storage::<f16>(), &mut out, d, &row_at),
        DType::BF16 => rows(t.storage::<bf16>(), &mut out, d, &row_at),
        _ => return None,
    }
    Some(out)
}

/// Float element types the kernels read.
pub(crate) trait Elem: bytemuck::Pod + Send + Sync + burn::tensor::Element {
    fn f32(self) -> f32;
}
impl Elem for f32 {
    fn f32(self) -> f32 {
        self
    }
}
impl Elem for f16 {
    fn f32(self) -> f32 {
        self.to_f32()
    }
}
impl Elem for bf16 {
    fn f32(self) -> f32 {
        self.to_f32()
    }
}

/// The values of a small tensor as f32 (host copy).
pub(crate) fn host_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<Vec<f32>> {
    Some(crate::to_f32_vec(t.clone()))
}

/// The values of a tensor as f32: the CPU buffer itself for a plain f32 tensor,
/// a converted host copy otherwise.
pub(crate) enum F32Values {
    Shared(FlexTensor),
    Owned(Vec<f32>),
}

impl F32Values {
    pub(crate) fn of<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<Self> {
        match to_flex(t.clone()) {
            Ok(f) if f.dtype() == burn::tensor::DType::F32 && is_dense(&f) => Some(Self::Shared(f)),
            _ => host_f32(t).map(Self::Owned),
        }
    }
}

impl std::ops::Deref for F32Values {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Self::Shared(t) => t.storage::<f32>(),
            Self::Owned(v) => v,
        }
    }
}

/// A float tensor's f32 values with the offset and strides to address them: the
/// CPU buffer itself for an f32 view with non-negative strides, a contiguous
/// converted copy otherwise.
pub(crate) struct StridedF32<const D: usize> {
    values: F32Values,
    offset: usize,
    strides: [isize; D],
}

impl<const D: usize> StridedF32<D> {
    pub(crate) fn of<B: Backend>(t: &Tensor<B, D>) -> Option<Self> {
        if let Ok(f) = to_flex(t.clone()) {
            let l = f.layout();
            if f.dtype() == burn::tensor::DType::F32 && l.strides().iter().all(|s| *s >= 0) {
                let (offset, strides) = (l.start_offset(), l.strides().try_into().ok()?);
                return Some(Self {
                    values: F32Values::Shared(f),
                    offset,
                    strides,
                });
            }
        }
        let dims = t.dims();
        let mut strides = [1isize; D];
        for i in (0..D.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1] as isize;
        }
        Some(Self {
            values: F32Values::Owned(host_f32(t)?),
            offset: 0,
            strides,
        })
    }

    /// Start of the buffer.
    pub(crate) fn ptr(&self) -> *const f32 {
        self.values.as_ptr()
    }

    /// Buffer index of element `idx`.
    pub(crate) fn at(&self, idx: [usize; D]) -> usize {
        idx.iter()
            .zip(&self.strides)
            .fold(self.offset, |a, (i, s)| a + i * *s as usize)
    }

    /// Stride of dimension `dim` in elements.
    pub(crate) fn stride(&self, dim: usize) -> isize {
        self.strides[dim]
    }
}

/// A raw pointer the tasks of one parallel loop share (they write disjoint
/// ranges).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used for disjoint writes from the tasks of one parallel loop.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}
