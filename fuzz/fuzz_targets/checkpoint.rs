//! A weight file of any format (safetensors or a torch zip): open it and read
//! every tensor. `cargo +nightly fuzz run checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("janus-fuzz-{}.bin", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(ckpt) = janus_checkpoint::Checkpoint::open(&path) {
        let keys: Vec<String> = ckpt.keys().map(str::to_string).collect();
        for k in keys {
            let _ = ckpt.read_f32(&k);
        }
    }
});
