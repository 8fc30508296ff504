//! The restricted pickle reader on arbitrary bytes. `cargo +nightly fuzz run pickle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = janus_checkpoint::parse_pickle(data);
});
