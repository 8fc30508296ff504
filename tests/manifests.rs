//! Every key and shape of the real checkpoints (Janus-1.3B, Janus-Pro-1B,
//! Janus-Pro-7B) maps onto the model built from that checkpoint's config, with
//! nothing missing or left over; broken manifests fail naming the key.
//!
//! The wgpu pass of the parity suite skips this file: reading and mapping
//! checkpoints does not depend on the backend (the parity suites load the tiny
//! checkpoint on wgpu), and each wgpu test binary costs minutes of compile
//! time in CI.
#![cfg(not(feature = "wgpu"))]

use burn::tensor::DType;
use janus_checkpoint::{Checkpoint, TensorInfo};
use janus_core::Error;
use janus_pipeline::JanusModel;
use janus_pipeline::{JanusConfig, PipelineError};
use janus_tests::{TestBackend as B, manifest_keys, manifests_dir};
use serde_json::Value;

struct Manifest {
    name: String,
    config: JanusConfig,
    keys: Vec<(String, TensorInfo)>,
    unused: usize,
}

fn manifests() -> Vec<Manifest> {
    let dir = manifests_dir();
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let index = index.as_object().unwrap();
    assert!(!index.is_empty());
    index
        .iter()
        .map(|(name, entry)| {
            let path = dir.join(entry["file"].as_str().unwrap());
            let m: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let config = JanusConfig::from_json(&m["config_used"], &path).unwrap();
            let keys = manifest_keys(&m);
            assert_eq!(
                keys.len() as u64,
                entry["num_tensors"].as_u64().unwrap(),
                "{name}"
            );
            let unused = m["keys"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|k| k["unused"] == true)
                .count();
            Manifest {
                name: name.clone(),
                config,
                keys,
                unused,
            }
        })
        .collect()
}

fn load(
    name: &str,
    config: &JanusConfig,
    keys: Vec<(String, TensorInfo)>,
) -> janus_core::Result<Vec<String>> {
    let ckpt = Checkpoint::from_shapes(name, keys)?;
    janus_pipeline::convert::validate(&ckpt, config).map_err(|e| match e {
        PipelineError::Core(e) => e,
        other => panic!("not a loading error: {other}"),
    })
}

#[test]
fn every_real_checkpoint_key_maps_onto_the_model() {
    let all = manifests();
    assert_eq!(all.len(), 3);
    for m in all {
        let skipped =
            load(&m.name, &m.config, m.keys.clone()).unwrap_or_else(|e| panic!("{}: {e}", m.name));
        assert_eq!(skipped.len(), m.unused, "{}: skipped {skipped:?}", m.name);
        // Numbers derived from the config, not constants of one checkpoint.
        let llm_layers = m
            .keys
            .iter()
            .filter(|(k, _)| k.ends_with(".input_layernorm.weight"))
            .count();
        assert_eq!(
            llm_layers, m.config.language.num_hidden_layers,
            "{}",
            m.name
        );
    }
}

#[test]
fn janus_pro_7b_sparse_language_config_takes_llama_defaults() {
    let m = manifests()
        .into_iter()
        .find(|m| m.name.contains("7B"))
        .expect("7B manifest");
    let c = &m.config.language;
    assert_eq!(
        (
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads,
            c.num_key_value_heads
        ),
        (4096, 11008, 32, 32)
    );
    assert_eq!(
        (c.rms_norm_eps, c.rope_theta, c.head_dim),
        (1e-6, 10000.0, 128)
    );
}

#[test]
fn removed_renamed_or_reshaped_keys_fail_naming_the_key() {
    let m = manifests().remove(0);
    let victim = m
        .keys
        .iter()
        .position(|(k, _)| k.ends_with("mlp.down_proj.weight"))
        .unwrap();
    let key = m.keys[victim].0.clone();

    let mut removed = m.keys.clone();
    removed.remove(victim);
    let err = load(&m.name, &m.config, removed).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { key: k, .. } if *k == key),
        "{err}"
    );

    let mut renamed = m.keys.clone();
    renamed[victim].0 = format!("{key}_renamed");
    let err = load(&m.name, &m.config, renamed).unwrap_err();
    assert!(err.to_string().contains(&key), "{err}");

    let mut reshaped = m.keys.clone();
    reshaped[victim].1.shape.reverse();
    let err = load(&m.name, &m.config, reshaped).unwrap_err();
    assert!(
        matches!(&err, Error::ShapeMismatch { key: k, .. } if *k == key),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("{:?}", m.keys[victim].1.shape)),
        "{err}"
    );

    let mut extra = m.keys.clone();
    extra.push((
        "language_model.model.layers.999.extra".into(),
        m.keys[victim].1.clone(),
    ));
    let err = load(&m.name, &m.config, extra).unwrap_err();
    assert!(err.to_string().contains("layers.999.extra"), "{err}");
}

#[test]
fn tiny_checkpoint_loads_whole_with_only_known_unused_keys_skipped() {
    let dir = janus_tests::testdata_dir();
    for file in ["model.safetensors", "pytorch_model.bin"] {
        let config = JanusConfig::from_file(dir.join("config.json")).unwrap();
        let ckpt = Checkpoint::open(dir.join(file)).unwrap();
        JanusModel::<B>::load(&ckpt, &config, &Default::default(), DType::F32).unwrap();
        let skipped = janus_pipeline::convert::validate(&ckpt, &config).unwrap();
        let unused = |k: &str| k.contains(".attn_pool.") || k.ends_with(".codebook_used");
        let expected: Vec<&str> = ckpt.keys().filter(|k| unused(k)).collect();
        assert!(!expected.is_empty());
        assert_eq!(skipped, expected, "{file}");
    }
}

#[test]
fn presets_in_code_equal_the_real_configs() {
    for m in manifests() {
        let preset = match m.name.as_str() {
            "Janus-1.3B" => JanusConfig::janus_1_3b(),
            "Janus-Pro-1B" => JanusConfig::janus_pro_1b(),
            "Janus-Pro-7B" => JanusConfig::janus_pro_7b(),
            other => panic!("no preset for manifest {other}"),
        };
        assert_eq!(preset, m.config, "{}", m.name);
    }
}
