//! The VQ decoder.

use burn::prelude::*;
use janus_core::nn::{Conv2d, GroupNorm};
use janus_core::{Result, Weights};

use crate::config::VqConfig;
use crate::encoder::{Level, LevelSpec, Mid, load_level};
use crate::layers::{Upsample, conv3x3, group_norm};

/// Latents `[B, z_channels, g, g]` to images `[B, 3, 16g, 16g]`. Level 0 is the
/// lowest resolution (it has the attention blocks), as in the checkpoint.
#[derive(Debug, Clone)]
pub struct Decoder<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `mid`.
    pub mid: Mid<B>,
    /// `conv_blocks.I`, lowest resolution first.
    pub levels: Vec<Level<B, Upsample<B>>>,
    /// `norm_out`.
    pub norm_out: GroupNorm<B>,
    /// `conv_out`.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    pub(crate) fn load(w: &Weights<B>, c: &VqConfig) -> Result<Self> {
        let n = c.decoder_ch_mult.len();
        let mut block_in = c.base_channels * c.decoder_ch_mult[n - 1];
        let conv_in = conv3x3(&w.pp("conv_in"), c.latent_channels, block_in)?;
        let mid = Mid::load(&w.pp("mid"), block_in)?;
        let mut levels = Vec::with_capacity(n);
        for i in 0..n {
            let block_out = c.base_channels * c.decoder_ch_mult[n - 1 - i];
            let level = w.pp("conv_blocks").pp(i);
            let up = if i + 1 < n {
                Some(Upsample::load(&level.pp("upsample"), block_out)?)
            } else {
                None
            };
            let spec = LevelSpec {
                c_in: block_in,
                c_out: block_out,
                blocks: c.num_res_blocks + 1,
                attn: i == 0,
            };
            levels.push(load_level(&level, spec, up)?);
            block_in = block_out;
        }
        Ok(Self {
            conv_in,
            mid,
            levels,
            norm_out: group_norm(&w.pp("norm_out"), block_in)?,
            conv_out: conv3x3(&w.pp("conv_out"), block_in, 3)?,
        })
    }

    /// Runs the decoder; `tap` sees `dec.conv_in`, `dec.mid.out` and each level's output
    /// (`dec.up{i}.out`, after its upsample).
    pub fn forward_with(
        &self,
        z: Tensor<B, 4>,
        mut tap: impl FnMut(&str, &Tensor<B, 4>),
    ) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(z);
        tap("dec.conv_in", &h);
        h = self.mid.forward(h);
        tap("dec.mid.out", &h);
        for (i, level) in self.levels.iter().enumerate() {
            h = level.forward_blocks(h);
            if let Some(up) = &level.resample {
                h = up.forward(h);
            }
            tap(&format!("dec.up{i}.out"), &h);
        }
        self.conv_out.forward(self.norm_out.forward_silu(h))
    }
}
