//! Preprocessing, tokenizer, chat templates, understanding end to end and image
//! generation with CFG against the reference's golden outputs. Sizes, ids and
//! names all come from the data files.

use std::sync::OnceLock;

use burn::tensor::DType;
use janus_gen_tokenizer::VqModel;
use janus_pipeline::chat::{self, Message, Template};
use janus_pipeline::{
    Batch, ImageGenConfig, ImageGenSession, ImageProcessor, JanusModel, PreparedPrompt, RgbImage,
    Sampler, SamplingConfig, TextTokenizer,
};
use janus_tests::{Golden, TestBackend as B, testdata_dir, values};
use serde_json::Value;

fn model() -> &'static JanusModel<B> {
    static MODEL: OnceLock<JanusModel<B>> = OnceLock::new();
    MODEL.get_or_init(|| {
        JanusModel::load_dir(testdata_dir(), &Default::default(), DType::F32).unwrap()
    })
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_dir(testdata_dir()).unwrap()
}

fn processor() -> ImageProcessor {
    ImageProcessor::from_file(testdata_dir().join("preprocessor_config.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn to_chw(img: &RgbImage) -> Vec<u8> {
    let n = img.width * img.height;
    let mut out = vec![0u8; 3 * n];
    for (i, px) in img.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = px[c];
        }
    }
    out
}

#[test]
fn preprocessing_is_bit_exact_at_tiny_and_real_size() {
    let g = Golden::load();
    let p = processor();
    let images = g.at("images").as_object().unwrap();
    assert!(!images.is_empty());
    for (stem, info) in images {
        let img = janus_pipeline::open_image(g.dir.join(info["file"].as_str().unwrap())).unwrap();
        assert_eq!(
            [img.width, img.height],
            [
                info["size_wh"][0].as_u64().unwrap() as usize,
                info["size_wh"][1].as_u64().unwrap() as usize
            ]
        );
        let tiny = p.resize_and_pad(&img);
        assert_eq!(tiny.width, p.image_size);
        let want: Vec<u8> = g
            .ints(&format!("preprocess.{stem}.tiny.u8"))
            .iter()
            .map(|v| *v as u8)
            .collect();
        assert!(
            to_chw(&tiny) == want,
            "{stem}: tiny resize+pad differs from the reference"
        );
        let name = format!("preprocess.{stem}.tiny.pixel_values");
        g.assert_close(&name, &p.normalize(&tiny), &g.shape(&name));

        let real = p
            .with_size(info["384"]["image_size"].as_u64().unwrap() as usize)
            .resize_and_pad(&img);
        let golden =
            janus_pipeline::open_image(g.dir.join(info["384"]["u8_png"].as_str().unwrap()))
                .unwrap();
        assert_eq!((real.width, real.height), (golden.width, golden.height));
        let diff = real
            .pixels
            .iter()
            .zip(&golden.pixels)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            diff, 0,
            "{stem}: {diff} bytes of the 384-px preprocessing differ"
        );
    }
}

#[test]
fn unreadable_images_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("janus-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let err = janus_pipeline::open_image(&bad).unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");
    let err = janus_pipeline::open_image(dir.join("missing.jpg"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.jpg"), "{err}");
}

#[test]
fn tokenizer_matches_reference_encode_and_decode() {
    let g = Golden::load();
    let tok = tokenizer();
    // The count found without encoding is a lower bound of the real one (a
    // long prompt is refused by it before the encoder's memory is spent),
    // and not a vacuous one.
    let mut texts: Vec<String> = g
        .at("tokenizer.encode_tests")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    texts.extend([
        "assistant language equation ".repeat(50),
        " ".repeat(3000),
        "\n\r\t".repeat(400),
        "中文字符🙂".repeat(200),
        "<image_placeholder>".repeat(30),
        "\u{0}\u{7f}\u{feff}".repeat(100),
    ]);
    for text in &texts {
        let real = tok.encode_plain(text).unwrap().len();
        let bound = tok.min_tokens(text.len());
        assert!(bound <= real, "{bound} > {real} tokens for {text:?}");
    }
    assert!(
        tok.min_tokens(1000) >= 1000 / 64,
        "{}",
        tok.min_tokens(1000)
    );
    let special = g.at("tokenizer.special_ids");
    for (name, id) in [
        ("bos", tok.ids.bos),
        ("eos", tok.ids.eos),
        ("pad", tok.ids.pad),
        ("boi", tok.ids.boi),
        ("eoi", tok.ids.eoi),
        ("image", tok.ids.image),
    ] {
        assert_eq!(id as u64, special[name].as_u64().unwrap(), "{name} id");
    }
    for case in g.at("tokenizer.encode_tests").as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "encode {text:?}"
        );
        assert_eq!(
            tok.encode_plain(text).unwrap(),
            ids(&case["ids_without_bos"]),
            "encode without BOS {text:?}"
        );
        let all = ids(&case["ids"]);
        assert_eq!(
            tok.decode(&all, false),
            case["decode"].as_str().unwrap(),
            "decode {text:?}"
        );
        assert_eq!(
            tok.decode(&all, true),
            case["decode_skip_special"].as_str().unwrap(),
            "decode skip {text:?}"
        );
    }
    // Ids the LLM has but the tokenizer lacks are dropped, not a panic.
    let unknown = g.int("tokenizer.llm_vocab_size") as u32 - 1;
    assert_eq!(tok.decode(&[unknown], true), "");
}

fn template_of(style: &str) -> Template {
    if style == "pro" {
        Template::Pro
    } else {
        Template::Janus
    }
}

#[test]
fn prompts_ids_and_masks_match_reference_for_both_role_styles() {
    let g = Golden::load();
    let tok = tokenizer();
    let n_tokens = model().config.vision.num_patches();
    for (style, convs) in g.at("prompts").as_object().unwrap() {
        let template = template_of(style);
        for (conv, p) in convs.as_object().unwrap() {
            if conv == "batch_left_padded" {
                continue;
            }
            if conv == "image_generation" {
                let user = &p["messages"][0]["content"];
                let text =
                    chat::generation_prompt(user.as_str().unwrap(), template, "<begin_of_image>");
                assert_eq!(
                    text,
                    p["prompt"].as_str().unwrap(),
                    "{style} generation prompt"
                );
                assert!(text.starts_with(p["sft_format"].as_str().unwrap()));
                let got = tok.encode(&text).unwrap();
                assert_eq!(got, ids(&p["input_ids"]), "{style} generation ids");
                let mut uncond = got.clone();
                let l = uncond.len();
                uncond[1..l - 1].fill(tok.ids.pad);
                assert_eq!(uncond, ids(&p["uncond_input_ids"]), "{style} uncond ids");
                continue;
            }
            let messages: Vec<Message> = serde_json::from_value(p["messages"].clone()).unwrap();
            let text = chat::understanding_prompt(&messages, template);
            assert_eq!(
                text,
                p["sft_format"].as_str().unwrap(),
                "{style}/{conv} sft_format"
            );
            assert_eq!(p["system_prompt"].as_str().unwrap(), chat::SYSTEM_PROMPT);
            let prepared = PreparedPrompt::new(&tok, &text, n_tokens).unwrap();
            let n_images: usize = messages.iter().map(|m| m.images.len()).sum();
            prepared.expect_images(n_images).unwrap();
            assert_eq!(
                prepared.input_ids,
                ids(&p["input_ids"]),
                "{style}/{conv} input_ids"
            );
            let batch = Batch::new(&[prepared], tok.ids.pad, tok.ids.image);
            let key = format!("prompt.{style}.{conv}");
            let mask: Vec<i64> = batch.image_mask[0].iter().map(|m| *m as i64).collect();
            assert_eq!(
                mask,
                g.ints(&format!("{key}.images_seq_mask")),
                "{key} images_seq_mask"
            );
            assert!(
                g.ints(&format!("{key}.attention_mask"))
                    .iter()
                    .all(|m| *m == 1)
            );
        }
    }
}

fn conversation(g: &Golden, conv: &str) -> (Vec<Message>, Vec<String>) {
    let messages: Vec<Message> =
        serde_json::from_value(g.at(&format!("prompts.pro.{conv}.messages")).clone()).unwrap();
    let images = messages.iter().flat_map(|m| m.images.clone()).collect();
    (messages, images)
}

#[test]
fn understanding_end_to_end_matches_reference() {
    let g = Golden::load();
    let m = model();
    let tok = tokenizer();
    let proc = processor();
    for conv in ["und_one_image", "und_two_images", "text_only"] {
        let (messages, images) = conversation(&g, conv);
        let text = chat::understanding_prompt(&messages, Template::Pro);
        let prompt = PreparedPrompt::new(&tok, &text, m.config.vision.num_patches()).unwrap();
        let batch = Batch::new(&[prompt], tok.ids.pad, tok.ids.image);
        let features = if images.is_empty() {
            None
        } else {
            let pixels: Vec<Vec<f32>> = images
                .iter()
                .map(|f| {
                    proc.preprocess(
                        &janus_pipeline::open_image(g.dir.join("images").join(f)).unwrap(),
                    )
                })
                .collect();
            Some(m.image_embeds(m.pixel_tensor(&pixels).unwrap()).unwrap())
        };
        let embeds = m.prepare_inputs_embeds(&batch, features).unwrap();
        let name = format!("und.{conv}.inputs_embeds");
        g.assert_close(&name, &values(embeds.clone()), &embeds.dims());
        let want = g.ints(&format!("und.{conv}.greedy.tokens"));
        let mut sampler = Sampler::new(SamplingConfig::default()).unwrap();
        let mut streamed = Vec::new();
        let out = m.generate_text(
            &batch,
            embeds,
            want.len(),
            tok.ids.eos,
            &mut sampler,
            |_, id| streamed.push(id),
        );
        let got: Vec<i64> = out[0].iter().map(|t| *t as i64).collect();
        assert_eq!(got, want, "{conv} greedy tokens");
        assert_eq!(streamed, out[0]);
        let text = tok.decode(&out[0], true);
        assert_eq!(
            text,
            g.at(&format!("understanding.{conv}.greedy_text_skip_special"))
                .as_str()
                .unwrap()
        );
    }
}

#[test]
fn left_padded_understanding_batch_matches_reference() {
    let g = Golden::load();
    let m = model();
    let tok = tokenizer();
    let proc = processor();
    let rows: Vec<String> = g
        .at("prompts.pro.batch_left_padded.rows")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().into())
        .collect();
    let mut prompts = Vec::new();
    let mut pixels = Vec::new();
    for conv in &rows {
        let (messages, images) = conversation(&g, conv);
        prompts.push(
            PreparedPrompt::new(
                &tok,
                &chat::understanding_prompt(&messages, Template::Pro),
                m.config.vision.num_patches(),
            )
            .unwrap(),
        );
        pixels.extend(images.iter().map(|f| {
            proc.preprocess(&janus_pipeline::open_image(g.dir.join("images").join(f)).unwrap())
        }));
    }
    let batch = Batch::new(&prompts, tok.ids.pad, tok.ids.image);
    let flat_ids: Vec<i64> = batch
        .input_ids
        .iter()
        .flatten()
        .map(|i| *i as i64)
        .collect();
    assert_eq!(flat_ids, g.ints("prompt.pro.batch_left_padded.input_ids"));
    let flat_mask: Vec<i64> = batch
        .attention_mask
        .iter()
        .flatten()
        .map(|i| *i as i64)
        .collect();
    assert_eq!(
        flat_mask,
        g.ints("prompt.pro.batch_left_padded.attention_mask")
    );
    let features = m.image_embeds(m.pixel_tensor(&pixels).unwrap()).unwrap();
    let embeds = m.prepare_inputs_embeds(&batch, Some(features)).unwrap();
    let steps = g.shape("und.batch_left_padded.greedy.tokens")[1];
    let mut sampler = Sampler::new(SamplingConfig::default()).unwrap();
    let out = m.generate_text(&batch, embeds, steps, tok.ids.eos, &mut sampler, |_, _| {});
    let got: Vec<i64> = out.iter().flatten().map(|t| *t as i64).collect();
    assert_eq!(got, g.ints("und.batch_left_padded.greedy.tokens"));
}

fn gen_setup(g: &Golden) -> (Vec<u32>, u32, usize, f32) {
    let tok = tokenizer();
    let prompt_ids = tok
        .encode(g.at("image_generation.prompt").as_str().unwrap())
        .unwrap();
    assert_eq!(prompt_ids, ids(g.at("image_generation.input_ids")));
    let parallel = g.int("image_generation.parallel_size") as usize;
    let w = g.at("image_generation.cfg_weight").as_f64().unwrap() as f32;
    (prompt_ids, tok.ids.pad, parallel, w)
}

fn check_step_logits(g: &Golden, run: &str, step: usize, logits: &[janus_pipeline::CfgLogits]) {
    for (field, name) in [
        ("cond", "cond_logits"),
        ("uncond", "uncond_logits"),
        ("guided", "cfg_logits"),
    ] {
        let name = format!("gen.{run}.{name}");
        let want = g.f32(&name);
        let per_step = want.len() / g.shape(&name)[0];
        let got: Vec<f32> = logits
            .iter()
            .flat_map(|l| match field {
                "cond" => l.cond.clone(),
                "uncond" => l.uncond.clone(),
                _ => l.guided.clone(),
            })
            .collect();
        g.assert_close_slice(
            &name,
            &want[step * per_step..(step + 1) * per_step],
            &got,
            &format!("{name} step {step}"),
        );
    }
}

#[test]
fn argmax_image_generation_matches_reference() {
    let g = Golden::load();
    let m = model();
    let (prompt_ids, pad, parallel, w) = gen_setup(&g);
    let config = ImageGenConfig {
        parallel,
        cfg_weight: w,
        temperature: 0.0,
        seed: 0,
    };
    let mut progress = Vec::new();
    let codes = m
        .generate_images(&prompt_ids, pad, &config, |s, n| progress.push((s, n)))
        .unwrap();
    let got: Vec<i64> = codes.iter().flatten().map(|c| *c as i64).collect();
    assert_eq!(got, g.ints("gen.argmax.tokens"));
    assert_eq!(progress.len(), codes[0].len());
    teacher_force_and_decode(&g, "argmax", &codes);
}

/// Replays `codes` through a generation session, comparing each step's logits
/// with `gen.{run}.*_logits`, then the decoded images with `gen.{run}.dec/img_u8`.
fn teacher_force_and_decode(g: &Golden, run: &str, codes: &[Vec<u32>]) {
    let m = model();
    let (prompt_ids, pad, parallel, w) = gen_setup(g);
    let mut session = ImageGenSession::new(m, &prompt_ids, pad, parallel, w).unwrap();
    for step in 0..codes[0].len() {
        check_step_logits(g, run, step, &session.logits());
        let next: Vec<u32> = codes.iter().map(|c| c[step]).collect();
        session.feed(&next).unwrap();
    }
    let dec = m.decode_images(codes).unwrap();
    g.assert_close(&format!("gen.{run}.dec"), &values(dec.clone()), &dec.dims());
    let rgb: Vec<u8> = VqModel::<B>::to_rgb8(dec)
        .into_iter()
        .flat_map(|i| i.pixels)
        .collect();
    g.assert_pixels(&format!("gen.{run}.img_u8"), &rgb);
}

#[test]
fn teacher_forced_sampled_run_matches_reference_logits_and_images() {
    let g = Golden::load();
    let steps = g.shape("gen.sample.tokens")[1];
    let tokens = g.ints("gen.sample.tokens");
    let codes: Vec<Vec<u32>> = tokens
        .chunks(steps)
        .map(|r| r.iter().map(|c| *c as u32).collect())
        .collect();
    teacher_force_and_decode(&g, "sample", &codes);
}

#[test]
fn bad_generation_settings_are_errors() {
    let m = model();
    let tok = tokenizer();
    let ids = tok
        .encode("<|User|>: x\n\n<|Assistant|>:<begin_of_image>")
        .unwrap();
    for bad in [
        ImageGenConfig {
            parallel: 0,
            ..Default::default()
        },
        ImageGenConfig {
            cfg_weight: -1.0,
            ..Default::default()
        },
        ImageGenConfig {
            temperature: f32::NAN,
            ..Default::default()
        },
    ] {
        assert!(
            m.generate_images(&ids, tok.ids.pad, &bad, |_, _| {})
                .is_err(),
            "{bad:?}"
        );
    }
}
