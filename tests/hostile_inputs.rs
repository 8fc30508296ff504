//! Crafted and broken inputs of the kinds found by probing the loaders as a
//! hostile user would: each is a clear error (or a sane result), never a panic,
//! a stack overflow, a runaway allocation or an endless loop.
//!
//! Input handling does not depend on the backend: the wgpu pass of the parity
//! suite skips this file.
#![cfg(not(feature = "wgpu"))]

use std::path::PathBuf;

use janus_checkpoint::{Checkpoint, Error, parse_pickle};
use janus_tests::{add_special_tokens, crc32, stored_zip, testdata_dir, tiny_copy};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("janus-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A safetensors file from a header (JSON text) and data bytes.
fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn open_bytes(name: &str, file: &str, bytes: &[u8]) -> Result<Checkpoint, Error> {
    let path = temp_dir(name).join(file);
    std::fs::write(&path, bytes).unwrap();
    Checkpoint::open(&path)
}

fn malformed(r: Result<Checkpoint, Error>, what: &str) -> String {
    match r {
        Err(e @ Error::Malformed { .. }) => e.to_string(),
        Err(other) => panic!("{what}: unexpected error kind: {other}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[test]
fn safetensors_with_a_short_header_length_overlaps_or_duplicates_is_refused() {
    let good = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}  "#;
    let data = [0u8; 12];
    assert!(open_bytes("st-good", "model.safetensors", &safetensors(good, &data)).is_ok());

    // The header length one short: the data then starts a byte early.
    let mut short = safetensors(good, &data);
    short[..8].copy_from_slice(&(good.len() as u64 - 1).to_le_bytes());
    let err = malformed(
        open_bytes("st-short", "model.safetensors", &short),
        "short header",
    );
    assert!(err.contains("data bytes"), "{err}");

    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let err = malformed(
        open_bytes(
            "st-overlap",
            "model.safetensors",
            &safetensors(overlap, &data),
        ),
        "overlap",
    );
    assert!(err.contains("`b`") && err.contains("overlapping"), "{err}");

    let dup = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let err = malformed(
        open_bytes("st-dup", "model.safetensors", &safetensors(dup, &data)),
        "duplicate",
    );
    assert!(err.contains("`a` appears twice"), "{err}");

    // A shape whose element count overflows.
    let huge = r#"{"a":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,12]}}"#;
    let err = malformed(
        open_bytes("st-huge", "model.safetensors", &safetensors(huge, &data)),
        "overflowing shape",
    );
    assert!(err.contains("overflows"), "{err}");

    // A header length past the file, or past the 100 MB limit; an entry that
    // is not an object.
    for (len, needle) in [(4096u64, "runs past the end"), (1 << 40, "over the")] {
        let mut long = safetensors(good, &data);
        long[..8].copy_from_slice(&len.to_le_bytes());
        let err = malformed(
            open_bytes("st-long", "model.safetensors", &long),
            "long header",
        );
        assert!(err.contains(needle), "{len}: {err}");
    }
    let err = malformed(
        open_bytes(
            "st-number",
            "model.safetensors",
            &safetensors(r#"{"a":5}"#, &data),
        ),
        "entry not an object",
    );
    assert!(err.contains("`a` is a number, not an object"), "{err}");
}

/// `{"w": _rebuild_tensor_v2(storage(numel), 0, (2,), (1,))}` as `torch.save` pickles it.
fn tensor_pickle(numel: u64) -> Vec<u8> {
    tensor_view_pickle(numel, 0, 2)
}

/// `{"w": _rebuild_tensor_v2(storage(numel), offset, (len,), (1,))}`.
fn tensor_view_pickle(numel: u64, offset: u64, len: u8) -> Vec<u8> {
    let mut p = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    p.extend_from_slice(
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu",
    );
    p.extend_from_slice(b"\x8a\x08");
    p.extend_from_slice(&numel.to_le_bytes());
    p.extend_from_slice(b"tQ\x8a\x08");
    p.extend_from_slice(&offset.to_le_bytes());
    p.extend_from_slice(&[b'K', len, 0x85]);
    p.extend_from_slice(b"K\x01\x85tRu.");
    p
}

#[test]
fn torch_storage_sizes_that_overflow_or_exceed_the_record_are_refused() {
    let data = [0u8; 8];
    let ok = stored_zip(&[
        ("archive/data.pkl", &tensor_pickle(2)),
        ("archive/data/0", &data),
    ]);
    let ckpt = open_bytes("bin-ok", "pytorch_model.bin", &ok).unwrap();
    assert_eq!(ckpt.read_f32("w").unwrap(), vec![0.0, 0.0]);

    // 2^62 + 1 elements: 4 bytes each wraps to 4 bytes in 64 bits.
    for numel in [(1u64 << 62) + 1, 3, u64::MAX >> 1] {
        let bin = stored_zip(&[
            ("archive/data.pkl", &tensor_pickle(numel)),
            ("archive/data/0", &data),
        ]);
        let err = malformed(
            open_bytes("bin-huge", "pytorch_model.bin", &bin),
            "huge storage",
        );
        assert!(err.contains("storage"), "{numel}: {err}");
    }
    // An empty view reads nothing wherever it starts, as torch.load takes it
    // (one far past its storage panicked when read).
    for offset in [2, 1 << 40, u64::MAX >> 3] {
        let empty = stored_zip(&[
            ("archive/data.pkl", &tensor_view_pickle(2, offset, 0)),
            ("archive/data/0", &data),
        ]);
        let ckpt = open_bytes("bin-empty", "pytorch_model.bin", &empty).unwrap();
        assert_eq!(ckpt.read_f32("w").unwrap(), Vec::<f32>::new(), "{offset}");
    }
}

#[test]
fn torch_archives_with_duplicate_or_lying_entries_are_refused() {
    let data = [0u8; 8];
    let pkl = tensor_pickle(2);
    let dup = stored_zip(&[
        ("archive/data.pkl", &pkl),
        ("archive/data/0", &data),
        ("archive/data/0", &data),
    ]);
    let err = malformed(
        open_bytes("bin-dup", "pytorch_model.bin", &dup),
        "duplicate entry",
    );
    assert!(err.contains("duplicated"), "{err}");
    let two_pickles = stored_zip(&[("archive/data.pkl", &pkl), ("other/data.pkl", &pkl)]);
    let err = malformed(
        open_bytes("bin-2pkl", "pytorch_model.bin", &two_pickles),
        "two pickles",
    );
    assert!(err.contains("more than one"), "{err}");
}

#[test]
fn deeply_nested_or_exploding_pickles_are_refused_quickly() {
    // 1M nested lists (2 MB): `]` then `a` a million times would nest them.
    let mut deep = b"\x80\x02".to_vec();
    deep.extend(std::iter::repeat_n(b']', 1_000_000));
    deep.extend(std::iter::repeat_n(b'a', 999_999));
    deep.push(b'.');
    let err = parse_pickle(&deep).unwrap_err();
    assert!(err.contains("deep"), "{err}");

    // A 100k-deep list used as a dict key.
    let mut key = b"\x80\x02}".to_vec();
    key.extend(std::iter::repeat_n(b']', 100_000));
    key.extend(std::iter::repeat_n(b'a', 99_999));
    key.extend_from_slice(b"K\x01s.");
    let err = parse_pickle(&key).unwrap_err();
    assert!(err.contains("deep"), "{err}");

    // A memo bomb: each round memoises a list holding the previous one twice.
    let mut bomb = b"\x80\x02]q\x00".to_vec();
    for i in 0..60u8 {
        bomb.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
    }
    bomb.push(b'.');
    let start = std::time::Instant::now();
    let err = parse_pickle(&bomb).unwrap_err();
    assert!(err.contains("values"), "{err}");
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());

    // A string bomb: one 4 MiB byte string, memoised, then fetched 3000
    // times into a list (12 GB of copies from a 4 MB file, few values).
    let mut strings = b"\x80\x03B".to_vec();
    strings.extend_from_slice(&(4u32 << 20).to_le_bytes());
    strings.extend(std::iter::repeat_n(b'x', 4 << 20));
    strings.extend_from_slice(b"q\x00(");
    for _ in 0..3000 {
        strings.extend_from_slice(b"h\x00");
    }
    strings.extend_from_slice(b"l.");
    let err = parse_pickle(&strings).unwrap_err();
    assert!(err.contains("bytes of strings"), "{err}");
}

#[test]
fn a_shard_index_of_many_tensors_is_checked_in_linear_time() {
    // 100k empty tensors in one shard, all named by the index: each was
    // looked for among all of the shard's (74 s in release).
    let n = 100_000;
    let header: Vec<String> = (0..n)
        .map(|i| format!("\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}"))
        .collect();
    let dir = temp_dir("index-many");
    let shard = "model-00001-of-00001.safetensors";
    std::fs::write(
        dir.join(shard),
        safetensors(&format!("{{{}}}", header.join(",")), &[]),
    )
    .unwrap();
    let map: Vec<String> = (0..n).map(|i| format!("\"t{i}\":\"{shard}\"")).collect();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        format!("{{\"weight_map\":{{{}}}}}", map.join(",")),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.keys().count(), n);
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
    // An error listing unexpected tensors names a few, not 100k.
    let err = janus_core::Error::UnexpectedTensors {
        path: dir.clone(),
        keys: ckpt.keys().map(str::to_string).collect(),
    }
    .to_string();
    assert!(
        err.contains("100000 unexpected tensor(s)") && err.ends_with("and 99988 more"),
        "{}",
        &err[..200]
    );
    assert!(err.len() < 1000, "{} bytes", err.len());
}

/// A PNG of `w`x`h` 1-bit grey pixels, whose IHDR is all a decoder reads first.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[1, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IDAT");
    png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IEND");
    png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    png
}

#[test]
fn images_declaring_too_many_pixels_are_refused_before_decoding() {
    let start = std::time::Instant::now();
    let err = janus_pipeline::decode_image(&png_header(20_000, 20_000), "bomb.png")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bomb.png") && err.contains("20000x20000"),
        "{err}"
    );

    // A real JPEG whose frame header is patched to declare 30000 x 30000.
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
        .encode(
            &[128u8; 16 * 16 * 3],
            16,
            16,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline frame header");
    jpeg[sof + 5..sof + 7].copy_from_slice(&30_000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&30_000u16.to_be_bytes());
    let err = janus_pipeline::decode_image(&jpeg, "bomb.jpg")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bomb.jpg") && err.contains("30000x30000"),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 5, "took {:?}", start.elapsed());
}

#[test]
fn absurd_preprocessor_sizes_are_config_errors() {
    let dir = temp_dir("preproc");
    let path = dir.join("preprocessor_config.json");
    std::fs::write(&path, r#"{"image_size": 384, "min_size": 100000}"#).unwrap();
    let err = janus_pipeline::ImageProcessor::from_file(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_size"), "{err}");
    // Wrong types are errors naming the field, not silently the defaults.
    for (json, field) in [
        (r#"{"do_normalize": "yes"}"#, "do_normalize"),
        (r#"{"rescale_factor": "1/255"}"#, "rescale_factor"),
        (r#"{"rescale_factor": 0}"#, "rescale_factor"),
        (r#"{"image_mean": [0.5, "x", 0.5, 0.5]}"#, "image_mean"),
    ] {
        std::fs::write(&path, json).unwrap();
        let err = janus_pipeline::ImageProcessor::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{json}: {err}");
    }
}

/// Loads the tokenizer and processor files of `dir` against the tiny
/// checkpoint's vision encoder.
fn processor(dir: &std::path::Path) -> Result<(), janus_pipeline::PipelineError> {
    let vision = janus_pipeline::JanusConfig::from_file(testdata_dir().join("config.json"))
        .unwrap()
        .vision;
    janus_pipeline::Processor::from_dir(dir, "tiny", &vision, None).map(|_| ())
}

#[test]
fn processor_files_that_disagree_with_the_encoder_are_refused() {
    // 16 tokens of 64x64 images in the tiny set; other values are refused,
    // naming the file, the field and the encoder's sizes.
    for (file, key, value, want) in [
        (
            "processor_config.json",
            "num_image_tokens",
            36,
            "num_image_tokens is 36, but the vision encoder (vision_config: image_size 64, patch_size 16) gives 16 tokens",
        ),
        (
            "preprocessor_config.json",
            "image_size",
            96,
            "image_size is 96, but the vision encoder (vision_config: image_size 64, patch_size 16) takes 64x64 images",
        ),
    ] {
        let dir = tiny_copy(&format!("sizes-{key}"));
        processor(&dir).expect("the tiny set agrees");
        let path = dir.join(file);
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json[key] = value.into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = processor(&dir).unwrap_err().to_string();
        assert!(err.contains(file) && err.contains(want), "{err}");
        // Not a count at all: refused too, not taken as absent.
        json[key] = "16".into();
        std::fs::write(&path, json.to_string()).unwrap();
        let err = processor(&dir).unwrap_err().to_string();
        assert!(err.contains("expected a non-negative integer"), "{err}");
    }
    // A special token missing with no tokenizer_config.json says so.
    let dir = tiny_copy("no-tokenizer-config");
    std::fs::remove_file(dir.join("tokenizer_config.json")).unwrap();
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("<begin_of_image>", "<begin_of_picture>"),
    )
    .unwrap();
    let err = processor(&dir).unwrap_err().to_string();
    assert!(
        err.contains("`<begin_of_image>` is not in")
            && err.contains("tokenizer_config.json, which is missing"),
        "{err}"
    );
}

#[test]
fn side_files_that_are_not_regular_files_are_named_and_never_read() {
    // A directory in a side file's place is refused naming it, not taken as
    // absent (a FIFO or a device would be waited on or read for ever).
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "processor_config.json",
        "preprocessor_config.json",
    ] {
        let dir = tiny_copy(&format!("irregular-{file}"));
        std::fs::remove_file(dir.join(file)).unwrap();
        std::fs::create_dir(dir.join(file)).unwrap();
        let err = processor(&dir).unwrap_err().to_string();
        assert!(
            err.contains(file) && err.contains("is not a regular file"),
            "{file}: {err}"
        );
    }
    #[cfg(unix)]
    {
        let dir = tiny_copy("config-is-a-device");
        std::fs::remove_file(dir.join("config.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.join("config.json")).unwrap();
        let err = janus_pipeline::resolve_model(dir.to_str().unwrap(), |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json is not a regular file"), "{err}");
    }
    // A tokenizer.json saved with a byte-order mark loads.
    let dir = tiny_copy("tokenizer-bom");
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("\u{feff}{text}")).unwrap();
    processor(&dir).expect("a BOM is skipped");
}

#[test]
fn a_select_layer_below_the_last_block_loads_and_a_bad_mlp_ratio_names_itself() {
    use burn::tensor::DType;
    let dir = tiny_copy("select-layer");
    let path = dir.join("config.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    // -2: the last ViT block never runs; the reference leaves its weights
    // unread (they were "unexpected tensors" here).
    config["vision_config"]["params"]["select_layer"] = (-2).into();
    std::fs::write(&path, config.to_string()).unwrap();
    let janus = janus_pipeline::Janus::<burn::backend::Flex>::load(
        dir.to_str().unwrap(),
        &Default::default(),
        DType::F32,
    )
    .unwrap();
    let vision = &janus.config().vision;
    assert_eq!((vision.layers, vision.total_layers), (1, 2));
    // An image whose codes fill the whole context: named as that context
    // (it read "over the model's context ... of 0").
    let err = janus
        .processor()
        .generation_prompt_within("a cat", 16, 16)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("16 tokens of roles and images") && err.ends_with("of 16"),
        "{err}"
    );
    for (ratio, needle) in [(0.0001, "= 0.0064 MLP units"), (1e308, "must be from 1 to")] {
        let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
        config["vision_config"]["params"]["mlp_ratio"] = ratio.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let err = janus_pipeline::JanusConfig::from_file(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mlp_ratio") && err.contains(needle),
            "{ratio}: {err}"
        );
    }
}

/// The tiny model with another context length.
fn with_context(positions: usize) -> janus_pipeline::Janus<burn::backend::Flex> {
    use burn::tensor::DType;
    let dir = tiny_copy(&format!("context-{positions}"));
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["language_config"]["max_position_embeddings"] = positions.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    janus_pipeline::Janus::load(dir.to_str().unwrap(), &Default::default(), DType::F32).unwrap()
}

#[test]
fn many_added_tokens_in_tokenizer_config_are_added_at_once() {
    // Janus-1.3B lists some added tokens in tokenizer_config.json only: 20000
    // of them (one matcher rebuild each took 98 s for 16000) are added in one
    // go, and then refused for the 512 embedding rows.
    let dir = tiny_copy("added-decoder");
    let path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let decoder: serde_json::Map<String, serde_json::Value> = (0..20000)
        .map(|i| {
            let content = format!("<tok_{i}>");
            (
                (497 + i).to_string(),
                serde_json::json!({"content": content, "special": true}),
            )
        })
        .collect();
    config["added_tokens_decoder"] = decoder.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let load = janus_pipeline::Janus::<burn::backend::Flex>::load(
        dir.to_str().unwrap(),
        &Default::default(),
        burn::tensor::DType::F32,
    );
    let err = load.err().expect("refused").to_string();
    assert!(err.contains("`<tok_19999>` at id 20496"), "{err}");
}

#[test]
fn a_tokenizer_with_ids_past_the_embedding_is_refused_at_load() {
    use burn::tensor::DType;
    // The tiny tokenizer has 497 tokens for 512 embedding rows: 20 more reach
    // id 516, which would index past the embedding on a prompt holding it.
    let dir = tiny_copy("vocab");
    let extra = add_special_tokens(&dir, 20);
    let path = dir.to_str().unwrap();
    let load =
        janus_pipeline::Janus::<burn::backend::Flex>::load(path, &Default::default(), DType::F32);
    let err = load.err().expect("refused").to_string();
    assert!(
        err.contains(&format!("`{}` at id 516", extra[19]))
            && err.contains("512 token rows (language_config.vocab_size)"),
        "{err}"
    );
    let request = janus_pipeline::ImageRequest::new("a cat");
    let plan = janus_pipeline::Janus::<burn::backend::Flex>::plan_generation(
        path,
        DType::F32,
        None,
        &request,
        None,
        |_| {},
    );
    let Err(err) = plan else { panic!("planned") };
    assert!(err.to_string().contains("id 516"), "{err}");
    // 15 more fit: ids up to 511 load.
    let dir = tiny_copy("vocab-fits");
    add_special_tokens(&dir, 15);
    janus_pipeline::Janus::<burn::backend::Flex>::load(
        dir.to_str().unwrap(),
        &Default::default(),
        DType::F32,
    )
    .expect("ids up to 511 fit 512 rows");
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_before_it_runs() {
    let janus = with_context(8);
    let request = janus_pipeline::Request::new("Count from 1 to 5, please.");
    let err = janus
        .understand(&request)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("max_position_embeddings") && err.contains('8'),
        "{err}"
    );
}

#[test]
fn a_huge_token_budget_stops_at_the_context() {
    let janus = with_context(80);
    let request = janus_pipeline::Request::new("Count.").max_new_tokens(usize::MAX);
    let mut answer = janus.understand(&request).unwrap();
    let prompt = answer.prompt_tokens();
    assert!(prompt < 80, "prompt of {prompt} tokens");
    for delta in &mut answer {
        delta.unwrap();
    }
    let n = answer.token_ids().len();
    match answer.finish_reason() {
        Some(janus_pipeline::FinishReason::Length) => assert_eq!(prompt + n, 80),
        Some(janus_pipeline::FinishReason::Stop) => assert!(prompt + n <= 80),
        None => panic!("not finished"),
    }
}

#[test]
fn a_stale_index_in_the_output_is_removed_and_parallel_conversions_never_mix() {
    use janus_checkpoint::StoredDType;
    use janus_pipeline::convert::convert;
    let src = testdata_dir();
    let out = temp_dir("convert-out");
    // An earlier (sharded) conversion left its index, which would be read first.
    std::fs::write(
        out.join("model.safetensors.index.json"),
        r#"{"weight_map": {"x": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let report = convert(&src, &out, StoredDType::F32, None, |_, _, _| {}).unwrap();
    assert_eq!(
        report.removed,
        vec![out.join("model.safetensors.index.json")]
    );
    let reference = Checkpoint::open(src.join("model.safetensors")).unwrap();
    let check = || {
        let got = Checkpoint::open(&out).unwrap();
        assert!(
            got.path().ends_with("model.safetensors"),
            "{:?}",
            got.path()
        );
        for key in got.keys() {
            assert_eq!(
                got.read_f32(key).unwrap(),
                reference.read_f32(key).unwrap(),
                "{key}"
            );
        }
    };
    check();

    // Four conversions into one directory at once: each succeeds, and the
    // result is one whole file.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| convert(&src, &out, StoredDType::F32, None, |_, _, _| {})))
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    check();
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_tiny_temperature_generates_the_argmax_images() {
    use burn::tensor::DType;
    let g = janus_tests::Golden::load();
    let janus = janus_pipeline::Janus::<burn::backend::Flex>::load(
        testdata_dir().to_str().unwrap(),
        &Default::default(),
        DType::F32,
    )
    .unwrap();
    let config = janus_pipeline::ImageGenConfig {
        parallel: g.int("image_generation.parallel_size") as usize,
        cfg_weight: g.at("image_generation.cfg_weight").as_f64().unwrap() as f32,
        temperature: 1e-40,
        seed: 7,
    };
    let prompt = g.at("prompts.pro.image_generation.messages")[0]["content"]
        .as_str()
        .unwrap();
    let images = janus
        .generate_images(
            &janus_pipeline::ImageRequest::new(prompt).config(config),
            |_, _| {},
        )
        .unwrap();
    let want = g.id_rows("image_generation.argmax_tokens");
    let got: Vec<Vec<u32>> = images.iter().map(|i| i.codes.clone()).collect();
    assert_eq!(got, want);
}

#[test]
fn an_image_batch_that_cannot_fit_in_memory_is_refused_before_it_runs() {
    use burn::tensor::DType;
    let mut janus = janus_pipeline::Janus::<burn::backend::Flex>::load(
        testdata_dir().to_str().unwrap(),
        &Default::default(),
        DType::F32,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let generate = |janus: &janus_pipeline::Janus<_>, parallel| {
        let config = janus_pipeline::ImageGenConfig {
            parallel,
            ..Default::default()
        };
        janus
            .generate_images(
                &janus_pipeline::ImageRequest::new("x").config(config),
                |_, _| panic!("no step may run"),
            )
            .unwrap_err()
            .to_string()
    };
    // More images than one request may ask for (more than fit would be
    // generated in chunks): refused by the count limit.
    let err = generate(&janus, 100_000_000);
    assert!(
        err.contains("100000000 images") && err.contains("at most 1024"),
        "{err}"
    );
    // Not even one image fits the memory limit.
    janus.set_memory_limit(Some(1 << 20));
    let err = generate(&janus, 2);
    assert!(err.contains("at most 0 fit"), "{err}");
    assert!(start.elapsed().as_secs() < 5);
}
