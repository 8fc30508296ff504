//! The LlamaGen VQ-16 image tokenizer of Janus, generic over Burn's
//! [`Backend`](burn::prelude::Backend): an encoder (image to 16x-downsampled latents),
//! an L2-normalised codebook quantiser, and a decoder (codes back to pixels).
//! Channels, level multipliers, latent and codebook sizes come from the config
//! (real checkpoints: ch 128, `[1,1,2,2,4]`, z 256, 16384 x 8).
//!
//! Usable on its own, e.g. to tokenise images or to decode codes:
//!
//! ```no_run
//! use burn::backend::Flex;
//! use burn::prelude::*;
//! use burn::tensor::DType;
//! use janus_checkpoint::Checkpoint;
//! use janus_core::Weights;
//! use janus_gen_tokenizer::{VqConfig, VqModel};
//!
//! # fn main() -> janus_core::Result<()> {
//! let config = VqConfig::vq16();
//! let ckpt = Checkpoint::open("Janus-Pro-1B")?;
//! let w = Weights::new(&ckpt, &Default::default(), DType::F32);
//! let vq = VqModel::<Flex>::load(&w.pp("gen_vision_model"), &config)?;
//! let s = config.image_size;
//! let images = Tensor::<Flex, 4>::zeros([1, 3, s, s], &Default::default()); // in [-1, 1]
//! let codes = vq.encode(images)?; // one Vec of grid*grid codes per image
//! let pixels = vq.decode(&codes, vq.grid())?; // [1, 3, s, s]
//! let rgb = VqModel::to_rgb8(pixels); // HWC u8 per image
//! # Ok(()) }
//! ```

mod blocks;
mod config;
mod decoder;
mod encoder;
mod layers;

use burn::prelude::*;
use burn::tensor::TensorData;
use janus_core::nn::Conv2d;
use janus_core::{Error, Result, RgbImage, Weights};

pub use blocks::{AttnBlock, ResnetBlock};
pub use config::{GROUPS, VqConfig, VqParams};
pub use decoder::Decoder;
pub use encoder::{Encoder, Level, Mid};
pub use layers::{Downsample, Upsample};

use crate::layers::conv1x1;

/// The VQ-16 model (`gen_vision_model.*`).
#[derive(Debug, Clone)]
pub struct VqModel<B: Backend> {
    /// `encoder`.
    pub encoder: Encoder<B>,
    /// `quant_conv` (1x1, z_channels -> codebook dim).
    pub quant_conv: Conv2d<B>,
    /// `quantize.embedding.weight` `[codebook_size, dim]`, as stored (not normalised).
    pub codebook: Tensor<B, 2>,
    /// `post_quant_conv` (1x1, codebook dim -> z_channels).
    pub post_quant_conv: Conv2d<B>,
    /// `decoder`.
    pub decoder: Decoder<B>,
    config: VqConfig,
}

/// Rows divided by `max(||row||, 1e-12)`.
fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

impl<B: Backend> VqModel<B> {
    /// Loads `encoder`, `quant_conv`, `quantize.embedding`, `post_quant_conv` and
    /// `decoder` under `w` (`gen_vision_model` in a Janus checkpoint; its
    /// `quantize.codebook_used` training buffer is not read).
    pub fn load(w: &Weights<B>, c: &VqConfig) -> Result<Self> {
        let dim = c.code_dim;
        Ok(Self {
            encoder: Encoder::load(&w.pp("encoder"), c)?,
            quant_conv: conv1x1(&w.pp("quant_conv"), c.latent_channels, dim)?,
            codebook: w.tensor("quantize.embedding.weight", [c.codebook_size, dim])?,
            post_quant_conv: conv1x1(&w.pp("post_quant_conv"), dim, c.latent_channels)?,
            decoder: Decoder::load(&w.pp("decoder"), c)?,
            config: c.clone(),
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &VqConfig {
        &self.config
    }

    /// The code grid `(rows, cols)` of a `image_size` image.
    pub fn grid(&self) -> (usize, usize) {
        let g = self.config.grid_side();
        (g, g)
    }

    /// Encoder output `h` and pre-quantisation latents `z = quant_conv(h)` of images
    /// `[B, 3, S, S]` in [-1, 1]; `tap` sees the encoder's intermediate outputs.
    pub fn encode_latents(
        &self,
        images: Tensor<B, 4>,
        tap: impl FnMut(&str, &Tensor<B, 4>),
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let [b, c, h, w] = images.dims();
        let f = self.config.downsample();
        if c != 3 || h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::Invalid(format!(
                "the VQ encoder takes [N, 3, H, W] images with H and W multiples of {f}, got [{b}, {c}, {h}, {w}]"
            )));
        }
        let hidden = self.encoder.forward_with(images, tap);
        let z = self.quant_conv.forward(hidden.clone());
        Ok((hidden, z))
    }

    /// Quantises latents `[B, dim, h, w]`: nearest L2-normalised codebook row to each
    /// L2-normalised vector. Returns the codes per image (raster order) and the
    /// quantised latents `[B, dim, h, w]`.
    pub fn quantize(&self, z: Tensor<B, 4>) -> (Vec<Vec<u32>>, Tensor<B, 4>) {
        let [b, d, h, w] = z.dims();
        let flat = l2_normalize(z.permute([0, 2, 3, 1]).reshape([b * h * w, d]));
        let book = l2_normalize(self.codebook.clone());
        let dist = flat.clone().square().sum_dim(1) + book.clone().square().sum_dim(1).transpose()
            - flat.matmul(book.clone().transpose()).mul_scalar(2.0);
        let idx = dist.argmin(1).reshape([b * h * w]);
        let quant = book
            .select(0, idx.clone())
            .reshape([b, h, w, d])
            .permute([0, 3, 1, 2]);
        let codes: Vec<u32> = idx
            .into_data()
            .convert::<i64>()
            .into_vec::<i64>()
            .expect("int data")
            .into_iter()
            .map(|c| c as u32)
            .collect();
        (codes.chunks(h * w).map(<[u32]>::to_vec).collect(), quant)
    }

    /// Tokenises images `[B, 3, S, S]` in [-1, 1] into codes (raster order) per image.
    pub fn encode(&self, images: Tensor<B, 4>) -> Result<Vec<Vec<u32>>> {
        let (_, z) = self.encode_latents(images, |_, _| {})?;
        Ok(self.quantize(z).0)
    }

    /// Latents `[B, dim, rows, cols]` of codes: normalised codebook rows.
    pub fn codes_to_latents(
        &self,
        codes: &[Vec<u32>],
        grid: (usize, usize),
    ) -> Result<Tensor<B, 4>> {
        let (rows, cols) = grid;
        let k = self.config.codebook_size;
        if codes.is_empty() {
            return Err(Error::Invalid("no codes to decode".into()));
        }
        for (i, c) in codes.iter().enumerate() {
            if c.len() != rows * cols {
                return Err(Error::Invalid(format!(
                    "image {i} has {} codes, but a {rows}x{cols} grid needs {}",
                    c.len(),
                    rows * cols
                )));
            }
            if let Some(bad) = c.iter().find(|&&x| x as usize >= k) {
                return Err(Error::Invalid(format!(
                    "image {i} has code {bad}, outside the codebook of {k} entries"
                )));
            }
        }
        let device = self.codebook.device();
        let flat: Vec<i64> = codes.iter().flatten().map(|&c| c as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(flat, [codes.len() * rows * cols]),
            &device,
        );
        let d = self.config.code_dim;
        Ok(l2_normalize(self.codebook.clone())
            .select(0, idx)
            .reshape([codes.len(), rows, cols, d])
            .permute([0, 3, 1, 2]))
    }

    /// Decodes codes (raster order, `rows * cols` per image) to images `[B, 3, 16 rows,
    /// 16 cols]`, nominally in [-1, 1] (not clamped). `tap` sees the decoder's
    /// intermediates (`post_quant_conv.out`, `dec.*`).
    pub fn decode_with(
        &self,
        codes: &[Vec<u32>],
        grid: (usize, usize),
        mut tap: impl FnMut(&str, &Tensor<B, 4>),
    ) -> Result<Tensor<B, 4>> {
        let z = self
            .post_quant_conv
            .forward(self.codes_to_latents(codes, grid)?);
        tap("post_quant_conv.out", &z);
        Ok(self.decoder.forward_with(z, tap))
    }

    /// Decodes codes to images; see [`VqModel::decode_with`].
    pub fn decode(&self, codes: &[Vec<u32>], grid: (usize, usize)) -> Result<Tensor<B, 4>> {
        self.decode_with(codes, grid, |_, _| {})
    }

    /// Images `[B, 3, H, W]` in [-1, 1] to RGB bytes the way the reference does:
    /// `trunc(clip((x + 1) / 2 * 255, 0, 255))` (truncation, not rounding).
    pub fn to_rgb8(images: Tensor<B, 4>) -> Vec<RgbImage> {
        let [b, _, h, w] = images.dims();
        let v = janus_core::to_f32_vec(
            images
                .add_scalar(1.0)
                .div_scalar(2.0)
                .mul_scalar(255.0)
                .clamp(0.0, 255.0)
                .permute([0, 2, 3, 1]),
        );
        v.chunks(h * w * 3)
            .take(b)
            .map(|img| RgbImage {
                width: w,
                height: h,
                pixels: img.iter().map(|x| *x as u8).collect(),
            })
            .collect()
    }
}
