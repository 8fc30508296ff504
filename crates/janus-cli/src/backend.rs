//! Running generic code on the backend named at run time: a [`Job`] is written
//! once for any `B: Backend`, and [`dispatch`] picks the type.

use burn::prelude::Backend;
use burn::tensor::DType;
use janus_core::Precision;

use crate::args::{BackendArgs, BackendKind, Task};

/// Code that runs on any backend.
pub trait Job {
    /// Result of the job.
    type Output;
    /// Runs on backend `B`.
    fn run<B: Backend>(
        self,
        device: B::Device,
        precision: Precision,
    ) -> anyhow::Result<Self::Output>;
    /// The model it loads (a directory or hub id), where the precision
    /// depends on how its weights are stored.
    fn model(&self) -> Option<&str> {
        None
    }
}

/// Runs `job` on the backend named by `args`, in the precision for `task`.
pub fn dispatch<J: Job>(args: BackendArgs, task: Task, job: J) -> anyhow::Result<J::Output> {
    let precision = args.precision(task, job.model())?;
    if args.backend == BackendKind::Cpu
        && precision.dtype == DType::BF16
        && !janus_core::has_bf16_dot()
    {
        say!(
            "warning: this CPU has no AVX512-BF16, so bf16 converts on every operation and is slow; f16 is the fast 16-bit choice here"
        );
    }
    match args.backend {
        BackendKind::Cpu => job.run::<burn::backend::Flex>(Default::default(), precision),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job.run::<burn::backend::Wgpu>(Default::default(), precision),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job.run::<burn::backend::Cuda>(Default::default(), precision),
        #[allow(unreachable_patterns)]
        other => {
            let name = format!("{other:?}").to_lowercase();
            anyhow::bail!(
                "this binary was built without the {name} backend: rebuild with `--features {name}`"
            )
        }
    }
}
