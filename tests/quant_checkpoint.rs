//! Quantized checkpoints (`convert --quant`), loading only the modules a task
//! uses, and memory-aware generation on the tiny reference checkpoint:
//! - a q8_0 / q4_0 checkpoint loads (at its stored format) to exactly the
//!   model that quantizing the original at load gives, and re-quantizes to
//!   another format on request;
//! - generation-only and understanding-only loads skip the other direction's
//!   weights, hold fewer bytes, give the reference's outputs and refuse the
//!   other direction with an error that names the missing module;
//! - images generated in chunks (a memory limit) are the images of one batch;
//! - a run where one image does not fit is refused, naming the need, what is
//!   available and the dtype that would fit.
//!
//! The wgpu pass of the parity suite skips this file: what it checks (file
//! layout, module selection, memory planning) does not depend on the backend.
#![cfg(not(feature = "wgpu"))]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use janus_checkpoint::{Checkpoint, StoredDType, TensorInfo, write_safetensors};
use janus_core::{Precision, QuantFormat};
use janus_pipeline::convert::{SIDE_FILES, convert};
use janus_pipeline::{
    ImageGenConfig, ImageRequest, Janus, JanusConfig, JanusModel, Modules, Request,
};
use janus_tests::{Golden, TestBackend as B, cosine, testdata_dir, values};
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("janus-quant-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny set's side files and safetensors weights in a fresh directory.
fn tiny_copy(name: &str) -> PathBuf {
    let src = testdata_dir();
    let dir = tmp(name);
    for f in SIDE_FILES.iter().chain(&["model.safetensors"]) {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    dir
}

/// `input` converted to `out` with f32 dense tensors and `format` matrices.
fn quantize(
    input: &Path,
    out: &Path,
    format: QuantFormat,
) -> janus_pipeline::convert::ConvertReport {
    convert(input, out, StoredDType::F32, Some(format), |_, _, _| {}).unwrap()
}

/// The `__metadata__` of a safetensors file.
fn metadata(path: &Path) -> BTreeMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    serde_json::from_value(header["__metadata__"].clone()).unwrap()
}

/// The LLM's logits on the golden understanding prompt, and the gen head's
/// logits on its last hidden state.
fn outputs(m: &JanusModel<B>) -> (Vec<f32>, Vec<f32>) {
    let g = Golden::load();
    let embeds = g
        .tensor::<3>("und.und_one_image.inputs_embeds")
        .cast(m.dtype());
    let mut cache = m.llm.new_cache(1, embeds.dims()[1]);
    let hidden = m.llm.forward(embeds, None, &mut cache);
    let logits = values(m.llm.logits(hidden.clone()));
    let codes = values(m.gen_head().unwrap().forward(hidden));
    (logits, codes)
}

#[test]
fn quantized_checkpoints_load_to_the_model_quantized_at_load() {
    let input = tiny_copy("in");
    let original = std::fs::metadata(input.join("model.safetensors"))
        .unwrap()
        .len();
    let f32_model = JanusModel::<B>::load_dir(&input, &Default::default(), DType::F32).unwrap();
    let (f32_logits, _) = outputs(&f32_model);
    for format in QuantFormat::ALL {
        let out = tmp(&format!("out-{format}"));
        let report = quantize(&input, &out, format);
        let file = out.join("model.safetensors");

        // The layout: format version 2, the format named, planes beside the
        // dense tensors, the quantized matrices' dense keys gone.
        let meta = metadata(&file);
        assert_eq!(meta["format_version"], "2");
        assert_eq!(meta["quant"], format.name());
        assert_eq!(meta["quant_block"], "32");
        let ckpt = Checkpoint::open(&file).unwrap();
        let key = "language_model.model.layers.0.mlp.gate_proj.weight";
        let (qs, scales) = format.plane_keys(key);
        assert!(ckpt.info(key).is_none(), "{key} is stored quantized");
        let source = Checkpoint::open(input.join("model.safetensors")).unwrap();
        let (rows, cols) = match source.info(key).unwrap().shape[..] {
            [r, c] => (r, c),
            ref s => panic!("{key}: shape {s:?}"),
        };
        assert_eq!(ckpt.info(&qs).unwrap().shape, [rows, format.qs_cols(cols)]);
        assert_eq!(ckpt.info(&qs).unwrap().dtype, format.stored_dtype());
        assert_eq!(ckpt.info(&scales).unwrap().shape, [rows, cols / 32]);
        assert_eq!(ckpt.info(&scales).unwrap().dtype, StoredDType::F16);
        // A matrix whose input width is not a multiple of 32 stays dense.
        let dense = "language_model.model.layers.0.mlp.down_proj.weight";
        assert_eq!(source.info(dense).unwrap().shape[1] % 32, 16);
        assert_eq!(ckpt.info(dense).unwrap().dtype, StoredDType::F32);
        // The LLM's linears, lm_head and the gen head's two matrices, where
        // the width allows.
        let want = source
            .keys()
            .filter(|k| {
                let llm = k.starts_with("language_model.") && !k.contains("embed_tokens");
                (llm || k.starts_with("gen_head.")) && k.ends_with(".weight")
            })
            .filter(|k| matches!(source.info(k).unwrap().shape[..], [_, c] if c % 32 == 0))
            .count();
        assert_eq!(report.quantized, want, "{format}");
        assert!(want > 3);
        let size = std::fs::metadata(&file).unwrap().len();
        assert!(size < original, "{format}: {size} >= {original} bytes");

        // Loaded at its stored format (no --dtype): the same model as
        // quantizing the original at load.
        let stored = JanusModel::<B>::load_dir(&out, &Default::default(), DType::F32).unwrap();
        assert_eq!(stored.precision(), Precision::quantized(DType::F32, format));
        let at_load = JanusModel::<B>::load_dir(
            &input,
            &Default::default(),
            Precision::quantized(DType::F32, format),
        )
        .unwrap();
        assert_eq!(stored.weight_bytes(), at_load.weight_bytes(), "{format}");
        let (a, b) = (outputs(&stored), outputs(&at_load));
        assert_eq!(a.0, b.0, "{format}: LLM logits differ");
        assert_eq!(a.1, b.1, "{format}: gen head logits differ");
        let cos = cosine(&a.0, &f32_logits);
        let floor = match format {
            QuantFormat::Q8_0 => 0.999,
            QuantFormat::Q4_0 => 0.975,
        };
        assert!(cos >= floor, "{format}: logits cosine {cos} < {floor}");

        // An already-quantized checkpoint is not converted again.
        let again = tmp(&format!("again-{format}"));
        let err = convert(&out, &again, StoredDType::F32, None, |_, _, _| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("already quantized"), "{err}");
    }
}

#[test]
fn a_quantized_checkpoint_keeps_its_format_or_requantizes_on_request() {
    let input = tiny_copy("req-in");
    let out = tmp("req-q8");
    quantize(&input, &out, QuantFormat::Q8_0);
    let (reference, _) =
        outputs(&JanusModel::<B>::load_dir(&input, &Default::default(), DType::F32).unwrap());
    // q8_0 on disk, q4_0 asked for: every quantized matrix is q4_0.
    let q4 = JanusModel::<B>::load_dir(
        &out,
        &Default::default(),
        Precision::quantized(DType::F32, QuantFormat::Q4_0),
    )
    .unwrap();
    assert_eq!(q4.precision().quant, Some(QuantFormat::Q4_0));
    assert_eq!(
        q4.llm.layers[0].self_attn.q_proj.quant_format(),
        Some(QuantFormat::Q4_0)
    );
    let cos = cosine(&outputs(&q4).0, &reference);
    assert!(cos >= 0.97, "q8_0 -> q4_0 logits cosine {cos}");
    // q8_0 on disk, a float dtype asked for: the rest is f16, the matrices
    // stay q8_0 (dequantizing would add bytes, not accuracy).
    let f16 = JanusModel::<B>::load_dir(&out, &Default::default(), DType::F16).unwrap();
    assert_eq!(
        f16.precision(),
        Precision::quantized(DType::F16, QuantFormat::Q8_0)
    );
    let cos = cosine(&outputs(&f16).0, &reference);
    assert!(cos >= 0.999, "q8_0 with f16 logits cosine {cos}");
}

#[test]
fn each_direction_loads_only_its_modules() {
    let g = Golden::load();
    let dir = testdata_dir();
    let model = dir.to_str().unwrap();
    let device = Default::default();
    let all = Janus::<B>::load(model, &device, DType::F32).unwrap();
    let generating = Janus::<B>::load_modules(
        model,
        &device,
        DType::F32,
        None,
        Modules::Generation,
        |_| {},
    )
    .unwrap();
    let understanding = Janus::<B>::load_modules(
        model,
        &device,
        DType::F32,
        None,
        Modules::Understanding,
        |_| {},
    )
    .unwrap();
    let bytes = all.model().weight_bytes();
    assert!(generating.model().weight_bytes() < bytes);
    assert!(understanding.model().weight_bytes() < bytes);
    assert!(generating.model().llm.lm_head.is_none());
    for (m, missing) in [
        (&generating, "vision_model"),
        (&understanding, "gen_vision_model"),
    ] {
        let err = match missing {
            "vision_model" => m.model().vision().err(),
            _ => m.model().vq().err(),
        }
        .expect("module left out")
        .to_string();
        assert!(err.contains(missing), "{err}");
    }

    // Generation-only: the reference's argmax codes.
    let prompt = g.at("prompts.pro.image_generation.messages")[0]["content"]
        .as_str()
        .unwrap();
    let want = g.id_rows("image_generation.argmax_tokens");
    let request = ImageRequest::new(prompt).config(ImageGenConfig {
        parallel: want.len(),
        cfg_weight: g.at("image_generation.cfg_weight").as_f64().unwrap() as f32,
        temperature: 0.0,
        seed: 1,
    });
    let images = generating.generate_images(&request, |_, _| {}).unwrap();
    let codes: Vec<Vec<u32>> = images.iter().map(|i| i.codes.clone()).collect();
    assert_eq!(codes, want);
    let err = understanding
        .generate_images(&request, |_, _| {})
        .expect_err("no generation modules")
        .to_string();
    assert!(err.contains("gen_"), "{err}");

    // Understanding-only: the same answer as the full model.
    let image = janus_pipeline::open_image(
        std::fs::read_dir(dir.join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .min()
            .unwrap(),
    )
    .unwrap();
    let question = Request::new("What is this?").image(image).max_new_tokens(6);
    let answer = |j: &Janus<B>| -> Vec<u32> {
        let mut u = j.understand(&question).unwrap();
        for d in u.by_ref() {
            d.unwrap();
        }
        u.token_ids().to_vec()
    };
    assert_eq!(answer(&understanding), answer(&all));
    // A text-only question needs lm_head, which generation leaves out.
    let err = generating
        .understand(&Request::new("Hello?").max_new_tokens(2))
        .err()
        .expect("no lm_head")
        .to_string();
    assert!(err.contains("language_model.lm_head"), "{err}");
    let err = generating
        .understand(&question)
        .err()
        .expect("no SigLIP")
        .to_string();
    assert!(err.contains("image generation only"), "{err}");
}

#[test]
fn chunked_generation_gives_the_images_of_one_batch() {
    let dir = testdata_dir();
    let model = dir.to_str().unwrap();
    let mut janus = Janus::<B>::load_modules(
        model,
        &Default::default(),
        DType::F32,
        None,
        Modules::Generation,
        |_| {},
    )
    .unwrap();
    let request = ImageRequest::new("a small blue boat").config(ImageGenConfig {
        parallel: 3,
        cfg_weight: 3.0,
        temperature: 1.0,
        seed: 7,
    });
    let batch = janus.generate_images(&request, |_, _| {}).unwrap();
    let prompt_len = janus
        .processor()
        .generation_prompt("a small blue boat")
        .unwrap()
        .len();
    let plan = janus.generation_memory(prompt_len);
    // Room for two images at once, not three.
    janus.set_memory_limit(Some(plan.need(2)));
    assert_eq!(janus.images_that_fit(prompt_len, 3), 2);
    let mut steps = Vec::new();
    let chunked = janus
        .generate_images(&request, |d, n| steps.push((d, n)))
        .unwrap();
    assert_eq!(chunked.len(), 3);
    for (i, (a, b)) in batch.iter().zip(&chunked).enumerate() {
        assert_eq!(a.codes, b.codes, "image {i}");
        assert_eq!(a.image.pixels, b.image.pixels, "image {i}");
    }
    // Progress runs over both chunks, monotone, to the end.
    let grid = janus.config().vq.grid_side().pow(2);
    assert!(steps.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(steps.last(), Some(&(2 * grid, 2 * grid)));
    // Distinct seeds per image: the three images differ.
    assert_ne!(batch[0].codes, batch[1].codes);
    assert_ne!(batch[1].codes, batch[2].codes);
    // Less than one image: refused, naming the need.
    janus.set_memory_limit(Some(plan.need(1) - 1));
    let err = janus
        .generate_images(&request, |_, _| {})
        .expect_err("does not fit")
        .to_string();
    assert!(err.contains("at most 0 fit"), "{err}");
}

#[test]
fn a_generation_that_does_not_fit_is_refused_before_loading() {
    let dir = testdata_dir();
    let model = dir.to_str().unwrap();
    let request = ImageRequest::new("a red apple").config(ImageGenConfig {
        parallel: 4,
        ..ImageGenConfig::default()
    });
    let plan = |precision: Precision, limit: u64| {
        Janus::<B>::plan_generation(model, precision, None, &request, Some(limit), |_| {}).unwrap()
    };
    let f16 = plan(DType::F16.into(), u64::MAX);
    let f32 = plan(DType::F32.into(), u64::MAX);
    assert!(f32.memory.weights > f16.memory.weights);
    // KV cache in the weights' 16 bits.
    assert!(f32.memory.per_image > f16.memory.per_image);
    assert_eq!(f16.at_once, 4);
    assert!(f16.check().is_ok());

    // Room for one f16 image, not one f32 image: refused, naming f16.
    let limit = f16.memory.need(1);
    let refused = plan(DType::F32.into(), limit);
    assert_eq!(refused.at_once, 0);
    assert_eq!(refused.would_fit, Some(Precision::from(DType::F16)));
    let err = refused.check().unwrap_err().to_string();
    for needle in [
        "needs about",
        "available (--max-memory)",
        "--dtype f16 would fit",
    ] {
        assert!(err.contains(needle), "`{needle}` not in: {err}");
    }
    // Room for two f16 images: chunks of two, said in the summary.
    let two = plan(DType::F16.into(), f16.memory.need(2));
    assert_eq!(two.at_once, 2);
    assert!(
        two.summary().contains("in chunks of 2"),
        "{}",
        two.summary()
    );
    // Room for nothing: no dtype fits.
    let none = plan(DType::F32.into(), 1 << 20);
    assert_eq!(none.would_fit, None);
    let err = none.check().unwrap_err().to_string();
    assert!(err.contains("no dtype fits"), "{err}");
}

#[test]
fn damaged_quantized_checkpoints_are_refused_naming_the_key() {
    let input = tiny_copy("dmg-in");
    let good = tmp("dmg-q4");
    quantize(&input, &good, QuantFormat::Q4_0);
    let ckpt = Checkpoint::open(good.join("model.safetensors")).unwrap();
    let key = "language_model.model.layers.1.mlp.up_proj.weight";
    let (qs, scales) = QuantFormat::Q4_0.plane_keys(key);
    // (what is done to the file, what the error must name)
    type Damage = fn(&str, TensorInfo, Vec<u8>) -> Option<(TensorInfo, Vec<u8>)>;
    let cases: [(&str, Damage, &[&str]); 4] = [
        (
            "scales of the wrong shape",
            |k, mut info, mut bytes| {
                if k.ends_with("up_proj.weight.q4_0.scales") && k.contains("layers.1.") {
                    info.shape[1] += 1;
                    bytes.extend(vec![0; info.shape[0] * 2]);
                }
                Some((info, bytes))
            },
            &["layers.1.mlp.up_proj.weight.q4_0.scales"],
        ),
        (
            "values of the wrong dtype",
            |k, mut info, bytes| {
                if k.ends_with("up_proj.weight.q4_0.qs") && k.contains("layers.1.") {
                    info.dtype = StoredDType::I8;
                }
                Some((info, bytes))
            },
            &["layers.1.mlp.up_proj.weight.q4_0.qs", "U8"],
        ),
        (
            "a NaN scale",
            |k, info, mut bytes| {
                if k.ends_with("up_proj.weight.q4_0.scales") && k.contains("layers.1.") {
                    bytes[6..8].copy_from_slice(&[0x00, 0x7e]); // f16 NaN
                }
                Some((info, bytes))
            },
            &[
                "layers.1.mlp.up_proj.weight.q4_0.scales",
                "non-finite",
                "block 3",
            ],
        ),
        (
            "a missing scales plane",
            |k, info, bytes| {
                (!(k.ends_with("up_proj.weight.q4_0.scales") && k.contains("layers.1.")))
                    .then_some((info, bytes))
            },
            &["layers.1.mlp.up_proj.weight.q4_0.scales"],
        ),
    ];
    assert!(ckpt.info(&qs).is_some() && ckpt.info(&scales).is_some());
    for (what, damage, needles) in cases {
        let dir = tmp("dmg-case");
        for f in SIDE_FILES {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        let mut specs = Vec::new();
        let mut data = Vec::new();
        for k in ckpt.keys() {
            let info = ckpt.info(k).unwrap().clone();
            let bytes = ckpt.read_bytes(k, info.dtype).unwrap();
            if let Some((info, bytes)) = damage(k, info, bytes) {
                specs.push((k.to_string(), info));
                data.push(bytes);
            }
        }
        write_safetensors(
            &dir.join("model.safetensors"),
            &BTreeMap::new(),
            &specs,
            |i| Ok(data[i].clone()),
        )
        .unwrap();
        for precision in [
            Precision::from(DType::F32),
            Precision::quantized(DType::F32, QuantFormat::Q8_0),
        ] {
            let err = JanusModel::<B>::load_dir(&dir, &Default::default(), precision)
                .err()
                .unwrap_or_else(|| panic!("{what}: loaded"))
                .to_string();
            for needle in needles {
                assert!(err.contains(needle), "{what}: `{needle}` not in: {err}");
            }
        }
    }
}

/// `path` with its safetensors header changed by `edit` (the header is
/// rewritten, the data kept).
fn edit_header(path: &Path, edit: impl FnOnce(&mut Value)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut text = serde_json::to_vec(&header).unwrap();
    // Safetensors pads the header to 8 bytes with spaces.
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_checkpoint_of_another_format_version_or_block_size_is_refused() {
    let input = tiny_copy("ver-in");
    let good = tmp("ver-q4");
    quantize(&input, &good, QuantFormat::Q4_0);
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "format_version",
            "3",
            &["newer janus-rs", "format_version 3"],
        ),
        ("format_version", "two", &["`format_version` is `two`"]),
        (
            "quant_block",
            "64",
            &["`quant_block` is `64`", "blocks of 32"],
        ),
        ("format", "someone-else", &[]),
    ];
    for (field, value, needles) in cases {
        let dir = tmp("ver-case");
        for f in SIDE_FILES.iter().chain(&["model.safetensors"]) {
            std::fs::copy(good.join(f), dir.join(f)).unwrap();
        }
        let file = dir.join("model.safetensors");
        edit_header(&file, |h| {
            h["__metadata__"][field] = Value::String(value.into());
        });
        let loaded = JanusModel::<B>::load_dir(&dir, &Default::default(), DType::F32);
        if needles.is_empty() {
            // Metadata that is not ours is not read.
            assert!(loaded.is_ok(), "{field}={value}: {:?}", loaded.err());
            continue;
        }
        let err = loaded
            .err()
            .unwrap_or_else(|| panic!("{field}={value}: loaded"))
            .to_string();
        for needle in needles.iter().chain(&["model.safetensors"]) {
            assert!(
                err.contains(needle),
                "{field}={value}: `{needle}` not in: {err}"
            );
        }
    }
    // A metadata entry that is not an object is a malformed file.
    let dir = tmp("ver-case");
    for f in SIDE_FILES.iter().chain(&["model.safetensors"]) {
        std::fs::copy(good.join(f), dir.join(f)).unwrap();
    }
    let file = dir.join("model.safetensors");
    edit_header(&file, |h| h["__metadata__"] = Value::from(7));
    let err = Checkpoint::open(&file).expect_err("opened").to_string();
    assert!(err.contains("`__metadata__` is not an object"), "{err}");
}

#[test]
fn a_block_format_no_matrix_can_take_is_not_reported() {
    // Every quantizable width 90 or 186: none is a multiple of 32.
    let path = testdata_dir().join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let l = &mut c["language_config"];
    (l["hidden_size"], l["intermediate_size"]) = (90.into(), 186.into());
    (l["num_attention_heads"], l["num_key_value_heads"]) = (5.into(), 5.into());
    c["gen_head_config"]["params"]["n_embed"] = 90.into();
    c["gen_head_config"]["params"]["image_token_embed"] = 90.into();
    c["aligner_config"]["params"]["n_embed"] = 90.into();
    c["gen_aligner_config"]["params"]["n_embed"] = 90.into();
    let config = JanusConfig::from_json_str(&c.to_string(), &path).unwrap();
    let precision = Precision::quantized(DType::F16, QuantFormat::Q4_0);
    let odd =
        JanusModel::<B>::random_modules(&config, &Default::default(), precision, 7, Modules::All)
            .unwrap();
    assert_eq!(odd.precision(), Precision::from(DType::F16));
    // The tiny model's widths take it.
    let tiny = JanusConfig::from_file(&path).unwrap();
    let q = JanusModel::<B>::random_modules(&tiny, &Default::default(), precision, 7, Modules::All)
        .unwrap();
    assert_eq!(q.precision(), precision);
}
