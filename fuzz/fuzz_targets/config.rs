//! `config.json` parsing on arbitrary text. `cargo +nightly fuzz run config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = janus_pipeline::JanusConfig::from_json_str(text, "config.json");
    }
});
