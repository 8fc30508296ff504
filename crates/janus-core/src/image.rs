//! [`RgbImage`]: the one in-memory image type of janus-rs, read by the
//! understanding path and written by the VQ decoder.

/// An RGB image in memory: row-major HWC bytes, 3 per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub pixels: Vec<u8>,
}
