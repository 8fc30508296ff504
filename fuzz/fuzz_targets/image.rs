//! Image decoding (every format the image crate reads, JPEG through mozjpeg)
//! and preprocessing. `cargo +nightly fuzz run image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(img) = janus_pipeline::decode_image(data, "input") {
        let _ = janus_pipeline::ImageProcessor::default().preprocess(&img);
    }
});
