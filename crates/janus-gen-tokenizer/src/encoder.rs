//! The VQ encoder, and the level and middle blocks it shares with the decoder.

use burn::prelude::*;
use janus_core::nn::{Conv2d, GroupNorm};
use janus_core::{Result, Weights};

use crate::blocks::{AttnBlock, ResnetBlock};
use crate::config::VqConfig;
use crate::layers::{Downsample, conv3x3, group_norm};

/// One resolution level: res blocks (each followed by attention at the lowest
/// resolution) and an optional resampling layer.
#[derive(Debug, Clone)]
pub struct Level<B: Backend, R> {
    /// `res.J`.
    pub res: Vec<ResnetBlock<B>>,
    /// `attn.J` (empty except at the lowest resolution).
    pub attn: Vec<AttnBlock<B>>,
    /// `downsample` / `upsample`.
    pub resample: Option<R>,
}

impl<B: Backend, R> Level<B, R> {
    pub(crate) fn forward_blocks(&self, mut h: Tensor<B, 4>) -> Tensor<B, 4> {
        for (i, res) in self.res.iter().enumerate() {
            h = res.forward(h);
            if let Some(attn) = self.attn.get(i) {
                h = attn.forward(h);
            }
        }
        h
    }
}

/// The middle: `mid.0` Res, `mid.1` Attn, `mid.2` Res (LlamaGen's `block_1`,
/// `attn_1`, `block_2`).
#[derive(Debug, Clone)]
pub struct Mid<B: Backend> {
    /// `mid.0`.
    pub block_1: ResnetBlock<B>,
    /// `mid.1`.
    pub attn_1: AttnBlock<B>,
    /// `mid.2`.
    pub block_2: ResnetBlock<B>,
}

impl<B: Backend> Mid<B> {
    pub(crate) fn load(w: &Weights<B>, c: usize) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::load(&w.pp(0), c, c)?,
            attn_1: AttnBlock::load(&w.pp(1), c)?,
            block_2: ResnetBlock::load(&w.pp(2), c, c)?,
        })
    }

    /// Applies the three blocks.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.block_2
            .forward(self.attn_1.forward(self.block_1.forward(x)))
    }
}

/// Channels and blocks of one level.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LevelSpec {
    /// Channels in.
    pub c_in: usize,
    /// Channels out.
    pub c_out: usize,
    /// Res blocks.
    pub blocks: usize,
    /// Whether each res block is followed by attention (lowest resolution).
    pub attn: bool,
}

/// Loads one level's blocks (`res.J`, `attn.J`) under `w`.
pub(crate) fn load_level<B: Backend, R>(
    w: &Weights<B>,
    spec: LevelSpec,
    resample: Option<R>,
) -> Result<Level<B, R>> {
    let mut res = Vec::new();
    let mut attns = Vec::new();
    let mut c_in = spec.c_in;
    for j in 0..spec.blocks {
        res.push(ResnetBlock::load(&w.pp("res").pp(j), c_in, spec.c_out)?);
        c_in = spec.c_out;
        if spec.attn {
            attns.push(AttnBlock::load(&w.pp("attn").pp(j), spec.c_out)?);
        }
    }
    Ok(Level {
        res,
        attn: attns,
        resample,
    })
}

/// Image `[B, 3, S, S]` to latents `[B, z_channels, S/16, S/16]`.
#[derive(Debug, Clone)]
pub struct Encoder<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `conv_blocks.I`, highest resolution first.
    pub levels: Vec<Level<B, Downsample<B>>>,
    /// `mid`.
    pub mid: Mid<B>,
    /// `norm_out`.
    pub norm_out: GroupNorm<B>,
    /// `conv_out`.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    pub(crate) fn load(w: &Weights<B>, c: &VqConfig) -> Result<Self> {
        let n = c.encoder_ch_mult.len();
        let mut levels = Vec::with_capacity(n);
        let mut block_in = c.base_channels;
        for (i, mult) in c.encoder_ch_mult.iter().enumerate() {
            let block_out = c.base_channels * mult;
            let level = w.pp("conv_blocks").pp(i);
            let down = if i + 1 < n {
                Some(Downsample::load(&level.pp("downsample"), block_out)?)
            } else {
                None
            };
            let spec = LevelSpec {
                c_in: block_in,
                c_out: block_out,
                blocks: c.num_res_blocks,
                attn: i + 1 == n,
            };
            levels.push(load_level(&level, spec, down)?);
            block_in = block_out;
        }
        Ok(Self {
            conv_in: conv3x3(&w.pp("conv_in"), 3, c.base_channels)?,
            levels,
            mid: Mid::load(&w.pp("mid"), block_in)?,
            norm_out: group_norm(&w.pp("norm_out"), block_in)?,
            conv_out: conv3x3(&w.pp("conv_out"), block_in, c.latent_channels)?,
        })
    }

    /// Runs the encoder; `tap` sees the output of each level (`enc.down{i}.out`) and of
    /// `mid` (`enc.mid.out`) for debugging.
    pub fn forward_with(
        &self,
        x: Tensor<B, 4>,
        mut tap: impl FnMut(&str, &Tensor<B, 4>),
    ) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(x);
        for (i, level) in self.levels.iter().enumerate() {
            h = level.forward_blocks(h);
            if let Some(down) = &level.resample {
                h = down.forward(h);
            }
            tap(&format!("enc.down{i}.out"), &h);
        }
        h = self.mid.forward(h);
        tap("enc.mid.out", &h);
        self.conv_out.forward(self.norm_out.forward_silu(h))
    }
}
