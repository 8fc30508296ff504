//! Option groups shared by the subcommands, declared once and flattened in.

use burn::tensor::DType;
use clap::{Args, ValueEnum};
use janus_checkpoint::StoredDType;
use janus_core::{Precision, QuantFormat};

/// `--model`.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Model: a directory (original, transformers-port or converted layout) or a Hugging Face id.
    #[arg(long, default_value = "deepseek-ai/Janus-Pro-1B")]
    pub model: String,
}

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

/// Weight (and activation) dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
}

impl DTypeArg {
    /// The runtime dtype.
    pub fn burn(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }

    /// The dtype written to a converted checkpoint.
    pub fn stored(self) -> StoredDType {
        match self {
            Self::F32 => StoredDType::F32,
            Self::F16 => StoredDType::F16,
            Self::Bf16 => StoredDType::BF16,
        }
    }
}

/// `--dtype` of the commands that run the model: a float dtype, or a block
/// format for the LLM's linears, `lm_head` and the gen head (everything else
/// then 16-bit: f16, bf16 on cuda).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RunDType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// int8 blocks of 32 with an f16 scale (8.5 bits per weight), quantized at load.
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale (4.5 bits per weight), quantized at load.
    #[value(name = "q4_0")]
    Q4_0,
}

/// What the weights are used for: it decides the CPU's default dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Understanding, the VQ tokenizer and benchmarks: f32 on the CPU.
    Default,
    /// Image generation: 16-bit weights make each CPU step faster than f32
    /// (docs/benchmarks.md): bf16 where the CPU multiplies it natively, else f16.
    Generate,
}

/// `--backend` / `--dtype`, shared by every command that runs the model.
#[derive(Args, Clone, Copy, Debug)]
pub struct BackendArgs {
    /// Compute backend (wgpu and cuda need a binary built with that feature).
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Weight dtype [default: f32 on cpu (for `generate` bf16 on CPUs with
    /// AVX512-BF16, else f16), f16 on wgpu, bf16 on cuda]. `q8_0` and `q4_0`
    /// quantize the LLM, `lm_head` and the gen head as they load (the rest is
    /// 16-bit).
    #[arg(long, value_enum)]
    pub dtype: Option<RunDType>,
}

impl BackendArgs {
    /// The precision to use for `task`: the flag, or the backend's default. The
    /// only place the default-dtype policy lives.
    pub fn precision(&self, task: Task, model: Option<&str>) -> anyhow::Result<Precision> {
        let sixteen = match self.backend {
            BackendKind::Cuda => DTypeArg::Bf16,
            _ => DTypeArg::F16,
        };
        // A quantized checkpoint without --dtype runs as `--dtype` its format
        // would (the rest in 16 bits): the same model, bit for bit, as the
        // original quantized at load.
        if self.dtype.is_none()
            && let Some(format) = model.and_then(janus_pipeline::layout::stored_quant)
        {
            return Ok(Precision {
                dtype: sixteen.burn(),
                quant: Some(format),
            });
        }
        let (d, quant) = match self.dtype {
            Some(RunDType::F32) => (DTypeArg::F32, None),
            Some(RunDType::F16) => (DTypeArg::F16, None),
            Some(RunDType::Bf16) => (DTypeArg::Bf16, None),
            Some(RunDType::Q8_0) => (sixteen, Some(QuantFormat::Q8_0)),
            Some(RunDType::Q4_0) => (sixteen, Some(QuantFormat::Q4_0)),
            None => (
                match (self.backend, task) {
                    (BackendKind::Cpu, Task::Default) => DTypeArg::F32,
                    (BackendKind::Cpu, Task::Generate) if janus_core::has_bf16_dot() => {
                        DTypeArg::Bf16
                    }
                    (BackendKind::Cpu, Task::Generate) => DTypeArg::F16,
                    (BackendKind::Wgpu, _) => DTypeArg::F16,
                    (BackendKind::Cuda, _) => DTypeArg::Bf16,
                },
                None,
            ),
        };
        if (self.backend, d) == (BackendKind::Wgpu, DTypeArg::Bf16) {
            anyhow::bail!("bf16 is not supported on the wgpu backend: use --dtype f16 or f32");
        }
        Ok(Precision {
            dtype: d.burn(),
            quant,
        })
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text (an answer is streamed as it is generated; file
    /// paths one per line).
    Text,
    /// One JSON object on stdout.
    Json,
}
