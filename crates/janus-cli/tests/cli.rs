//! The `janus` binary end to end on the tiny reference checkpoint, and its
//! behaviour on bad input (clear error, non-zero exit, never a panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use janus_pipeline::open_image;
use janus_tests::{Golden, testdata_dir};
use serde_json::Value;

mod hub_server;

fn janus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .output()
        .expect("run janus")
}

fn janus_owned(args: &[String]) -> Output {
    janus(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn ok_json(args: &[&str]) -> Value {
    json_of(&janus(args))
}

/// The JSON a successful run printed.
fn json_of(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "janus failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn fails_with(args: &[&str], needle: &str) {
    let out = janus(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "janus {args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "janus {args:?} panicked: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "janus {args:?}: expected `{needle}` in: {stderr}"
    );
}

/// The first test image (by name).
fn first_image() -> PathBuf {
    std::fs::read_dir(testdata_dir().join("images"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .min()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("janus-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A Hugging Face cache (in a fresh `HF_HOME`) holding the tiny checkpoint as
/// `test-org/NAME` at commit `sha`.
fn fake_hub(home: &str, name: &str, sha: &str) -> PathBuf {
    let src = testdata_dir();
    let home = tmp(home);
    let repo = home.join(format!("hub/models--test-org--{name}"));
    let snap = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    for f in janus_pipeline::convert::SIDE_FILES
        .iter()
        .chain(&["pytorch_model.bin"])
    {
        std::fs::copy(src.join(f), snap.join(f)).unwrap();
    }
    home
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn u32s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn understand_json_gives_the_reference_greedy_tokens() {
    let g = Golden::load();
    let dir = testdata_dir();
    let msg = &g.at("prompts.pro.und_one_image.messages")[0];
    let image = dir.join("images").join(msg["images"][0].as_str().unwrap());
    let want = u32s(g.at("understanding.und_one_image.greedy_tokens"));
    let n = want.len().to_string();
    let content = msg["content"].as_str().unwrap();
    // The placeholder where the reference wrote it, and left out: without one, the
    // CLI puts `<image_placeholder>\n` in front, which is the reference's content.
    let question = content
        .strip_prefix("<image_placeholder>\n")
        .expect("reference content");
    for prompt in [content, question] {
        let out = ok_json(&[
            "understand",
            "--model",
            s(&dir),
            "--image",
            s(&image),
            "--prompt",
            prompt,
            "--max-new-tokens",
            &n,
            "--format",
            "json",
        ]);
        assert_eq!(u32s(&out["token_ids"]), want, "prompt {prompt:?}");
        let why = out["finish_reason"].as_str();
        assert!(matches!(why, Some("stop" | "length")), "{out}");
        assert_eq!(
            out["text"],
            *g.at("understanding.und_one_image.greedy_text_skip_special")
        );
    }
}

#[test]
fn understand_conversation_file_gives_the_reference_tokens() {
    let g = Golden::load();
    let dir = testdata_dir();
    // The two-image conversation, given as a conversation file.
    let conv = tmp("conv");
    let mut messages = g.at("prompts.pro.und_two_images.messages").clone();
    for m in messages.as_array_mut().unwrap() {
        if let Some(images) = m.get_mut("images") {
            for i in images.as_array_mut().unwrap() {
                *i = Value::String(s(&dir.join("images").join(i.as_str().unwrap())).to_string());
            }
        }
    }
    // Saved as some editors save it: a byte-order mark, CRLF line ends.
    let file = conv.join("conversation.json");
    let text = serde_json::to_string_pretty(&messages).unwrap();
    std::fs::write(&file, format!("\u{feff}{}", text.replace('\n', "\r\n"))).unwrap();
    let want = u32s(g.at("understanding.und_two_images.greedy_tokens"));
    let n = want.len().to_string();
    let out = ok_json(&[
        "understand",
        "--model",
        s(&dir),
        "--conversation",
        s(&file),
        "--max-new-tokens",
        &n,
        "--format",
        "json",
    ]);
    assert_eq!(u32s(&out["token_ids"]), want);
    // Relative image names are found next to the conversation file, ahead
    // of a file of the same name in the current directory.
    let beside = tmp("conv-beside");
    let elsewhere = tmp("conv-cwd");
    let mut messages = g.at("prompts.pro.und_two_images.messages").clone();
    for m in messages.as_array_mut().unwrap() {
        if let Some(images) = m.get_mut("images") {
            for i in images.as_array_mut().unwrap() {
                let name = i.as_str().unwrap().to_string();
                std::fs::copy(dir.join("images").join(&name), beside.join(&name)).unwrap();
                std::fs::write(elsewhere.join(&name), b"not an image").unwrap();
            }
        }
    }
    let file = beside.join("conversation.json");
    std::fs::write(&file, messages.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .current_dir(&elsewhere)
        .args(["understand", "--model", s(&dir), "--conversation", s(&file)])
        .args(["--max-new-tokens", &n, "--format", "json"])
        .output()
        .unwrap();
    let v = json_of(&out);
    assert_eq!(u32s(&v["token_ids"]), want);
}

#[test]
fn generate_argmax_writes_the_reference_images() {
    let g = Golden::load();
    let dir = testdata_dir();
    let out_dir = tmp("gen");
    let prompt = g.at("prompts.pro.image_generation.messages")[0]["content"]
        .as_str()
        .unwrap();
    let p = g.int("image_generation.parallel_size").to_string();
    let w = g.at("image_generation.cfg_weight").to_string();
    let out = ok_json(&[
        "generate",
        "--model",
        s(&dir),
        "--prompt",
        prompt,
        "--parallel",
        &p,
        "--cfg",
        &w,
        "--temperature",
        "0",
        "--out",
        s(&out_dir),
        "--dtype",
        "f32",
        "--format",
        "json",
    ]);
    let want: Vec<Vec<u64>> = g
        .at("image_generation.argmax_tokens")
        .as_array()
        .unwrap()
        .iter()
        .map(u32s)
        .collect();
    let got: Vec<Vec<u64>> = out["codes"].as_array().unwrap().iter().map(u32s).collect();
    assert_eq!(got, want);
    let golden = g.ints("gen.argmax.img_u8");
    let per = golden.len() / want.len();
    for (i, chunk) in golden.chunks(per).enumerate() {
        let img = open_image(out_dir.join(format!("img_{i}.png"))).unwrap();
        let differing = img
            .pixels
            .iter()
            .zip(chunk)
            .filter(|(a, b)| **a as i64 != **b)
            .count();
        assert!(
            img.pixels
                .iter()
                .zip(chunk)
                .all(|(a, b)| (*a as i64 - b).abs() <= 1)
        );
        assert!(
            differing * 100 <= chunk.len(),
            "img_{i}: {differing} pixels differ"
        );
    }
}

#[test]
fn generate_defaults_and_16_bit_dtypes_keep_the_reference_argmax_codes() {
    let g = Golden::load();
    let dir = testdata_dir();
    let prompt = g.at("prompts.pro.image_generation.messages")[0]["content"]
        .as_str()
        .unwrap();
    let want: Vec<Vec<u64>> = g
        .at("image_generation.argmax_tokens")
        .as_array()
        .unwrap()
        .iter()
        .map(u32s)
        .collect();
    let p = want.len().to_string();
    for dtype in [None, Some("f16"), Some("f32"), Some("bf16")] {
        let out_dir = tmp(&format!("gen-{dtype:?}"));
        let mut args = vec![
            "generate",
            "--model",
            s(&dir),
            "--prompt",
            prompt,
            "--parallel",
            &p,
            "--temperature",
            "0",
        ];
        args.extend(["--out", s(&out_dir), "--format", "json"]);
        if let Some(d) = dtype {
            args.extend(["--dtype", d]);
        }
        let out = ok_json(&args);
        let got: Vec<Vec<u64>> = out["codes"].as_array().unwrap().iter().map(u32s).collect();
        assert_eq!(got, want, "dtype {dtype:?}");
    }
}

#[test]
fn vq_encode_and_decode_round_trip() {
    let g = Golden::load();
    let dir = testdata_dir();
    let stem = g.at("vq.input_images")[0].as_str().unwrap();
    let image = dir.join("images").join(format!("{stem}.png"));
    let out = ok_json(&[
        "vq",
        "encode",
        "--model",
        s(&dir),
        "--image",
        s(&image),
        "--format",
        "json",
    ]);
    assert_eq!(u32s(&out["codes"]), u32s(&g.at("vq.encode_indices")[0]));
    // Every runtime dtype encodes (the VQ weights stay 16-bit at most): the
    // downsampling's padding once failed on 16-bit tensors.
    for dtype in ["f16", "bf16", "q8_0", "q4_0"] {
        let args = ["vq", "encode", "--model", s(&dir), "--image", s(&image)];
        let other = ok_json(&[&args[..], &["--format", "json", "--dtype", dtype]].concat());
        assert_eq!(other["codes"], out["codes"], "dtype {dtype}");
    }
    let work = tmp("vq");
    let codes = work.join("codes.json");
    std::fs::write(&codes, out.to_string()).unwrap();
    let png = work.join("out.png");
    let decode = |codes: &Path, out: &Path| -> Vec<String> {
        let args = [
            "vq",
            "decode",
            "--model",
            s(&dir),
            "--codes",
            s(codes),
            "--out",
            s(out),
        ];
        args.into_iter().map(str::to_string).collect()
    };
    let o = janus_owned(&decode(&codes, &png));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The text format (codes separated by spaces) decodes to the same image.
    let text = janus(&["vq", "encode", "--model", s(&dir), "--image", s(&image)]);
    assert!(text.status.success());
    let codes_txt = work.join("codes.txt");
    std::fs::write(&codes_txt, &text.stdout).unwrap();
    let png_txt = work.join("out-txt.png");
    let o = janus_owned(&decode(&codes_txt, &png_txt));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&png_txt).unwrap(),
        std::fs::read(&png).unwrap()
    );
    // As saved by Windows editors: a byte-order mark and CRLF line ends, in
    // both formats.
    for (name, body) in [
        ("bom.txt", String::from_utf8(text.stdout.clone()).unwrap()),
        ("bom.json", serde_json::to_string_pretty(&out).unwrap()),
    ] {
        let path = work.join(name);
        std::fs::write(&path, format!("\u{feff}{}", body.replace('\n', "\r\n"))).unwrap();
        let png_bom = work.join(format!("{name}.png"));
        let o = janus_owned(&decode(&path, &png_bom));
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            std::fs::read(&png_bom).unwrap(),
            std::fs::read(&png).unwrap()
        );
    }
    // A grid that is not the model's, several images' codes, a non-PNG name.
    let mut wrong = out.clone();
    wrong["grid"] = serde_json::json!([2, 8]);
    let wrong_path = work.join("wrong-grid.json");
    std::fs::write(&wrong_path, wrong.to_string()).unwrap();
    let two = work.join("two.json");
    let c = &out["codes"];
    std::fs::write(
        &two,
        serde_json::json!({"images": [], "codes": [c, c]}).to_string(),
    )
    .unwrap();
    for (codes_file, out_file, needle) in [
        (wrong_path, png.clone(), "`grid` is [2,8]"),
        (
            codes.clone(),
            work.join("out.jpg"),
            "the decoder writes PNG files",
        ),
        (two, png.clone(), "holds the codes of 2 images"),
        (
            PathBuf::from("/dev/zero"),
            png.clone(),
            "is not a regular file",
        ),
    ] {
        let args = decode(&codes_file, &out_file);
        fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    }
    let img = open_image(&png).unwrap();
    let golden = g.ints("vq.decode.encoded.img_u8");
    let first = &golden[..img.pixels.len()];
    assert!(
        img.pixels
            .iter()
            .zip(first)
            .all(|(a, b)| (*a as i64 - b).abs() <= 1)
    );
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = testdata_dir();
    let d = s(&dir);
    let doge = dir.join("images/doge.png");
    let work = tmp("bad");
    let broken = work.join("broken.jpg");
    std::fs::write(&broken, b"\xFF\xD8\xFFnot a jpeg").unwrap();
    fails_with(
        &["understand", "--model", "/no/such/model", "--prompt", "hi"],
        "/no/such/model",
    );
    // More images than the context holds, or as many as fit alone but not
    // with the prompt's text: refused before any is decoded (the images are
    // not images at all, so decoding first would fail otherwise; decoded one
    // at a time, a pile of large ones cannot exhaust memory first).
    let config = janus_pipeline::JanusConfig::from_file(dir.join("config.json")).unwrap();
    let per = config.vision.num_patches() + 2;
    let fit = config.language.max_position_embeddings / per;
    for n in [fit + 1, fit] {
        let mut args = vec!["understand", "--model", d, "--prompt", "hi"];
        for _ in 0..n {
            args.extend(["--image", s(&broken)]);
        }
        fails_with(
            &args,
            "with at least one token of answer that is over the model's context",
        );
    }
    fails_with(
        &["understand", "--model", d, "--prompt", "hi", "--image", d],
        "is not a file",
    );
    fails_with(
        &["understand", "--model", d, "--conversation", "/dev/zero"],
        "is not a regular file",
    );
    // `vq encode` reads no device or FIFO as an image (it read /dev/zero
    // until memory ran out, and waited on a FIFO for ever).
    fails_with(
        &["vq", "encode", "--model", d, "--image", "/dev/zero"],
        "is not a regular file",
    );
    let typo = work.join("typo.json");
    let conv = serde_json::json!([{"role": "user", "content": "hi", "image": ["doge.png"]}]);
    std::fs::write(&typo, conv.to_string()).unwrap();
    fails_with(
        &["understand", "--model", d, "--conversation", s(&typo)],
        "unknown field `image`",
    );
    // System messages replace the system prompt: they are not the question.
    let only_system = work.join("only-system.json");
    let conv = serde_json::json!([{"role": "system", "content": "Be brief."}]);
    std::fs::write(&only_system, conv.to_string()).unwrap();
    fails_with(
        &[
            "understand",
            "--model",
            d,
            "--conversation",
            s(&only_system),
        ],
        "only system messages",
    );
    let system_image = work.join("system-image.json");
    let conv = serde_json::json!([{"role": "system", "content": "<image_placeholder> is a cat."},
                                  {"role": "user", "content": "hi"}]);
    std::fs::write(&system_image, conv.to_string()).unwrap();
    fails_with(
        &[
            "understand",
            "--model",
            d,
            "--conversation",
            s(&system_image),
        ],
        "a system message cannot hold images",
    );
    fails_with(
        &[
            "understand",
            "--model",
            d,
            "--prompt",
            "hi",
            "--frequency-penalty",
            "2.5",
        ],
        "frequency penalty must be in [-2, 2], got 2.5",
    );
    // An --input that is the weight file, an --output under a file.
    let weights = dir.join("model.safetensors");
    let out_dir = work.join("cv");
    fails_with(
        &["convert", "--input", s(&weights), "--output", s(&out_dir)],
        "is a file: give the model directory",
    );
    let under_file = work.join("a-plain-file");
    std::fs::write(&under_file, b"x").unwrap();
    let under = under_file.join("sub");
    fails_with(
        &["convert", "--input", d, "--output", s(&under)],
        "cannot write",
    );
    // A JANUS_SIMD that is not a level is named, not silently ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .env("JANUS_SIMD", "avx512bf16")
        .args(["understand", "--model", "/no/such/model", "--prompt", "hi"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("JANUS_SIMD=`avx512bf16` is not a level"),
        "{stderr}"
    );
    // A relative path to a file is a file, not a hub id to download.
    std::fs::create_dir_all(work.join("pics")).unwrap();
    std::fs::write(work.join("pics").join("cat.png"), b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .current_dir(&work)
        .env("HF_HUB_OFFLINE", "1")
        .args(["understand", "--model", "pics/cat.png", "--prompt", "hi"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("`pics/cat.png` is a file"),
        "{stderr}"
    );
    // A run that fails leaves none of the output directories it made.
    let new_out = work.join("made").join("by").join("generate");
    fails_with(
        &[
            "generate",
            "--model",
            "/no/such/model",
            "--prompt",
            "x",
            "--out",
            s(&new_out),
        ],
        "/no/such/model",
    );
    assert!(!work.join("made").exists());
    let a_file = s(&broken);
    fails_with(
        &["generate", "--model", d, "--prompt", "x", "--out", a_file],
        "exists and is not a directory",
    );
    fails_with(
        &[
            "generate",
            "--model",
            d,
            "--prompt",
            "x",
            "--max-memory",
            "1.5",
        ],
        "a fraction of a byte",
    );
    fails_with(
        &[
            "understand",
            "--model",
            d,
            "--image",
            s(&broken),
            "--prompt",
            "hi",
        ],
        "broken.jpg",
    );
    fails_with(
        &[
            "understand",
            "--model",
            d,
            "--image",
            s(&work.join("absent.png")),
            "--prompt",
            "hi",
        ],
        "absent.png",
    );
    fails_with(
        &[
            "understand",
            "--model",
            d,
            "--image",
            s(&doge),
            "--prompt",
            "<image_placeholder> and <image_placeholder>?",
        ],
        "placeholder",
    );
    fails_with(
        &["understand", "--model", d, "--prompt", "hi", "--top-p", "0"],
        "top-p",
    );
    fails_with(
        &["generate", "--model", d, "--prompt", "x", "--cfg", "-1"],
        "cfg",
    );
    // A guidance weight whose guided logits overflow f32: refused, not a
    // picture of NaN codes.
    fails_with(
        &["generate", "--model", d, "--prompt", "x", "--cfg", "3e38"],
        "cfg weight must be in 0..=100",
    );
    fails_with(
        &["generate", "--model", d, "--prompt", "x", "--parallel", "0"],
        "parallel",
    );
    // A prompt that, with the image's tokens, runs past the checkpoint's
    // context: refused before generating (one word per context position is
    // at least that many tokens).
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let context = config["language_config"]["max_position_embeddings"]
        .as_u64()
        .unwrap() as usize;
    let long = "abc ".repeat(context);
    fails_with(
        &[
            "generate",
            "--model",
            d,
            "--prompt",
            &long,
            "--out",
            s(&work),
        ],
        "over the model's context",
    );
    // A server limit of 0 would refuse every request: refused at startup
    // (a model that does not exist, so a regression fails rather than
    // serving).
    for flag in [
        "--max-queue",
        "--max-n",
        "--max-body-bytes",
        "--max-images",
        "--max-image-pixels",
        "--max-connections-per-address",
    ] {
        fails_with(
            &["serve", "--model", "/no/such/model", flag, "0"],
            "must be at least 1",
        );
    }
    for bad in ["", "app.example", "http://"] {
        fails_with(
            &["serve", "--model", "/no/such/model", "--cors-origin", bad],
            "expected `*` or an origin",
        );
    }
    // An I/O cause is named once, not once per level of the error chain.
    let absent = work.join("absent.json");
    let out = janus(&["understand", "--model", d, "--conversation", s(&absent)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("absent.json"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    let file = work.join("a-file");
    std::fs::write(&file, b"").unwrap();
    fails_with(
        &[
            "generate",
            "--model",
            d,
            "--prompt",
            "x",
            "--out",
            s(&file.join("sub")),
        ],
        "sub",
    );
    let codes = work.join("codes.json");
    std::fs::write(&codes, "[1, 2, 3]").unwrap();
    fails_with(
        &[
            "vq",
            "decode",
            "--model",
            d,
            "--codes",
            s(&codes),
            "--out",
            s(&work.join("x.png")),
        ],
        "3 codes",
    );
    std::fs::write(&codes, format!("[{}]", vec!["999999"; 16].join(","))).unwrap();
    fails_with(
        &[
            "vq",
            "decode",
            "--model",
            d,
            "--codes",
            s(&codes),
            "--out",
            s(&work.join("x.png")),
        ],
        "999999",
    );
    fails_with(
        &[
            "understand",
            "--model",
            d,
            "--prompt",
            "hi",
            "--backend",
            "cuda",
        ],
        "cuda",
    );
}

#[test]
fn hub_ids_resolve_through_the_hf_cache_and_convert_once() {
    let g = Golden::load();
    let src = testdata_dir();
    let home = fake_hub("hf-home", "janus-tiny", "0123abcd");
    let cache = tmp("janus-cache");
    let msg = &g.at("prompts.pro.und_one_image.messages")[0];
    let image = src.join("images").join(msg["images"][0].as_str().unwrap());
    let want = u32s(g.at("understanding.und_one_image.greedy_tokens"));
    let n = want.len().to_string();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_janus"))
            .args([
                "understand",
                "--model",
                "test-org/janus-tiny",
                "--image",
                s(&image),
                "--prompt",
                msg["content"].as_str().unwrap(),
                "--max-new-tokens",
                &n,
                "--format",
                "json",
            ])
            .env("HF_HOME", &home)
            .env("HF_HUB_OFFLINE", "1")
            .env("JANUS_CACHE", &cache)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let out = run();
        let v = json_of(&out);
        assert_eq!(u32s(&v["token_ids"]), want);
    }
    assert!(
        cache
            .join("models/test-org--janus-tiny/0123abcd/model.safetensors")
            .is_file()
    );
    // The hub cache named by `HF_HUB_CACHE` (as huggingface_hub reads it);
    // an empty `JANUS_CACHE` is unset (it put the cache in the current
    // directory): the converted copy goes under `~/.cache/janus-rs`.
    let user = tmp("hf-hub-cache-home");
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["vq", "encode", "--model", "test-org/janus-tiny", "--image"])
        .arg(&image)
        .env_remove("HF_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env("HF_HUB_CACHE", home.join("hub"))
        .env("HF_HUB_OFFLINE", "1")
        .env("JANUS_CACHE", "")
        .env("HOME", &user)
        .current_dir(&user)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        user.join(".cache/janus-rs/models/test-org--janus-tiny/0123abcd/model.safetensors")
            .is_file()
    );
    assert!(!user.join("models").exists());
    // Not cached and offline: the error says what to download.
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["generate", "--model", "test-org/absent", "--prompt", "x"])
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("huggingface-cli download test-org/absent"),
        "{err}"
    );
}

/// The README's first command on a fresh machine: a hub id downloaded through
/// the Hub's HTTP API (here a loopback stand-in at `HF_ENDPOINT`, the weights
/// behind a redirect as on the Hub), converted once, then found offline.
#[test]
fn hub_ids_download_from_the_endpoint_then_work_offline() {
    let g = Golden::load();
    let src = testdata_dir();
    let files: Vec<(String, PathBuf)> = janus_pipeline::convert::SIDE_FILES
        .iter()
        .chain(&["pytorch_model.bin", "README.md"])
        .map(|f| (f.to_string(), src.join(f)))
        .collect();
    let sha = "89abcdef0123456789abcdef0123456789abcdef";
    let hub = hub_server::HubServer::start("test-org/janus-net", sha, files);
    let (home, cache) = (tmp("hf-home-net"), tmp("janus-cache-net"));
    let msg = &g.at("prompts.pro.und_one_image.messages")[0];
    let image = src.join("images").join(msg["images"][0].as_str().unwrap());
    let want = u32s(g.at("understanding.und_one_image.greedy_tokens"));
    let n = want.len().to_string();
    let run = |offline: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_janus"));
        cmd.args(["understand", "--model", "test-org/janus-net", "--image"])
            .arg(&image)
            .args(["--prompt", msg["content"].as_str().unwrap()])
            .args(["--max-new-tokens", &n, "--format", "json"])
            .env("HF_HOME", &home)
            .env("HF_ENDPOINT", &hub.endpoint)
            .env("JANUS_CACHE", &cache)
            .env_remove("HF_HUB_OFFLINE");
        if offline {
            cmd.env("HF_HUB_OFFLINE", "1");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(u32s(&v["token_ids"]), want);
        err
    };
    let err = run(false);
    assert!(
        err.contains("fetching test-org/janus-net/pytorch_model.bin"),
        "{err}"
    );
    let asked = hub.requests();
    assert!(
        asked.contains(&"GET /api/models/test-org/janus-net/revision/main".to_string()),
        "{asked:?}"
    );
    assert!(
        asked.contains(&"GET /cdn/pytorch_model.bin".to_string()),
        "the weights' redirect was followed: {asked:?}"
    );
    assert!(
        !asked.iter().any(|r| r.contains("README.md")),
        "only the files the model needs: {asked:?}"
    );
    let snapshot = home
        .join("hub/models--test-org--janus-net/snapshots")
        .join(sha);
    assert_eq!(
        std::fs::read(snapshot.join("pytorch_model.bin")).unwrap(),
        std::fs::read(src.join("pytorch_model.bin")).unwrap()
    );
    assert!(
        cache
            .join("models/test-org--janus-net")
            .join(sha)
            .join("model.safetensors")
            .is_file()
    );
    // Offline, from the caches: no request and no new conversion.
    let before = hub.requests().len();
    let err = run(true);
    assert_eq!(hub.requests().len(), before, "offline made requests");
    assert!(
        !err.contains("fetching") && !err.contains("converting"),
        "{err}"
    );
}

#[test]
fn concurrent_first_uses_of_a_hub_id_all_succeed() {
    let home = fake_hub("hf-home-concurrent", "janus-tiny-c", "4567cdef");
    let cache = tmp("janus-cache-concurrent");
    let image = first_image();
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_janus"))
                .args([
                    "vq",
                    "encode",
                    "--model",
                    "test-org/janus-tiny-c",
                    "--image",
                ])
                .arg(&image)
                .env("HF_HOME", &home)
                .env("HF_HUB_OFFLINE", "1")
                .env("JANUS_CACHE", &cache)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outputs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, outputs[0].stdout);
    }
    let entries: Vec<String> = std::fs::read_dir(cache.join("models/test-org--janus-tiny-c"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        entries,
        vec!["4567cdef".to_string()],
        "no partial entry left"
    );
}

#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    let dir = testdata_dir();
    let image = first_image();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["vq", "encode", "--model"])
        .arg(&dir)
        .arg("--image")
        .arg(&image)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
}

/// Progress and messages go to stderr; a closed stderr (`2>&1 | head -c 10`)
/// must not stop or crash the work itself.
#[test]
fn a_closed_stderr_does_not_stop_the_work() {
    let dir = testdata_dir();
    let work = tmp("closed-stderr");
    let run = |args: &[&str]| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Command::new(env!("CARGO_BIN_EXE_janus"))
            .args(args)
            .stderr(writer)
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap()
    };
    let out_dir = work.join("images");
    let out = run(&[
        "generate",
        "--model",
        s(&dir),
        "--prompt",
        "apple",
        "--parallel",
        "2",
        "--out",
        s(&out_dir),
    ]);
    assert!(out.status.success(), "generate: {:?}", out.status);
    assert!(out_dir.join("img_1.png").is_file());
    let converted = work.join("converted");
    let out = run(&["convert", "--input", s(&dir), "--output", s(&converted)]);
    assert!(out.status.success(), "convert: {:?}", out.status);
    assert!(converted.join("model.safetensors").is_file());
    let out = run(&["understand", "--model", s(&dir), "--prompt", "hi"]);
    assert!(out.status.success(), "understand: {:?}", out.status);
    assert!(!out.stdout.is_empty());
}

#[test]
fn bench_runs_every_step_of_an_image_and_refuses_what_it_cannot_run() {
    let dir = testdata_dir();
    let d = s(&dir);
    let json = tmp("bench").join("bench.json");
    let j = s(&json);
    // Every step of one image (the synthetic codes stay inside the codebook).
    let config = janus_pipeline::JanusConfig::from_file(dir.join("config.json")).unwrap();
    let codes = config.vq.grid_side().pow(2).to_string();
    let out = janus(&[
        "bench",
        "--model",
        d,
        "--only",
        "gen1",
        "--gen-steps",
        &codes,
        "--repeats",
        "1",
        "--out",
        j,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        v["results"]["stats"][0]["name"], "image_gen_step_parallel_1",
        "{v}"
    );
    assert_eq!(
        v["results"]["stats"][0]["per_run"],
        codes.parse::<f64>().unwrap()
    );
    assert_eq!(v["model"], d, "{v}");
    // The quantization error against f32 (the end-to-end floors of
    // tests/quantized.rs: q4_0's 4.5 bits leave ~0.98 through the tiny
    // model's layers).
    for (dtype, cosine) in [("q8_0", 0.999), ("q4_0", 0.975)] {
        let args = ["bench", "--model", d, "--only", "error", "--dtype", dtype];
        let out = janus(&[&args[..], &["--repeats", "1", "--out", j]].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let e = &v["results"]["quant_error"];
        assert!(e["cosine"].as_f64().unwrap() >= cosine, "{dtype}: {v}");
        assert!(e["relative_rms"].as_f64().unwrap() > 0.0, "{dtype}: {v}");
    }
    let more = (codes.parse::<u64>().unwrap() + 1).to_string();
    // An --out that cannot be written fails before the measurements.
    let nowhere = tmp("bench").join("no-such-dir").join("b.json");
    fails_with(
        &["bench", "--model", d, "--out", s(&nowhere)],
        "cannot write",
    );
    for (args, needle) in [
        (vec!["--only", "bogus"], "unknown measurement `bogus`"),
        (
            vec!["--only", "prefill", "--prefill-tokens", "0"],
            "at least 1",
        ),
        (
            vec!["--only", "prefill", "--prefill-tokens", "100000"],
            "max_position_embeddings",
        ),
        (
            vec!["--only", "decode", "--decode-tokens", "100000"],
            "positions, over",
        ),
        (
            vec!["--only", "gen1", "--gen-steps", &more],
            "codes of one image",
        ),
        (vec!["--repeats", "0"], "--repeats must be at least 1"),
        (vec!["--only", "error"], "give --dtype q8_0 or q4_0"),
        (vec!["--variant", "janus-pro-7b"], "cannot be used with"),
        (vec!["--chat-tokens", "4"], "--serve"),
        // Also next to flags that conflict with --serve (clap let them through).
        (
            vec!["--only", "vq", "--clients", "2"],
            "--clients is for --serve",
        ),
        (
            vec!["--repeats", "1", "--chat-tokens", "3"],
            "--chat-tokens is for --serve",
        ),
        (vec!["--serve", "--only", "vq"], "cannot be used with"),
        (
            vec!["--serve", "--image-size", "128"],
            "cannot be used with",
        ),
        (
            vec!["--serve", "--clients", "1,0"],
            "--clients: give client counts",
        ),
    ] {
        fails_with(
            &[&["bench", "--model", d, "--out", j][..], &args].concat(),
            needle,
        );
    }
}

#[test]
fn sigterm_removes_unfinished_files_and_exits() {
    use std::io::BufRead;
    let dir = testdata_dir();
    let out_dir = tmp("signal");
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args([
            "generate",
            "--prompt",
            "a long job",
            "--parallel",
            "512",
            "--model",
        ])
        .arg(&dir)
        .arg("--out")
        .arg(&out_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 && !line.contains("loaded") {
        line.clear();
    }
    assert!(line.contains("loaded"), "the run ended early");
    // What an image being written looks like to the clean-up.
    let partial = out_dir.join(format!(".img_0.png.{}-0.partial", child.id()));
    std::fs::write(&partial, b"half a png").unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    assert!(!partial.exists(), "the unfinished file is left");
    assert!(!out_dir.join("img_0.png").exists());
}

#[test]
fn concurrent_runs_into_one_directory_leave_whole_images_and_stale_ones_are_reported() {
    let dir = testdata_dir();
    let out_dir = tmp("gen-concurrent");
    let children: Vec<_> = ["a red apple", "a blue car", "a green tree", "a cat"]
        .iter()
        .map(|prompt| {
            Command::new(env!("CARGO_BIN_EXE_janus"))
                .args(["generate", "--prompt", prompt, "--parallel", "2", "--model"])
                .arg(&dir)
                .arg("--out")
                .arg(&out_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..2 {
        let png = std::fs::read(out_dir.join(format!("img_{i}.png"))).unwrap();
        assert!(
            png.ends_with(&[0xAE, 0x42, 0x60, 0x82]),
            "img_{i} ends at IEND"
        );
        let img = janus_pipeline::decode_image(&png, "img").unwrap();
        assert_eq!(img.pixels.len(), img.width * img.height * 3);
    }
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");

    // One image now: img_1.png is left from before, and said so.
    let out = janus(&[
        "generate",
        "--prompt",
        "one more",
        "--model",
        s(&dir),
        "--out",
        s(&out_dir),
    ]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("img_1.png") && err.contains("earlier run"),
        "{err}"
    );
}

/// `janus serve` on a free port: the address it prints, and the child.
fn serve(extra: &[&str]) -> (String, std::process::Child) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["serve", "--port", "0", "--model"])
        .arg(testdata_dir())
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    (url, child)
}

#[test]
fn serve_answers_as_understand_does_and_stops_cleanly_on_sigterm() {
    use base64::Engine;
    let g = Golden::load();
    let dir = testdata_dir();
    // A host name resolves (to its IPv4 address first).
    let (url, child) = serve(&["--api-key", "k3y", "--host", "localhost"]);
    // The same two-image conversation through `understand` and the server.
    let messages = g.at("prompts.pro.und_two_images.messages");
    let question = messages[0]["content"].as_str().unwrap();
    let images: Vec<PathBuf> = messages[0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| dir.join("images").join(i.as_str().unwrap()))
        .collect();
    let mut args = vec!["understand", "--model", s(&dir), "--prompt", question];
    for i in &images {
        args.extend(["--image", s(i)]);
    }
    args.extend(["--max-new-tokens", "24", "--format", "json"]);
    let cli = ok_json(&args);
    let mut parts = Vec::new();
    for (k, piece) in question.split("<image_placeholder>").enumerate() {
        if k > 0 {
            let png = std::fs::read(&images[k - 1]).unwrap();
            let b64 = base64::engine::general_purpose::STANDARD.encode(png);
            parts.push(serde_json::json!({"type": "image_url",
                "image_url": {"url": format!("data:image/png;base64,{b64}")}}));
        }
        if !piece.is_empty() {
            parts.push(serde_json::json!({"type": "text", "text": piece}));
        }
    }
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": 24,
    });
    let chat = |body: &Value| -> Value {
        ureq::post(&format!("{url}/v1/chat/completions"))
            .set("Authorization", "Bearer k3y")
            .send_string(&body.to_string())
            .unwrap()
            .into_json()
            .unwrap()
    };
    let answer = chat(&body);
    assert_eq!(answer["choices"][0]["message"]["content"], cli["text"]);
    assert_eq!(
        cli["text"],
        *g.at("understanding.und_two_images.greedy_text_skip_special")
    );
    // With a system message (and an empty one, which keeps the built-in
    // prompt), a greeting first and two user turns in a row: the CLI's
    // conversation file and the server agree.
    let messages = serde_json::json!([
        {"role": "system", "content": "Answer in one word."},
        {"role": "developer", "content": ""},
        {"role": "assistant", "content": "Hello! Ask me anything."},
        {"role": "user", "content": "What is a cat?"},
        {"role": "user", "content": "And a dog?"},
    ]);
    let file = tmp("conv-system").join("conversation.json");
    std::fs::write(&file, messages.to_string()).unwrap();
    let cli = ok_json(&[
        "understand",
        "--model",
        s(&dir),
        "--conversation",
        s(&file),
        "--max-new-tokens",
        "12",
        "--presence-penalty",
        "1.5",
        "--format",
        "json",
    ]);
    let body = serde_json::json!({"messages": messages, "max_tokens": 12, "presence_penalty": 1.5});
    let answer = chat(&body);
    assert_eq!(answer["choices"][0]["message"]["content"], cli["text"]);
    assert_eq!(answer["usage"]["prompt_tokens"], cli["prompt_tokens"]);
    // The model is named by its directory, not its path.
    let models: Value = ureq::get(&format!("{url}/v1/models"))
        .set("Authorization", "Bearer k3y")
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(models["data"][0]["id"], "janus-tiny", "{models}");
    // A second server cannot take the same port: a clear error.
    let port = url.rsplit(':').next().unwrap();
    fails_with(
        &["serve", "--model", s(&dir), "--port", port],
        "cannot listen on",
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
}

#[test]
fn convert_quant_then_generate_in_chunks_within_max_memory() {
    use janus_pipeline::{ImageGenConfig, ImageRequest, Janus};
    let dir = testdata_dir();
    let q4 = tmp("q4");
    let out = janus(&[
        "convert",
        "--input",
        s(&dir),
        "--output",
        s(&q4),
        "--dtype",
        "f16",
        "--quant",
        "q4_0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "convert --quant failed: {stderr}");
    assert!(stderr.contains("q4_0 for"), "{stderr}");

    // The limit that holds one f16/q4_0 image at a time, not two.
    let request = ImageRequest::new("a green hill").config(ImageGenConfig {
        parallel: 2,
        ..ImageGenConfig::default()
    });
    let plan = Janus::<burn::backend::Flex>::plan_generation(
        s(&q4),
        janus_pipeline::Precision::quantized(
            burn::tensor::DType::F16,
            janus_pipeline::QuantFormat::Q4_0,
        ),
        None,
        &request,
        None,
        |_| {},
    )
    .unwrap();
    let one = plan.memory.need(1).to_string();
    let generate = |limit: Option<&str>, name: &str| {
        let out_dir = tmp(name);
        let mut args = vec![
            "generate",
            "--model",
            s(&q4),
            "--prompt",
            "a green hill",
            "--parallel",
            "2",
            "--dtype",
            "f16",
            "--format",
            "json",
            "--out",
        ];
        let out_s = out_dir.to_str().unwrap().to_string();
        args.push(&out_s);
        if let Some(l) = limit {
            args.extend(["--max-memory", l]);
        }
        let out = janus(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "generate {limit:?} failed: {stderr}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (v["codes"].clone(), stderr)
    };
    let (batch, stderr) = generate(None, "q4-batch");
    // The estimate names the format the weights are counted in.
    let estimate = stderr
        .lines()
        .find(|l| l.contains("memory estimate:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(estimate.contains("q4_0"), "{estimate}");
    let (chunked, stderr) = generate(Some(&one), "q4-chunked");
    assert!(stderr.contains("in chunks of 1"), "{stderr}");
    assert_eq!(batch, chunked);
    assert_eq!(batch.as_array().unwrap().len(), 2);
    // Without --dtype the stored format runs as `--dtype q4_0` would (the
    // rest in 16 bits): the images of the original quantized at load.
    let codes = |model: &Path, dtype: &[&str], name: &str| {
        let out_dir = tmp(name);
        let args = [
            "generate",
            "--model",
            s(model),
            "--prompt",
            "a green hill",
            "--seed",
            "3",
        ];
        let more = ["--format", "json", "--out", s(&out_dir)];
        let v = ok_json(&[&args[..], dtype, &more[..]].concat());
        v["codes"].clone()
    };
    assert_eq!(
        codes(&q4, &[], "q4-stored"),
        codes(&dir, &["--dtype", "q4_0"], "q4-at-load")
    );

    // The quantization error of a checkpoint that stores q4_0 has no f32
    // weights to compare with: refused, not reported as nothing.
    let bench_out = tmp("q4-bench").join("b.json");
    fails_with(
        &[
            "bench",
            "--model",
            s(&q4),
            "--only",
            "error",
            "--out",
            s(&bench_out),
        ],
        "no f32 weights",
    );
    // Not even one image: refused before loading, naming need and limit.
    fails_with(
        &[
            "generate",
            "--model",
            s(&q4),
            "--prompt",
            "x",
            "--max-memory",
            "1MB",
            "--out",
            s(&tmp("q4-refused")),
        ],
        "available (--max-memory)",
    );
    fails_with(
        &[
            "generate",
            "--model",
            s(&q4),
            "--prompt",
            "x",
            "--max-memory",
            "lots",
        ],
        "not a size",
    );
}

/// Runs `cmd` (stdout and stderr discarded) and returns whether it succeeded
/// and its peak resident memory in bytes (its own rusage, from `wait4`).
#[cfg(target_os = "linux")]
#[allow(clippy::zombie_processes, reason = "wait4 reaps it")]
fn peak_memory_of(cmd: &mut Command) -> (bool, u64) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 fills it and reaps only this child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss as u64 * 1024)
}

#[cfg(target_os = "linux")]
#[test]
fn hostile_image_files_are_refused_or_read_within_bounded_memory() {
    use image::ImageEncoder;
    let dir = tmp("hostile-images");
    let model = testdata_dir();
    let encode = |image: &Path| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_janus"));
        cmd.args(["vq", "encode", "--model", s(&model), "--image", s(image)]);
        cmd
    };
    // An 8x8 PNG whose colour profile inflates to 256 MB (about 250 KB on
    // disk): it took 1 GB to read (Pillow refuses it).
    let mut png = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
    encoder.set_icc_profile(vec![0; 256 << 20]).unwrap();
    encoder
        .write_image(&[128; 8 * 8 * 3], 8, 8, image::ExtendedColorType::Rgb8)
        .unwrap();
    let bomb = dir.join("profile-bomb.png");
    std::fs::write(&bomb, &png).unwrap();
    drop(png);
    let (_, peak) = peak_memory_of(&mut encode(&bomb));
    assert!(peak < 160 << 20, "peak {} MB", peak >> 20);
    // 400 MB that are no image: refused from the first bytes, not read whole.
    let junk = dir.join("junk.png");
    std::fs::File::create(&junk)
        .unwrap()
        .set_len(400 << 20)
        .unwrap();
    let (ok, peak) = peak_memory_of(&mut encode(&junk));
    assert!(!ok && peak < 160 << 20, "ok {ok}, peak {} MB", peak >> 20);
    let out = encode(&junk).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not be determined from its first bytes"),
        "{err}"
    );
    // 12 megapixels in one row or one column (grey, 36 MB as RGB): the
    // resize took 192 MB of weights for the row and 504 MB of widened rows
    // for the column (234 and 726 MB peak; both in bounded pieces now).
    for (w, h) in [(12_000_000u32, 1u32), (1, 12_000_000)] {
        let path = dir.join(format!("line-{w}x{h}.tif"));
        image::codecs::tiff::TiffEncoder::new(std::fs::File::create(&path).unwrap())
            .write_image(
                &vec![200; w as usize * h as usize],
                w,
                h,
                image::ExtendedColorType::L8,
            )
            .unwrap();
        let (ok, peak) = peak_memory_of(&mut encode(&path));
        assert!(
            ok && peak < 160 << 20,
            "{w}x{h}: ok {ok}, peak {} MB",
            peak >> 20
        );
        std::fs::remove_file(&path).unwrap();
    }
    // A JPEG cut in half: refused as Pillow does (libjpeg would fill the rest
    // with grey); the whole file still reads.
    let jpeg = std::fs::read(model.join("images/equation.png")).unwrap();
    let cut = dir.join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
    let out = encode(&cut).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("truncated JPEG"),
        "{err}"
    );
    assert!(
        encode(&model.join("images/equation.png"))
            .output()
            .unwrap()
            .status
            .success()
    );
}

/// The address-space limit (`ulimit -v`) bounds what generation plans for
/// (it planned with `MemAvailable` alone and aborted out of memory).
#[cfg(target_os = "linux")]
#[test]
fn generation_plans_within_the_address_space_limit() {
    use std::io::BufRead;
    let out_dir = tmp("ulimit-v");
    // The estimate line of `generate --parallel 1024` under `ulimit -v KIB`.
    let estimate = |kib: u64| {
        let mut child = Command::new("sh")
            .args(["-c", &format!("ulimit -v {kib} && exec \"$0\" \"$@\"")])
            .arg(env!("CARGO_BIN_EXE_janus"))
            .args([
                "generate",
                "--model",
                s(&testdata_dir()),
                "--prompt",
                "a cat",
            ])
            .args(["--parallel", "1024", "--out", s(&out_dir)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        line
    };
    // "... need N MB, M MB available (ulimit -v)": N and M.
    let megabytes_before = |line: &str, tail: &str| -> f64 {
        let end = line
            .find(tail)
            .unwrap_or_else(|| panic!("no `{tail}` in {line}"));
        line[..end].rsplit(' ').next().unwrap().parse().unwrap()
    };
    // 1024 tiny images need about 530 MB, one about 420 MB (the runtime's
    // share included): the limit is set so that what is left of it after
    // the process's own size lies between (with a fixed limit, a process
    // that happened to be smaller got them all at once).
    let first = estimate(600_000);
    let line = if first.contains("in chunks of") {
        first
    } else {
        let available = megabytes_before(&first, " MB available (ulimit -v)");
        let need = megabytes_before(&first, " MB, ");
        assert!(first.contains("1024 image(s) at once"), "{first}");
        // The process's size, then room for 50 MB less than all 1024.
        let own = 614.4 - available;
        let kib = ((own + need - 50.0) * 1e6 / 1024.0) as u64;
        estimate(kib)
    };
    assert!(
        line.contains("available (ulimit -v)") && line.contains("in chunks of"),
        "{line}"
    );
}

/// A random-weight bench that cannot fit is refused before it builds the
/// model (a 7B bench aborted out of memory).
#[cfg(target_os = "linux")]
#[test]
fn a_bench_model_that_cannot_fit_is_refused() {
    let json = tmp("bench-fit").join("b.json");
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 3000000 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_janus"))
        .args([
            "bench",
            "--random-weights",
            "--variant",
            "janus-pro-7b",
            "--only",
            "vq",
        ])
        .args(["--out", s(&json)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("janus-pro-7b model in") && err.contains("available (ulimit -v)"),
        "{err}"
    );
}

/// Runs `generate` on the tiny model into `dir`; returns its stderr.
fn generate_a_cat(dir: &Path) -> String {
    let out = janus(&[
        "generate",
        "--model",
        s(&testdata_dir()),
        "--prompt",
        "a cat",
        "--out",
        s(dir),
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

/// Names from hostile files or arguments cannot drive the terminal: control
/// characters in messages are escaped; a log (stderr not a terminal) gets
/// progress as lines, without carriage returns.
#[test]
fn messages_escape_control_characters_and_logs_get_plain_progress_lines() {
    let bad = tmp("escapes").join("x\u{1b}]0;owned\u{7}\u{1b}[2J.png");
    let out = janus(&[
        "vq",
        "encode",
        "--model",
        s(&testdata_dir()),
        "--image",
        s(&bad),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(
        err.contains("x\\u{1b}]0;owned\\u{7}\\u{1b}[2J.png"),
        "{err}"
    );
    let err = generate_a_cat(&tmp("plain-progress"));
    assert!(!err.contains('\r'), "{err:?}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("generating 1 image(s) 16/16")),
        "{err}"
    );
}

/// A PNG half-written by a run that was killed (SIGKILL: no clean-up) is
/// removed by the next run into the directory.
#[test]
fn generate_removes_what_killed_runs_left() {
    let dir = tmp("killed-leftover");
    // A pid above Linux's largest: its process is gone.
    let leftover = dir.join(".img_3.png.99999999-0.partial");
    std::fs::write(&leftover, b"half a png").unwrap();
    let err = generate_a_cat(&dir);
    if Path::new("/proc/self").exists() {
        assert!(
            !leftover.exists() && err.contains("left by a run that was killed"),
            "{err}"
        );
    }
}
