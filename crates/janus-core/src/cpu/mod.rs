//! Fast paths for the CPU backend (burn-flex) where Burn's generic ops are the
//! bottleneck: multiplying a few rows by a large weight (decode and
//! image-generation steps), 3x3 convolutions without im2col and GroupNorm+SiLU
//! in two passes (VQ decoder), and the
//! KV-cache kernels in [`crate::nn`]. Each entry point returns `None` (or falls
//! back to the generic op) on other backends or layouts it does not cover, so
//! callers stay backend-generic.

mod conv;
mod norm;
mod rows;

use std::any::Any;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

pub use conv::conv2d;
pub use norm::group_norm;
pub use rows::{MAX_ROWS, linear_rows};

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
pub(crate) fn plain(t: &FlexTensor) -> bool {
    t.is_contiguous() && t.layout().start_offset() == 0
}

/// Float element types the kernels read.
pub(crate) trait Elem: bytemuck::Pod + Send + Sync + burn::tensor::Element {
    fn f32(self) -> f32;
    /// `dst = src` as f32 (vectorised for the half types).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// `src` as f32: borrowed for f32, converted otherwise.
    fn as_f32(src: &[Self]) -> std::borrow::Cow<'_, [f32]> {
        if std::any::TypeId::of::<Self>() == std::any::TypeId::of::<f32>() {
            std::borrow::Cow::Borrowed(bytemuck::cast_slice(src))
        } else {
            let mut dst = vec![0f32; src.len()];
            Self::widen(src, &mut dst);
            std::borrow::Cow::Owned(dst)
        }
    }
}
impl Elem for f32 {
    fn f32(self) -> f32 {
        self
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}
impl Elem for f16 {
    fn f32(self) -> f32 {
        self.to_f32()
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}
impl Elem for bf16 {
    fn f32(self) -> f32 {
        self.to_f32()
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
}

/// The values of a small tensor as f32 (host copy).
pub(crate) fn host_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<Vec<f32>> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .ok()
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
            Ok(f) if f.dtype() == burn::tensor::DType::F32 && plain(&f) => Some(Self::Shared(f)),
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

/// Makes glibc's allocator keep freed memory for reuse instead of handing every
/// large buffer back to the kernel: without this each large temporary (tens of
/// MB in the VQ decoder and vision tower) is a fresh `mmap`, and zeroing its pages
/// costs about a quarter of the VQ decode. Call once at the start of a program;
/// the process keeps its peak footprint until it exits. A no-op elsewhere than
/// Linux/glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before heavy use.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
