//! Image preprocessing of the understanding path (`VLMImageProcessor`), bit-exact
//! with the reference: aspect-preserving Pillow bicubic resize with `int()`
//! truncation and a minimum side, pad to square with the mean colour, normalise.

use std::path::Path;

use serde_json::Value;

pub use janus_core::RgbImage;

use crate::resize::resize_bicubic;
use crate::{PipelineError, Result};

/// Reads an image file: any format the `image` crate reads, converted to RGB the
/// way PIL's `convert("RGB")` does (grey is replicated, alpha is dropped, not
/// blended).
///
/// JPEGs are decoded with libjpeg-turbo's algorithms (as Pillow does), so the
/// pixels match the reference bit for bit.
pub fn open_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    // Checked before opening: a FIFO would wait for a writer, /dev/zero
    // never end.
    let meta = std::fs::metadata(path)
        .map_err(|e| PipelineError::Image(format!("cannot open {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(PipelineError::Image(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let cannot_open =
        |e: std::io::Error| PipelineError::Image(format!("cannot open {}: {e}", path.display()));
    // The format from the first bytes, before the rest is read (a 3 GB file
    // that is no image was read whole to learn that).
    let mut head = Vec::with_capacity(64);
    {
        use std::io::Read;
        std::fs::File::open(path)
            .map_err(cannot_open)?
            .take(64)
            .read_to_end(&mut head)
            .map_err(cannot_open)?;
    }
    if image::guess_format(&head).is_err() {
        return Err(PipelineError::Image(format!(
            "cannot decode {} as an image: its format could not be determined from its \
             first bytes (PNG, JPEG, WebP, GIF, BMP, TIFF ... are read)",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(cannot_open)?;
    decode_image(&bytes, &path.display().to_string())
}

/// The largest `image_size` / `min_size` a preprocessor config may ask for.
const MAX_SIDE: u64 = 4096;

/// The most pixels an input image may declare: what Pillow refuses as a
/// decompression bomb (twice its 89,478,485-pixel warning threshold). Checked
/// from the header, before anything is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 2 * 89_478_485;

fn check_pixels(name: &str, width: u64, height: u64, max: u64) -> Result<()> {
    if width.saturating_mul(height) > max {
        return Err(PipelineError::Image(format!(
            "{name} declares {width}x{height} pixels, more than the {max} accepted \
             (a decompression bomb?)"
        )));
    }
    Ok(())
}

/// Encodes `img` as a PNG in memory.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &img.pixels,
        img.width as u32,
        img.height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| PipelineError::Image(format!("cannot encode a PNG: {e}")))?;
    Ok(png)
}

/// Decodes an image held in memory as [`open_image`] does; `name` is used in
/// error messages. Images declaring more than [`MAX_IMAGE_PIXELS`] are refused
/// before decoding.
pub fn decode_image(bytes: &[u8], name: &str) -> Result<RgbImage> {
    decode_image_within(bytes, name, MAX_IMAGE_PIXELS)
}

/// [`decode_image`] refusing, from the header, images of more than `max_pixels`
/// (at most [`MAX_IMAGE_PIXELS`]).
pub fn decode_image_within(bytes: &[u8], name: &str, max_pixels: u64) -> Result<RgbImage> {
    let max_pixels = max_pixels.min(MAX_IMAGE_PIXELS);
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if let Some((w, h)) = jpeg_dimensions(bytes) {
            check_pixels(name, w as u64, h as u64, max_pixels)?;
        }
        // libjpeg fills a cut-off JPEG's missing rows with grey; Pillow (the
        // reference) refuses it.
        let Some(scans) = jpeg_scans(bytes) else {
            return Err(PipelineError::Image(format!(
                "{name} is a truncated JPEG (it ends before its end-of-image marker)"
            )));
        };
        // Each scan is a pass over the whole image, whatever few bytes it
        // holds: thousands of empty ones in a small file would take minutes.
        if scans > MAX_JPEG_SCANS {
            return Err(PipelineError::Image(format!(
                "{name} is a JPEG of {scans} scans: at most {MAX_JPEG_SCANS} are decoded \
                 (a progressive JPEG has about 10)"
            )));
        }
        if let Some(img) = decode_jpeg(bytes) {
            return Ok(img);
        }
    }
    // A JPEG inside a TIFF is decoded whole for each strip that points at
    // it, whatever size the TIFF declares, outside the decoder's memory
    // limit: 82 KB of strips sharing one JPEG took 17 s, a 16x1 TIFF holding
    // a 16384x16384 one 2.4 GB.
    if let Some(compression @ (6 | 7)) = tiff_compression(bytes) {
        return Err(PipelineError::Image(format!(
            "{name} is a TIFF with JPEG compression (compression {compression}), which is not \
             read: convert it to PNG or JPEG"
        )));
    }
    let reader = || {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| PipelineError::Image(format!("cannot read {name}: {e}")))
    };
    // Reading the header parses metadata (a PNG's colour profile is
    // inflated): bounded too.
    let mut header = reader()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(METADATA_BYTES);
    header.limits(limits);
    let (w, h) = header
        .into_dimensions()
        .map_err(|e| PipelineError::Image(format!("cannot decode {name} as an image: {e}")))?;
    check_pixels(name, w as u64, h as u64, max_pixels)?;
    let mut reader = reader()?;
    // The pixels at 16 bits per RGBA sample, and room for metadata: a PNG
    // whose colour profile inflates to 1 GB is read without it.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some((w as u64 * h as u64 * 8).saturating_add(METADATA_BYTES));
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| PipelineError::Image(format!("cannot decode {name} as an image: {e}")))?;
    let rgb = to_rgb8_like_pillow(img);
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(PipelineError::Image(format!("{name} is an empty image")));
    }
    Ok(RgbImage {
        width: w as usize,
        height: h as usize,
        pixels: rgb.into_raw(),
    })
}

/// The most a header's metadata may take to read (a PNG's colour profile is
/// inflated to be parsed; one past it is left out, and the image read without
/// it: colour profiles are not applied, as by the reference).
const METADATA_BYTES: u64 = 4 << 20;

/// The width and height an image's header declares, from its first bytes
/// (nothing is decoded; metadata bounded as in [`decode_image`]); `None` when
/// they do not tell.
pub fn declared_size(head: &[u8]) -> Option<(u64, u64)> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF])
        && let Some((w, h)) = jpeg_dimensions(head)
    {
        return Some((w as u64, h as u64));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(head))
        .with_guessed_format()
        .ok()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(METADATA_BYTES);
    reader.limits(limits);
    let (w, h) = reader.into_dimensions().ok()?;
    Some((w as u64, h as u64))
}

/// `img` as 8-bit RGB the way Pillow 10's `Image.open(..).convert("RGB")`
/// does: 16-bit colour (and grey with alpha) keeps the high byte of each
/// sample, 16-bit grey (Pillow's mode `I;16`) is clipped at 255, alpha is
/// dropped; 8-bit images as the `image` crate converts them.
fn to_rgb8_like_pillow(img: image::DynamicImage) -> image::RgbImage {
    use image::DynamicImage;
    let (w, h) = (img.width(), img.height());
    let from = |samples: &[u16], channels: usize, rgb: fn(&[u16]) -> [u8; 3]| {
        let pixels = samples.chunks_exact(channels).flat_map(rgb).collect();
        image::RgbImage::from_raw(w, h, pixels).expect("whole pixels")
    };
    fn high(v: u16) -> u8 {
        (v >> 8) as u8
    }
    match img {
        DynamicImage::ImageLuma16(g) => from(g.as_raw(), 1, |p| [p[0].min(255) as u8; 3]),
        DynamicImage::ImageLumaA16(g) => from(g.as_raw(), 2, |p| [high(p[0]); 3]),
        DynamicImage::ImageRgb16(c) => {
            from(c.as_raw(), 3, |p| [high(p[0]), high(p[1]), high(p[2])])
        }
        DynamicImage::ImageRgba16(c) => {
            from(c.as_raw(), 4, |p| [high(p[0]), high(p[1]), high(p[2])])
        }
        other => other.to_rgb8(),
    }
}

/// The size a JPEG header declares, if mozjpeg can read the header.
fn jpeg_dimensions(bytes: &[u8]) -> Option<(usize, usize)> {
    std::panic::catch_unwind(|| {
        let dec = mozjpeg::Decompress::new_mem(bytes).ok()?;
        Some((dec.width(), dec.height()))
    })
    .ok()
    .flatten()
}

/// The `Compression` tag of a TIFF's first image (the one decoded), if
/// `b` is a TIFF (or BigTIFF) whose first directory says.
fn tiff_compression(b: &[u8]) -> Option<u16> {
    let little = match b.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    let int = |at: usize, len: usize| -> Option<u64> {
        let bytes = b.get(at..at.checked_add(len)?)?;
        Some(bytes.iter().enumerate().fold(0u64, |acc, (i, &v)| {
            let shift = if little { 8 * i } else { 8 * (len - 1 - i) };
            acc | (v as u64) << shift
        }))
    };
    // Classic TIFF: 32-bit offsets, 12-byte entries; BigTIFF: 64-bit, 20.
    let (ifd, count_len, entry_len, value_at) = match int(2, 2)? {
        42 => (int(4, 4)?, 2, 12, 8),
        43 => (int(8, 8)?, 8, 20, 12),
        _ => return None,
    };
    let ifd = usize::try_from(ifd).ok()?;
    let entries = int(ifd, count_len)?;
    let first = ifd.checked_add(count_len)?;
    for i in 0..entries.min(4096) as usize {
        let entry = first.checked_add(i * entry_len)?;
        if int(entry, 2)? == 259 {
            // A SHORT: the value's first two bytes.
            return u16::try_from(int(entry + value_at, 2)?).ok();
        }
    }
    None
}

/// The most scans a JPEG may have (libjpeg-turbo's tools refuse over 500 with
/// `-maxscans`; encoders write about 10 for a progressive JPEG, 1 for a
/// baseline one).
pub const MAX_JPEG_SCANS: usize = 100;

/// The number of scans of a JPEG whose segments run to its end-of-image
/// marker (`None` if they do not): its markers are walked from the start
/// (entropy-coded data skipped, where `0xFF` is always followed by `0x00` or
/// a restart marker), so markers inside metadata (an EXIF thumbnail's) do
/// not count.
fn jpeg_scans(b: &[u8]) -> Option<usize> {
    let mut i = 2;
    let mut scans = 0;
    loop {
        // The next marker (stray bytes before it are skipped, as by libjpeg).
        while i < b.len() && b[i] != 0xFF {
            i += 1;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1;
        }
        let marker = *b.get(i)?;
        i += 1;
        match marker {
            0xD9 => return Some(scans),
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let len = b
            .get(i..i + 2)
            .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)?;
        i += len;
        if marker == 0xDA {
            scans += 1;
            // Entropy-coded data up to the next marker.
            while i + 1 < b.len() && (b[i] != 0xFF || matches!(b[i + 1], 0x00 | 0xD0..=0xD7)) {
                i += 1;
            }
        }
        if i >= b.len() {
            return None;
        }
    }
}

/// Decodes a JPEG to RGB like libjpeg-turbo (islow IDCT, fancy upsampling); `None`
/// if it cannot (e.g. CMYK), so the caller falls back to the `image` crate.
fn decode_jpeg(bytes: &[u8]) -> Option<RgbImage> {
    std::panic::catch_unwind(|| {
        let dec = mozjpeg::Decompress::new_mem(bytes).ok()?;
        let mut rgb = dec.rgb().ok()?;
        let (width, height) = (rgb.width(), rgb.height());
        let rows: Vec<[u8; 3]> = rgb.read_scanlines().ok()?;
        rgb.finish().ok()?;
        (width > 0 && height > 0 && rows.len() == width * height).then(|| RgbImage {
            width,
            height,
            pixels: rows.into_iter().flatten().collect(),
        })
    })
    .ok()
    .flatten()
}

/// `VLMImageProcessor` settings from `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// Output side.
    pub image_size: usize,
    /// Minimum short side after resizing.
    pub min_size: usize,
    /// Per-channel mean (also sets the pad colour `int(mean * 255)`).
    pub image_mean: [f64; 3],
    /// Per-channel std.
    pub image_std: [f64; 3],
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Whether to subtract the mean and divide by the std.
    pub do_normalize: bool,
}

impl Default for ImageProcessor {
    fn default() -> Self {
        Self {
            image_size: 384,
            min_size: 14,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
        }
    }
}

impl ImageProcessor {
    /// `preprocessor_config.json` of a model directory, or the defaults when the
    /// directory has none.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("preprocessor_config.json");
        if std::fs::symlink_metadata(&path).is_ok() {
            Self::from_file(&path)
        } else {
            Ok(Self::default())
        }
    }

    /// Reads `preprocessor_config.json`; absent fields take the reference defaults.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        crate::tokenizer::regular_file(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| janus_core::Error::io(path, e))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let v: Value = serde_json::from_str(text).map_err(|e| janus_core::Error::Config {
            path: path.into(),
            field: "<root>".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let bad = |field: &str, reason: &str| janus_core::Error::Config {
            path: path.into(),
            field: field.into(),
            reason: reason.into(),
        };
        let mut p = Self::default();
        let size = |k: &str, d: usize| -> Result<usize> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => Ok(x
                    .as_u64()
                    .filter(|n| (1..=MAX_SIDE).contains(n))
                    .ok_or_else(|| bad(k, &format!("expected an integer from 1 to {MAX_SIDE}")))?
                    as usize),
            }
        };
        p.image_size = size("image_size", p.image_size)?;
        p.min_size = size("min_size", p.min_size)?;
        let triple = |k: &str, d: [f64; 3]| -> Result<[f64; 3]> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => {
                    let a: Vec<f64> = x
                        .as_array()
                        .and_then(|a| a.iter().map(Value::as_f64).collect())
                        .unwrap_or_default();
                    a.try_into()
                        .map_err(|_| bad(k, "expected three numbers").into())
                }
            }
        };
        p.image_mean = triple("image_mean", p.image_mean)?;
        p.image_std = triple("image_std", p.image_std)?;
        if p.image_std.iter().any(|s| *s <= 0.0) {
            return Err(bad("image_std", "must be positive").into());
        }
        match v.get("rescale_factor") {
            None | Some(Value::Null) => {}
            Some(r) => {
                p.rescale_factor = r
                    .as_f64()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| bad("rescale_factor", "expected a positive number"))?;
            }
        }
        match v.get("do_normalize") {
            None | Some(Value::Null) => {}
            Some(n) => {
                p.do_normalize = n
                    .as_bool()
                    .ok_or_else(|| bad("do_normalize", "expected true or false"))?;
            }
        }
        Ok(p)
    }

    /// The same settings at another output size (e.g. the VQ image size).
    pub fn with_size(&self, image_size: usize) -> Self {
        Self {
            image_size,
            ..self.clone()
        }
    }

    /// Pad colour: `int(mean * 255)` per channel, as the reference computes it.
    pub fn background(&self) -> [u8; 3] {
        self.image_mean.map(|m| (m * 255.0) as u8)
    }

    /// Resize keeping the aspect ratio (long side to `image_size`), then pad to a square.
    pub fn resize_and_pad(&self, img: &RgbImage) -> RgbImage {
        let s = self.image_size;
        let (w, h) = (img.width, img.height);
        let m = w.max(h) as f64;
        // min_size never exceeds the canvas (a config could ask for more).
        let min = self.min_size.min(s);
        let nh = ((h as f64 / m * s as f64) as usize).max(min);
        let nw = ((w as f64 / m * s as f64) as usize).max(min);
        let resized = resize_bicubic(&img.pixels, w, h, 3, nw, nh);
        let (side, ox, oy) = if nw > nh {
            (nw, 0, (nw - nh) / 2)
        } else {
            (nh, (nh - nw) / 2, 0)
        };
        let bg = self.background();
        let mut out: Vec<u8> = bg.iter().copied().cycle().take(side * side * 3).collect();
        for y in 0..nh {
            let dst = ((y + oy) * side + ox) * 3;
            out[dst..dst + nw * 3].copy_from_slice(&resized[y * nw * 3..(y + 1) * nw * 3]);
        }
        RgbImage {
            width: side,
            height: side,
            pixels: out,
        }
    }

    /// `[3, S, S]` CHW values: `(f32(u8 * rescale) - mean) / std`.
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let n = img.width * img.height;
        let mut out = vec![0f32; 3 * n];
        for (i, px) in img.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let x = (px[c] as f64 * self.rescale_factor) as f32;
                out[c * n + i] = if self.do_normalize {
                    (x - self.image_mean[c] as f32) / self.image_std[c] as f32
                } else {
                    x
                };
            }
        }
        out
    }

    /// Full preprocessing: `[3, S, S]` values ready for the vision encoder.
    pub fn preprocess(&self, img: &RgbImage) -> Vec<f32> {
        self.normalize(&self.resize_and_pad(img))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PNG of one column of `values` (each sample of a pixel set to
    /// it; the encoder takes native-endian samples).
    fn png16(values: &[u16], color: image::ExtendedColorType) -> Vec<u8> {
        let channels = color.channel_count() as usize;
        let raw: Vec<u8> = values
            .iter()
            .flat_map(|v| std::iter::repeat_n(v.to_ne_bytes(), channels).flatten())
            .collect();
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &raw,
            1,
            values.len() as u32,
            color,
        )
        .unwrap();
        png
    }

    #[test]
    fn jpegs_of_many_scans_are_refused_before_decoding() {
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode(&[90; 64 * 48 * 3], 64, 48, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(jpeg_scans(&jpeg), Some(1));
        assert_eq!(decode_image(&jpeg, "one.jpg").unwrap().width, 64);
        // The scan (its header and data) repeated: each would be a pass over
        // the whole image (a 140 KB file of empty scans took 16 s).
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let eoi = jpeg.len() - 2;
        let (head, scan) = (&jpeg[..sos], &jpeg[sos..eoi]);
        let repeated = |n: usize| [head, &scan.repeat(n), &[0xFF, 0xD9]].concat();
        assert_eq!(jpeg_scans(&repeated(MAX_JPEG_SCANS)), Some(MAX_JPEG_SCANS));
        let err = decode_image(&repeated(MAX_JPEG_SCANS + 1), "many.jpg").unwrap_err();
        assert!(
            err.to_string()
                .contains("many.jpg is a JPEG of 101 scans: at most 100"),
            "{err}"
        );
        // Cut before its end: truncated, whatever its scans.
        assert_eq!(jpeg_scans(&jpeg[..eoi]), None);
    }

    #[test]
    fn tiffs_with_jpeg_compression_are_refused() {
        let mut tiff = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::tiff::TiffEncoder::new(std::io::Cursor::new(&mut tiff)),
            &[50; 4 * 3 * 3],
            4,
            3,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
        assert_eq!(tiff_compression(&tiff), Some(1));
        assert_eq!(decode_image(&tiff, "plain.tif").unwrap().pixels, [50; 36]);
        // The same (little-endian) file with its Compression entry set to
        // JPEG (7), then to old-style JPEG (6).
        let ifd = u32::from_le_bytes(tiff[4..8].try_into().unwrap()) as usize;
        let n = u16::from_le_bytes([tiff[ifd], tiff[ifd + 1]]) as usize;
        let entry = (0..n)
            .map(|i| ifd + 2 + 12 * i)
            .find(|&e| tiff[e..e + 2] == 259u16.to_le_bytes())
            .unwrap();
        for jpeg in [7u16, 6] {
            tiff[entry + 8..entry + 10].copy_from_slice(&jpeg.to_le_bytes());
            let err = decode_image(&tiff, "strips.tif").unwrap_err().to_string();
            assert!(
                err.contains("strips.tif is a TIFF with JPEG compression"),
                "{err}"
            );
        }
        // A big-endian directory of one entry: Compression, a SHORT 7.
        let big = b"MM\0*\0\0\0\x08\0\x01\x01\x03\0\x03\0\0\0\x01\0\x07\0\0\0\0\0\0";
        assert_eq!(tiff_compression(big), Some(7));
        // Not TIFFs, or cut short: no answer, nothing read out of bounds.
        for b in [
            &b"MM\0*"[..],
            b"II+\0\x08\0\0\0\xff\xff\xff\xff\xff\xff\xff\x7f",
            b"\x89PNG",
        ] {
            assert_eq!(tiff_compression(b), None);
        }
        assert_eq!(tiff_compression(&tiff[..ifd + 4]), None);
    }

    #[test]
    fn sixteen_bit_pngs_convert_as_pillow_does() {
        use image::ExtendedColorType::{L16, La16, Rgb16, Rgba16};
        let values = [0, 100, 255, 256, 0x80FF, 0x8080, 65535, 1000];
        // Pillow 10.4's `Image.open(png).convert("RGB")` of these files.
        let clipped = [0, 100, 255, 255, 255, 255, 255, 255];
        let high_byte = [0, 0, 0, 1, 128, 128, 255, 3];
        for (color, want) in [
            (L16, clipped),
            (La16, high_byte),
            (Rgb16, high_byte),
            (Rgba16, high_byte),
        ] {
            let img = decode_image(&png16(&values, color), "16-bit.png").unwrap();
            let got: Vec<u8> = img.pixels.chunks(3).map(|p| p[0]).collect();
            assert_eq!(got, want, "{color:?}");
            assert!(img.pixels.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        }
    }
}
