//! Backend and dtype selection for binaries: the library is generic, a binary
//! names a backend at run time and [`dispatch`] runs a [`Job`] on it. `wgpu` and
//! `cuda` are available when this crate is built with those features.

use burn::prelude::Backend;
use burn::tensor::DType;
use clap::{Args, ValueEnum};

use crate::PipelineError;

/// Compute backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// CPU (burn-flex).
    Cpu,
    /// Any GPU through wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// NVIDIA GPUs through CUDA.
    Cuda,
}

/// Weight and activation dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

/// `--backend` / `--dtype`, shared by every command.
#[derive(Args, Clone, Copy, Debug)]
pub struct BackendArgs {
    /// Compute backend (wgpu and cuda need a binary built with that feature).
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Weight dtype [default: f32 on cpu (for `generate` bf16 on CPUs with
    /// AVX512-BF16, else f16), f16 on wgpu, bf16 on cuda].
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
}

impl BackendArgs {
    /// The dtype to use: the flag, or the backend's default.
    pub fn dtype(&self) -> crate::Result<DType> {
        let d = self.dtype.unwrap_or(match self.backend {
            BackendKind::Cpu => DTypeArg::F32,
            BackendKind::Wgpu => DTypeArg::F16,
            BackendKind::Cuda => DTypeArg::Bf16,
        });
        match (self.backend, d) {
            (BackendKind::Wgpu, DTypeArg::Bf16) => Err(PipelineError::Invalid(
                "bf16 is not supported on the wgpu backend: use --dtype f16 or f32".into(),
            )),
            (_, DTypeArg::F32) => Ok(DType::F32),
            (_, DTypeArg::F16) => Ok(DType::F16),
            (_, DTypeArg::Bf16) => Ok(DType::BF16),
        }
    }
}

/// Code that runs on any backend.
pub trait Job {
    /// Result of the job.
    type Output;
    /// Error of the job.
    type Error: From<PipelineError>;
    /// Runs on backend `B`.
    fn run<B: Backend>(self, device: B::Device, dtype: DType) -> Result<Self::Output, Self::Error>;
}

/// Runs `job` on the backend named by `args`.
pub fn dispatch<J: Job>(args: BackendArgs, job: J) -> Result<J::Output, J::Error> {
    let dtype = args.dtype()?;
    if args.backend == BackendKind::Cpu && dtype == DType::BF16 && !janus_core::cpu::has_bf16_dot()
    {
        eprintln!(
            "warning: this CPU has no AVX512-BF16, so bf16 converts on every operation and is slow; f16 is the fast 16-bit choice here"
        );
    }
    match args.backend {
        BackendKind::Cpu => job.run::<burn::backend::Flex>(Default::default(), dtype),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job.run::<burn::backend::Wgpu>(Default::default(), dtype),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job.run::<burn::backend::Cuda>(Default::default(), dtype),
        #[allow(unreachable_patterns)]
        other => Err(PipelineError::Invalid(format!(
            "this binary was built without the {other:?} backend: rebuild with `--features {}`",
            format!("{other:?}").to_lowercase()
        ))
        .into()),
    }
}
