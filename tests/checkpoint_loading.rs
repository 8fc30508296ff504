//! Checkpoint reading: both tiny weight files agree bit for bit, and broken or
//! malicious files are rejected with errors that name the file, key and shapes.
//!
//! The wgpu pass of the parity suite skips this file: reading and mapping
//! checkpoints does not depend on the backend (the parity suites load the tiny
//! checkpoint on wgpu), and each wgpu test binary costs minutes of compile
//! time in CI.
#![cfg(not(feature = "wgpu"))]

use burn::tensor::DType;
use janus_checkpoint::Checkpoint;
use janus_core::{Error, Weights};
use janus_tests::{TestBackend as B, stored_zip, testdata_dir};

#[test]
fn bf16_bin_equals_f32_safetensors_bit_for_bit() {
    let dir = testdata_dir();
    let st = Checkpoint::open(dir.join("model.safetensors")).unwrap();
    let bin = Checkpoint::open(dir.join("pytorch_model.bin")).unwrap();
    let st_keys: Vec<_> = st.keys().collect();
    let bin_keys: Vec<_> = bin.keys().collect();
    assert_eq!(st_keys, bin_keys);
    for key in st.keys() {
        assert_eq!(
            st.info(key).unwrap().shape,
            bin.info(key).unwrap().shape,
            "{key}"
        );
        if st
            .info(key)
            .unwrap()
            .dtype
            .safetensors_name()
            .starts_with('F')
        {
            let a = st.read_f32(key).unwrap();
            let b = bin.read_f32(key).unwrap();
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{key} differs between the two files"
            );
        } else {
            assert_eq!(
                st.read_ints(key).unwrap(),
                bin.read_ints(key).unwrap(),
                "{key}"
            );
        }
    }
}

#[test]
fn directory_prefers_safetensors() {
    let ckpt = Checkpoint::open(testdata_dir()).unwrap();
    assert!(ckpt.path().ends_with("model.safetensors"));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("janus-ckpt-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn truncated_files_are_rejected() {
    let dir = testdata_dir();
    let tmp = temp_dir("truncated");
    for name in ["model.safetensors", "pytorch_model.bin"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let path = tmp.join(name);
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(
            matches!(err, janus_checkpoint::Error::Malformed { .. }),
            "{name}: {err}"
        );
        assert!(
            err.to_string().contains(name),
            "error names the file: {err}"
        );
    }
}

#[test]
fn pickle_calling_an_arbitrary_global_is_rejected() {
    let tmp = temp_dir("evil");
    let path = tmp.join("pytorch_model.bin");
    // A hand-made zip with one stored entry `archive/data.pkl` = os.system("echo pwned").
    let pkl = b"\x80\x02cos\nsystem\nq\x00X\x0b\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.";
    std::fs::write(&path, stored_zip(&[("archive/data.pkl", pkl)])).unwrap();
    let err = Checkpoint::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("os.system") && err.contains("not allowed"),
        "{err}"
    );
}

#[test]
fn missing_shard_is_named() {
    let tmp = temp_dir("shard");
    let index = r#"{"weight_map": {"a.weight": "pytorch_model-00001-of-00002.bin"}}"#;
    std::fs::write(tmp.join("pytorch_model.bin.index.json"), index).unwrap();
    let err = Checkpoint::open(&tmp).unwrap_err().to_string();
    assert!(
        err.contains("pytorch_model-00001-of-00002.bin") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_and_missing_key_name_file_key_and_shapes() {
    let ckpt = Checkpoint::open(testdata_dir().join("model.safetensors")).unwrap();
    let w = Weights::<B>::new(&ckpt, &Default::default(), DType::F32);
    let err = w
        .tensor::<2>("language_model.lm_head.weight", [3, 4])
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }));
    assert!(
        msg.contains("model.safetensors")
            && msg.contains("language_model.lm_head.weight")
            && msg.contains("[3, 4]"),
        "{msg}"
    );
    let err = w.tensor::<1>("no.such.key", [7]).unwrap_err().to_string();
    assert!(err.contains("no.such.key") && err.contains("[7]"), "{err}");
}

#[test]
fn leftover_keys_are_reported_but_known_unused_are_skipped() {
    let ckpt = Checkpoint::open(testdata_dir().join("model.safetensors")).unwrap();
    let w = Weights::<B>::new(&ckpt, &Default::default(), DType::F32);
    let err = w.finish(&janus_pipeline::layout::KNOWN_UNUSED).unwrap_err();
    let Error::UnexpectedTensors { keys, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        keys.iter().any(|k| k == "language_model.lm_head.weight"),
        "{keys:?}"
    );
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("attn_pool") || k.contains("codebook_used")),
        "{keys:?}"
    );
    // The message names a few and counts the rest.
    let text = err.to_string();
    assert!(
        text.contains(&format!("and {} more", keys.len() - 12)),
        "{text}"
    );
}
