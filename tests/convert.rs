//! `convert-weights`: both tiny weight files and a transformers-port copy convert
//! to the same tensors, the result loads and matches the reference, conversion is
//! deterministic, and bad input leaves no output that looks valid.
//!
//! The wgpu pass of the parity suite skips this file: reading and mapping
//! checkpoints does not depend on the backend (the parity suites load the tiny
//! checkpoint on wgpu), and each wgpu test binary costs minutes of compile
//! time in CI.
#![cfg(not(feature = "wgpu"))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use janus_checkpoint::{Checkpoint, StoredDType, TensorInfo, write_safetensors};
use janus_llm::Llama;
use janus_pipeline::JanusModel;
use janus_pipeline::convert::{SIDE_FILES, convert};
use janus_pipeline::layout::{KeyLayout, open_checkpoint};
use janus_tests::{Golden, TestBackend as B, testdata_dir, values};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("janus-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A model directory with the side files and only `weights` from the tiny set.
fn input_with(name: &str, weights: &str) -> PathBuf {
    let src = testdata_dir();
    let dir = tmp(name);
    for f in SIDE_FILES {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(src.join(weights), dir.join(weights)).unwrap();
    dir
}

fn assert_same_tensors(a: &Checkpoint, b: &Checkpoint) {
    let ka: Vec<&str> = a.keys().collect();
    let kb: Vec<&str> = b.keys().collect();
    assert_eq!(ka, kb);
    for k in ka {
        assert_eq!(a.info(k).unwrap().shape, b.info(k).unwrap().shape, "{k}");
        let (x, y) = (a.read_f32(k).unwrap(), b.read_f32(k).unwrap());
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{k} differs"
        );
    }
}

fn logits_match_reference(dir: &Path) {
    let g = Golden::load();
    let model = JanusModel::<B>::load_dir(dir, &Default::default(), DType::F32).unwrap();
    let llm: &Llama<B> = &model.llm;
    let embeds = g.tensor::<3>("und.und_one_image.inputs_embeds");
    let mut cache = llm.new_cache(1, embeds.dims()[1]);
    let logits = llm.logits(llm.forward(embeds, None, &mut cache));
    let shape = logits.dims().to_vec();
    g.assert_close("und.und_one_image.logits", &values(logits), &shape);
    let fixed: Vec<u32> = g
        .ints("vq.decode.fixed.codes")
        .iter()
        .map(|c| *c as u32)
        .collect();
    let dec = model
        .vq()
        .unwrap()
        .decode(&[fixed], model.vq().unwrap().grid())
        .unwrap();
    g.assert_close("vq.decode.fixed.dec", &values(dec.clone()), &dec.dims());
}

#[test]
fn bin_and_safetensors_convert_to_the_same_tensors_and_pass_parity() {
    let from_bin = tmp("out-bin");
    let from_st = tmp("out-st");
    let r1 = convert(
        &input_with("in-bin", "pytorch_model.bin"),
        &from_bin,
        StoredDType::F32,
        None,
        |_, _, _| {},
    )
    .unwrap();
    let r2 = convert(
        &input_with("in-st", "model.safetensors"),
        &from_st,
        StoredDType::F32,
        None,
        |_, _, _| {},
    )
    .unwrap();
    assert_eq!(r1.tensors, r2.tensors);
    assert_eq!(r1.layout, KeyLayout::Original);
    let a = Checkpoint::open(&from_bin).unwrap();
    let b = Checkpoint::open(&from_st).unwrap();
    assert_same_tensors(&a, &b);
    for f in SIDE_FILES {
        assert!(from_bin.join(f).is_file(), "{f} copied");
    }
    logits_match_reference(&from_bin);
    logits_match_reference(&from_st);
}

#[test]
fn conversion_is_deterministic_and_bf16_is_lossless_here() {
    let input = input_with("in-det", "pytorch_model.bin");
    let (o1, o2) = (tmp("det1"), tmp("det2"));
    convert(&input, &o1, StoredDType::BF16, None, |_, _, _| {}).unwrap();
    convert(&input, &o2, StoredDType::BF16, None, |_, _, _| {}).unwrap();
    let (b1, b2) = (
        std::fs::read(o1.join("model.safetensors")).unwrap(),
        std::fs::read(o2.join("model.safetensors")).unwrap(),
    );
    assert!(b1 == b2, "two conversions differ");
    // The tiny weights are bf16-representable: a bf16 file holds them exactly.
    let st = Checkpoint::open(testdata_dir().join("model.safetensors")).unwrap();
    let conv = Checkpoint::open(&o1).unwrap();
    for k in conv.keys() {
        assert_eq!(conv.info(k).unwrap().dtype, StoredDType::BF16);
        assert_eq!(st.read_f32(k).unwrap(), conv.read_f32(k).unwrap(), "{k}");
    }
}

/// Writes the tiny checkpoint in the transformers-port layout (§10.4).
fn write_transformers_layout(dir: &Path) {
    let src = Checkpoint::open(testdata_dir().join("model.safetensors")).unwrap();
    let mut tensors: Vec<(String, TensorInfo, Vec<u8>)> = Vec::new();
    let bytes = |k: &str| src.read_le_bytes(k, StoredDType::F32).unwrap();
    for k in src.keys() {
        let info = src.info(k).unwrap().clone();
        if k.contains(".attn_pool.") || k.ends_with("codebook_used") {
            continue;
        }
        if let Some(rest) = k.strip_prefix("vision_model.vision_tower.blocks.")
            && let Some((n, tail)) = rest.split_once(".attn.qkv.")
        {
            let data = bytes(k);
            let third = data.len() / 3;
            let mut shape = info.shape.clone();
            shape[0] /= 3;
            for (i, p) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let key = format!("model.vision_model.encoder.layers.{n}.self_attn.{p}.{tail}");
                let info = TensorInfo {
                    shape: shape.clone(),
                    dtype: StoredDType::F32,
                };
                tensors.push((key, info, data[i * third..(i + 1) * third].to_vec()));
            }
            continue;
        }
        let mut info = TensorInfo {
            shape: info.shape,
            dtype: StoredDType::F32,
        };
        let key = hf_key(k);
        if key.ends_with("position_embedding.weight") {
            info.shape.remove(0);
        }
        tensors.push((key, info, bytes(k)));
    }
    let specs: Vec<(String, TensorInfo)> = tensors
        .iter()
        .map(|(k, i, _)| (k.clone(), i.clone()))
        .collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        &BTreeMap::new(),
        &specs,
        |i| Ok(tensors[i].2.clone()),
    )
    .unwrap();
}

/// The tiny config in the transformers port's `JanusConfig` schema.
fn write_transformers_config(dir: &Path) {
    let c = janus_pipeline::JanusConfig::from_file(testdata_dir().join("config.json")).unwrap();
    let l = &c.language;
    let hf = serde_json::json!({
        "model_type": "janus",
        "text_config": {"model_type": "llama", "hidden_size": l.hidden_size, "intermediate_size": l.intermediate_size,
            "num_attention_heads": l.num_attention_heads, "num_key_value_heads": l.num_key_value_heads,
            "num_hidden_layers": l.num_hidden_layers, "vocab_size": l.vocab_size,
            "max_position_embeddings": l.max_position_embeddings},
        "vision_config": {"hidden_size": c.vision.width, "num_hidden_layers": c.vision.layers,
            "num_attention_heads": c.vision.heads, "patch_size": c.vision.patch_size, "image_size": c.vision.image_size,
            "mlp_ratio": c.vision.mlp_dim as f64 / c.vision.width as f64, "projection_dim": c.aligner.output_dim},
        "vq_config": {"embed_dim": c.vq.code_dim, "num_embeddings": c.vq.codebook_size,
            "base_channels": c.vq.base_channels, "channel_multiplier": c.vq.encoder_ch_mult, "latent_channels": c.vq.latent_channels,
            "num_res_blocks": c.vq.num_res_blocks, "projection_dim": c.gen_aligner.output_dim,
            "image_token_embed_dim": c.gen_head.mlp_dim},
    });
    std::fs::write(dir.join("config.json"), hf.to_string()).unwrap();
    let mut back = janus_pipeline::JanusConfig::from_file(dir.join("config.json")).unwrap();
    back.vision.model_name.clone_from(&c.vision.model_name); // a label, not a size
    assert_eq!(
        back, c,
        "the transformers-port config reads back as the original"
    );
}

/// The forward direction of the §10.4 table.
fn hf_key(k: &str) -> String {
    let vit = "vision_model.vision_tower.";
    if let Some(r) = k.strip_prefix(vit) {
        let r = r
            .replace("patch_embed.proj.", "embeddings.patch_embedding.")
            .replace(".norm1.", ".layer_norm1.")
            .replace(".norm2.", ".layer_norm2.")
            .replace(".attn.proj.", ".self_attn.projection_layer.");
        let r = if r == "pos_embed" {
            "embeddings.position_embedding.weight".to_string()
        } else {
            r
        };
        let r = r.replacen("blocks.", "encoder.layers.", 1);
        let r = if let Some(t) = r.strip_prefix("norm.") {
            format!("post_layernorm.{t}")
        } else {
            r
        };
        return format!("model.vision_model.{r}");
    }
    for (orig, hf) in [
        ("aligner.layers.0.", "model.aligner.fc1."),
        ("aligner.layers.2.", "model.aligner.hidden_layers.0."),
        ("gen_aligner.layers.0.", "model.generation_aligner.fc1."),
        (
            "gen_aligner.layers.2.",
            "model.generation_aligner.hidden_layers.0.",
        ),
        (
            "gen_head.output_mlp_projector.",
            "model.generation_head.proj_out.",
        ),
        (
            "gen_head.vision_head.",
            "model.generation_head.vision_head.",
        ),
        ("gen_embed.", "model.generation_embeddings."),
        ("language_model.model.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
    ] {
        if let Some(r) = k.strip_prefix(orig) {
            return format!("{hf}{r}");
        }
    }
    let r = k.strip_prefix("gen_vision_model.").unwrap();
    let r = r
        .replace("encoder.conv_blocks.", "encoder.down.")
        .replace("decoder.conv_blocks.", "decoder.up.")
        .replace(".res.", ".block.")
        .replace("mid.0.", "mid.block_1.")
        .replace("mid.1.", "mid.attn_1.")
        .replace("mid.2.", "mid.block_2.");
    format!("model.vqmodel.{r}")
}

#[test]
fn transformers_port_layout_converts_to_the_same_tensors() {
    let input = tmp("in-hf");
    for f in SIDE_FILES {
        std::fs::copy(testdata_dir().join(f), input.join(f)).unwrap();
    }
    write_transformers_layout(&input);
    write_transformers_config(&input);
    let (_, layout) = open_checkpoint(&input).unwrap();
    assert_eq!(layout, KeyLayout::Transformers);
    let out = tmp("out-hf");
    let report = convert(&input, &out, StoredDType::F32, None, |_, _, _| {}).unwrap();
    assert_eq!(report.layout, KeyLayout::Transformers);
    let reference = tmp("out-ref");
    convert(
        &input_with("in-ref", "model.safetensors"),
        &reference,
        StoredDType::F32,
        None,
        |_, _, _| {},
    )
    .unwrap();
    assert_same_tensors(
        &Checkpoint::open(&out).unwrap(),
        &Checkpoint::open(&reference).unwrap(),
    );
    // The runtime also loads the transformers layout directly.
    logits_match_reference(&input);
}

#[test]
fn bad_inputs_fail_and_leave_no_valid_looking_output() {
    let src = testdata_dir();
    // Truncated weights.
    let input = input_with("in-trunc", "pytorch_model.bin");
    let bin = std::fs::read(input.join("pytorch_model.bin")).unwrap();
    std::fs::write(input.join("pytorch_model.bin"), &bin[..bin.len() - 4096]).unwrap();
    let out = tmp("out-trunc");
    let err = convert(&input, &out, StoredDType::BF16, None, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("pytorch_model.bin"), "{err}");
    assert!(!out.join("model.safetensors").exists());
    // A key the config does not know.
    let input = tmp("in-extra");
    for f in SIDE_FILES {
        std::fs::copy(src.join(f), input.join(f)).unwrap();
    }
    let st = Checkpoint::open(src.join("model.safetensors")).unwrap();
    let mut specs: Vec<(String, TensorInfo)> = st
        .keys()
        .map(|k| (k.to_string(), st.info(k).unwrap().clone()))
        .collect();
    specs.push((
        "language_model.model.layers.0.mystery".into(),
        TensorInfo {
            shape: vec![2],
            dtype: StoredDType::F32,
        },
    ));
    let n = specs.len();
    write_safetensors(
        &input.join("model.safetensors"),
        &BTreeMap::new(),
        &specs,
        |i| {
            Ok(if i + 1 == n {
                vec![0; 8]
            } else {
                st.read_le_bytes(&specs[i].0, specs[i].1.dtype).unwrap()
            })
        },
    )
    .unwrap();
    let out = tmp("out-extra");
    let err = convert(&input, &out, StoredDType::BF16, None, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("mystery"), "{err}");
    assert!(!out.join("model.safetensors").exists());
    // Missing shard named in the index.
    let input = tmp("in-shard");
    for f in SIDE_FILES {
        std::fs::copy(src.join(f), input.join(f)).unwrap();
    }
    std::fs::write(
        input.join("pytorch_model.bin.index.json"),
        r#"{"weight_map": {"x": "pytorch_model-00002-of-00002.bin"}}"#,
    )
    .unwrap();
    let err = convert(
        &input,
        &tmp("out-shard"),
        StoredDType::BF16,
        None,
        |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pytorch_model-00002-of-00002.bin"), "{err}");
    // The input itself as the output (also through another spelling of the
    // path) where its weights are `model.safetensors`: refused before
    // anything is written, the input left as it was.
    let input = input_with("in-self", "model.safetensors");
    let before = std::fs::read(input.join("model.safetensors")).unwrap();
    for out in [
        input.clone(),
        input.join(".").join("..").join(input.file_name().unwrap()),
    ] {
        let err = convert(&input, &out, StoredDType::BF16, None, |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("is the checkpoint being converted"), "{err}");
    }
    assert_eq!(
        std::fs::read(input.join("model.safetensors")).unwrap(),
        before
    );
    // Beside `.bin` weights, in place is allowed (the new file is read first).
    let bin = input_with("in-place-bin", "pytorch_model.bin");
    convert(&bin, &bin, StoredDType::BF16, None, |_, _, _| {}).unwrap();
    assert!(bin.join("model.safetensors").is_file());
    // Beside a safetensors index (read before model.safetensors): refused.
    let sharded = input_with("in-place-index", "model.safetensors");
    std::fs::rename(
        sharded.join("model.safetensors"),
        sharded.join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    let st = Checkpoint::open(sharded.join("model-00001-of-00001.safetensors")).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = st
        .keys()
        .map(|k| (k.to_string(), "model-00001-of-00001.safetensors".into()))
        .collect();
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let err = convert(&sharded, &sharded, StoredDType::BF16, None, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("in front of the new model.safetensors"),
        "{err}"
    );
    // An output that is a file.
    let file = tmp("out-file").join("a-file");
    std::fs::write(&file, b"").unwrap();
    let err = convert(&input, &file, StoredDType::BF16, None, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("exists and is not a directory"), "{err}");
}

#[test]
fn side_files_of_an_earlier_conversion_never_pair_with_new_weights() {
    // A full conversion first, then one from a checkpoint without a
    // preprocessor config into the same directory: the earlier copy goes.
    let full = input_with("in-full", "model.safetensors");
    let out = tmp("out-side");
    convert(&full, &out, StoredDType::BF16, None, |_, _, _| {}).unwrap();
    assert!(out.join("preprocessor_config.json").is_file());
    let partial = input_with("in-no-preproc", "model.safetensors");
    std::fs::remove_file(partial.join("preprocessor_config.json")).unwrap();
    // A killed run's temporary file (its pid above Linux's largest).
    let leftover = out.join(".model.safetensors.99999999-0.partial");
    std::fs::write(&leftover, b"half").unwrap();
    let report = convert(&partial, &out, StoredDType::BF16, None, |_, _, _| {}).unwrap();
    assert!(!out.join("preprocessor_config.json").exists());
    assert!(
        report
            .removed
            .contains(&out.join("preprocessor_config.json"))
    );
    if Path::new("/proc/self").exists() {
        assert!(!leftover.exists() && report.removed.contains(&leftover));
    }
    assert!(out.join("tokenizer.json").is_file());
    // A conversion running into the same directory (its lock held, here by
    // this process): the next waits for it; a lock file nobody holds (a
    // killed run's: the system releases its lock) is taken over.
    let lock = out.join(janus_pipeline::convert::CONVERT_LOCK);
    let held = std::fs::File::create(&lock).unwrap();
    held.lock().unwrap();
    std::fs::write(&lock, std::process::id().to_string()).unwrap();
    // What the CLI names when it waits.
    assert_eq!(
        janus_pipeline::convert::lock_holder(&out),
        Some(std::process::id())
    );
    std::thread::scope(|s| {
        let waiting = s.spawn(|| convert(&partial, &out, StoredDType::BF16, None, |_, _, _| {}));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!waiting.is_finished(), "did not wait for the lock");
        drop(held);
        waiting.join().unwrap().unwrap();
    });
    assert!(
        !lock.exists(),
        "the lock is removed when the conversion ends"
    );
    // Lock files nobody holds, whatever they say (a killed run's pid, a pid
    // now another process's, nothing: a full disk once left an empty one
    // that every later conversion waited on for ever).
    let live = std::process::id().to_string();
    for stale in ["99999999", "self", "  \n", "", &live] {
        std::fs::write(&lock, stale).unwrap();
        assert_eq!(
            janus_pipeline::convert::lock_holder(&out),
            None,
            "{stale:?}"
        );
        convert(&partial, &out, StoredDType::BF16, None, |_, _, _| {}).unwrap();
        assert!(!lock.exists());
    }
    // Without a tokenizer that loads, or with a side file that is not a
    // regular file: refused before anything is written, and a new output
    // directory is not left behind.
    let no_tok = input_with("in-no-tok", "model.safetensors");
    std::fs::remove_file(no_tok.join("tokenizer.json")).unwrap();
    let fresh = tmp("out-fresh").join("new").join("deeper");
    let err = convert(&no_tok, &fresh, StoredDType::BF16, None, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer does not load"), "{err}");
    assert!(!fresh.parent().unwrap().exists());
    // Side files that load but do not fit the model: a token id past the
    // embedding, no image tokens, a one-channel normalisation (each loaded
    // as the model loads them, so `understand` would fail on the copy).
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(no_tok.join("config.json")).unwrap())
            .unwrap();
    let vocab = config["language_config"]["vocab_size"].as_u64().unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: [(&str, Edit, &str); 3] = [
        (
            "tokenizer.json",
            Box::new(move |t| t["model"]["vocab"]["zzzz"] = serde_json::json!(vocab + 3)),
            "token rows",
        ),
        (
            "processor_config.json",
            Box::new(|p| p["num_image_tokens"] = serde_json::json!(0)),
            "num_image_tokens",
        ),
        (
            "preprocessor_config.json",
            Box::new(|p| p["image_mean"] = serde_json::json!([0.5])),
            "image_mean",
        ),
    ];
    for (file, edit, needle) in cases {
        let bad = input_with("in-bad-side", "model.safetensors");
        let path = bad.join(file);
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = convert(&bad, &fresh, StoredDType::BF16, None, |_, _, _| {})
            .expect_err(file)
            .to_string();
        assert!(
            err.contains("could not run") && err.contains(needle),
            "{file}: {err}"
        );
        assert!(!fresh.exists());
    }
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let err = convert(&no_tok, &out, StoredDType::F32, None, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer does not load"), "{err}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );
    let dir_side = input_with("in-dir-side", "model.safetensors");
    std::fs::remove_file(dir_side.join("special_tokens_map.json")).unwrap();
    std::fs::create_dir(dir_side.join("special_tokens_map.json")).unwrap();
    let err = convert(&dir_side, &fresh, StoredDType::BF16, None, |_, _, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("special_tokens_map.json is not a regular file"),
        "{err}"
    );
    assert!(!fresh.exists());
}

#[test]
fn a_converted_copy_keeps_the_chat_template_of_its_source() {
    use janus_pipeline::Processor;
    use janus_pipeline::chat::{TEMPLATE_KEY, Template};
    let vision = janus_pipeline::JanusConfig::from_file(testdata_dir().join("config.json"))
        .unwrap()
        .vision;
    let template = |dir: &Path| {
        Processor::from_dir(dir, &dir.display().to_string(), &vision, None)
            .unwrap()
            .template()
    };
    // The tiny tokenizer has `<|User|>`: only a directory named for
    // Janus-1.3B gives its `User:` template, and the copy is named otherwise.
    for (name, want) in [
        ("Janus-1.3B-local", Template::Janus),
        ("pro-local", Template::Pro),
    ] {
        let input = input_with(name, "model.safetensors");
        let out = tmp(&format!("copy-of-{}", want.name()));
        let report = convert(&input, &out, StoredDType::BF16, None, |_, _, _| {}).unwrap();
        assert_eq!(report.template, Some(want));
        assert_eq!(template(&input), want, "{name}");
        assert_eq!(template(&out), want, "copy of {name}");
        let read = |dir: &Path| -> serde_json::Value {
            serde_json::from_str(
                &std::fs::read_to_string(dir.join("processor_config.json")).unwrap(),
            )
            .unwrap()
        };
        let (source, copy) = (read(&input), read(&out));
        assert_eq!(copy[TEMPLATE_KEY], want.name());
        for (key, value) in source.as_object().unwrap() {
            assert_eq!(&copy[key], value, "{key} kept");
        }
    }
    // A recorded template wins over the name; a bad one is an error naming the file.
    let input = input_with("Janus-1.3B-recorded", "model.safetensors");
    let path = input.join("processor_config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json[TEMPLATE_KEY] = "pro".into();
    std::fs::write(&path, json.to_string()).unwrap();
    assert_eq!(template(&input), Template::Pro);
    json[TEMPLATE_KEY] = "chatml".into();
    std::fs::write(&path, json.to_string()).unwrap();
    let err = Processor::from_dir(&input, "x", &vision, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("chatml"), "{err}");
}

#[test]
fn manifests_validate_at_shape_level() {
    let dir = janus_tests::manifests_dir();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.starts_with("Janus") {
            continue;
        }
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let config = janus_pipeline::JanusConfig::from_json(&m["config_used"], &path).unwrap();
        let keys = janus_tests::manifest_keys(&m);
        let ckpt = Checkpoint::from_shapes(&path, keys).unwrap();
        let skipped = janus_pipeline::convert::validate(&ckpt, &config).unwrap();
        assert!(!skipped.is_empty(), "{name}");
        let variant = janus_pipeline::convert::detect_variant(&config, &name);
        assert!(
            variant.starts_with(name.trim_end_matches(".json")) || variant.contains("same shapes"),
            "{name}: {variant}"
        );
    }
}
