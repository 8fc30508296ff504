use burn::prelude::*;
use janus_core::config::VqConfig;
use janus_core::{Result, Weights};

use crate::blocks::{AttnBlock, ResnetBlock};
use crate::layers::{Conv2d, Downsample, GroupNorm};

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

/// `mid.0` Res, `mid.1` Attn, `mid.2` Res.
#[derive(Debug, Clone)]
pub struct Mid<B: Backend> {
    /// `mid.0`.
    pub res0: ResnetBlock<B>,
    /// `mid.1`.
    pub attn: AttnBlock<B>,
    /// `mid.2`.
    pub res1: ResnetBlock<B>,
}

impl<B: Backend> Mid<B> {
    pub(crate) fn load(w: &Weights<B>, prefix: &str, c: usize) -> Result<Self> {
        Ok(Self {
            res0: ResnetBlock::load(w, &format!("{prefix}.mid.0"), c, c)?,
            attn: AttnBlock::load(w, &format!("{prefix}.mid.1"), c)?,
            res1: ResnetBlock::load(w, &format!("{prefix}.mid.2"), c, c)?,
        })
    }

    /// Applies the three blocks.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.res1.forward(self.attn.forward(self.res0.forward(x)))
    }
}

/// Loads one level's blocks; `attn` when this is the lowest resolution.
pub(crate) fn load_level<B: Backend, R>(
    w: &Weights<B>,
    prefix: &str,
    mut c_in: usize,
    c_out: usize,
    blocks: usize,
    attn: bool,
    resample: Option<R>,
) -> Result<Level<B, R>> {
    let mut res = Vec::new();
    let mut attns = Vec::new();
    for j in 0..blocks {
        res.push(ResnetBlock::load(
            w,
            &format!("{prefix}.res.{j}"),
            c_in,
            c_out,
        )?);
        c_in = c_out;
        if attn {
            attns.push(AttnBlock::load(w, &format!("{prefix}.attn.{j}"), c_out)?);
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
    pub(crate) fn load(w: &Weights<B>, p: &str, c: &VqConfig) -> Result<Self> {
        let n = c.encoder_ch_mult.len();
        let mut levels = Vec::with_capacity(n);
        let mut block_in = c.ch;
        for (i, mult) in c.encoder_ch_mult.iter().enumerate() {
            let block_out = c.ch * mult;
            let prefix = format!("{p}.conv_blocks.{i}");
            let down = if i + 1 < n {
                Some(Downsample::load(
                    w,
                    &format!("{prefix}.downsample"),
                    block_out,
                )?)
            } else {
                None
            };
            levels.push(load_level(
                w,
                &prefix,
                block_in,
                block_out,
                c.num_res_blocks,
                i + 1 == n,
                down,
            )?);
            block_in = block_out;
        }
        Ok(Self {
            conv_in: Conv2d::load(w, &format!("{p}.conv_in"), 3, c.ch, 3, 1, 1)?,
            levels,
            mid: Mid::load(w, p, block_in)?,
            norm_out: GroupNorm::load(w, &format!("{p}.norm_out"), block_in)?,
            conv_out: Conv2d::load(w, &format!("{p}.conv_out"), block_in, c.z_channels, 3, 1, 1)?,
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
        self.conv_out.forward(self.norm_out.forward_swish(h))
    }
}
