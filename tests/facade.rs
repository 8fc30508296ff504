//! The library API as an embedding program uses it: `Janus::load`, then a
//! question about an image in three calls with the answer streamed, and image
//! generation in one; checked against the reference's golden outputs.
//!
//! The wgpu pass of the parity suite skips this file: the facade adds no
//! backend code of its own over what `pipeline_parity` runs there, and each
//! wgpu test binary costs minutes of compile time in CI.
#![cfg(not(feature = "wgpu"))]

use burn::tensor::DType;
use janus_pipeline::chat::Message;
use janus_pipeline::{
    FinishReason, ImageGenConfig, ImageRequest, Janus, Request, TextStream, open_image,
};
use janus_tests::{Golden, TestBackend as B, testdata_dir};

fn load() -> Janus<B> {
    let dir = testdata_dir();
    Janus::<B>::load(dir.to_str().unwrap(), &Default::default(), DType::F32).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn a_question_about_an_image_in_three_calls_streams_the_reference_answer() {
    let g = Golden::load();
    let janus = load();
    let messages: Vec<Message> =
        serde_json::from_value(g.at("prompts.pro.und_one_image.messages").clone()).unwrap();
    let question = messages[0]
        .content
        .strip_prefix("<image_placeholder>\n")
        .expect("the golden question starts with its image");
    let max_new = g.int("understanding.und_one_image.generate_flags.max_new_tokens") as usize;

    // The three calls.
    let image = open_image(g.dir.join("images").join(&messages[0].images[0])).unwrap();
    let request = Request::new(question).image(image).max_new_tokens(max_new);
    let mut answer = janus.understand(&request).unwrap();

    let mut deltas = Vec::new();
    for delta in &mut answer {
        deltas.push(delta.unwrap());
    }
    let tokens: Vec<u32> = deltas.iter().filter_map(|d| d.token).collect();
    assert_eq!(
        tokens,
        ids(g.at("understanding.und_one_image.greedy_tokens"))
    );
    assert_eq!(answer.token_ids(), tokens.as_slice());
    let text: String = deltas.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(
        text,
        g.at("understanding.und_one_image.greedy_text_skip_special")
            .as_str()
            .unwrap()
    );
    assert_eq!(answer.finish_reason(), Some(FinishReason::Length));
    assert_eq!(
        answer.prompt_tokens(),
        g.ints("prompt.pro.und_one_image.attention_mask").len()
    );
}

#[test]
fn conversations_with_several_images_or_none_stream_the_reference_answers() {
    let g = Golden::load();
    let janus = load();
    for conv in ["und_two_images", "text_only"] {
        let request = golden_request(&g, conv);
        let answer = janus.understand(&request).unwrap();
        let deltas: Vec<_> = answer.map(Result::unwrap).collect();
        let tokens: Vec<u32> = deltas.iter().filter_map(|d| d.token).collect();
        assert_eq!(
            tokens,
            ids(g.at(&format!("understanding.{conv}.greedy_tokens"))),
            "{conv}"
        );
        let text: String = deltas.iter().map(|d| d.text.as_str()).collect();
        let want = g.at(&format!("understanding.{conv}.greedy_text_skip_special"));
        assert_eq!(text, want.as_str().unwrap(), "{conv}");
    }
}

#[test]
fn streamed_deltas_hold_back_incomplete_characters_and_add_up_to_the_decode() {
    let janus = load();
    let tok = janus.processor().tokenizer();
    let text = "Grüße, 世界! naïve café — ok 🙂 done";
    let ids = tok.encode_plain(text).unwrap();
    let mut stream = TextStream::new(tok);
    let mut deltas: Vec<String> = ids.iter().map(|id| stream.push(*id)).collect();
    deltas.push(stream.finish());
    for d in &deltas {
        assert!(!d.ends_with(char::REPLACEMENT_CHARACTER), "{deltas:?}");
    }
    assert_eq!(deltas.concat(), tok.decode(&ids, true));
    assert_eq!(deltas.concat(), text);
    assert!(
        deltas.iter().filter(|d| !d.is_empty()).count() > 1,
        "text arrives in pieces: {deltas:?}"
    );
}

#[test]
fn argmax_image_generation_gives_the_reference_codes() {
    let g = Golden::load();
    let janus = load();
    let config = ImageGenConfig {
        parallel: g.int("image_generation.parallel_size") as usize,
        cfg_weight: g.at("image_generation.cfg_weight").as_f64().unwrap() as f32,
        temperature: 0.0,
        seed: 0,
    };
    let prompt = g.at("prompts.pro.image_generation.messages")[0]["content"]
        .as_str()
        .unwrap();
    let images = janus
        .generate_images(&ImageRequest::new(prompt).config(config), |_, _| {})
        .unwrap();
    let want = g.id_rows("image_generation.argmax_tokens");
    let got: Vec<Vec<u32>> = images.iter().map(|i| i.codes.clone()).collect();
    assert_eq!(got, want);
    let golden = g.ints("gen.argmax.img_u8");
    let pixels: Vec<u8> = images.iter().flat_map(|i| i.image.pixels.clone()).collect();
    g.assert_pixels("gen.argmax.img_u8", &pixels);
    assert_eq!(pixels.len(), golden.len());
}

/// Codes of `prompts` (text, images, cfg) generated in one batched session,
/// dropping the images flagged in `cancel_at` (step, image) on the way.
fn batched_codes(
    janus: &Janus<B>,
    prompts: &[(&str, usize, f32)],
    temperature: f32,
    cancel: Option<(usize, usize)>,
) -> Vec<Vec<u32>> {
    use janus_pipeline::{ImageGenSession, ImagePrompt, image_sampler};
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|(p, _, _)| janus.processor().generation_prompt(p).unwrap())
        .collect();
    let batch: Vec<ImagePrompt<'_>> = prompts
        .iter()
        .zip(&ids)
        .map(|((_, n, w), ids)| ImagePrompt {
            ids,
            images: *n,
            cfg_weight: *w,
        })
        .collect();
    let pad = janus.processor().tokenizer().ids.pad;
    let mut session = ImageGenSession::batch(janus.model(), &batch, pad).unwrap();
    let mut samplers: Vec<_> = prompts
        .iter()
        .flat_map(|(_, n, _)| (0..*n).map(|i| image_sampler(7, i, temperature).unwrap()))
        .collect();
    let mut alive: Vec<usize> = (0..samplers.len()).collect();
    let mut codes = vec![Vec::new(); samplers.len()];
    let steps = janus.config().vq.grid_side().pow(2);
    for step in 0..steps {
        let logits = session.logits();
        let picked: Vec<u32> = logits
            .iter()
            .zip(&alive)
            .map(|(l, &i)| samplers[i].sample(&l.guided) as u32)
            .collect();
        for (&i, p) in alive.iter().zip(&picked) {
            codes[i].push(*p);
        }
        if step + 1 < steps {
            session.feed(&picked).unwrap();
            if let Some((at, image)) = cancel
                && at == step
            {
                let keep: Vec<bool> = alive.iter().map(|i| *i != image).collect();
                session.retain(&keep).unwrap();
                alive.retain(|i| *i != image);
            }
        }
    }
    codes
}

#[test]
fn images_of_different_prompts_batched_together_equal_their_runs_alone() {
    let janus = load();
    let short = ("a cat", 1, 5.0);
    let long = (
        "a watercolour painting of a lighthouse at dusk, waves",
        2,
        3.0,
    );
    for temperature in [0.0, 1.0] {
        let alone_short = batched_codes(&janus, &[short], temperature, None);
        let alone_long = batched_codes(&janus, &[long], temperature, None);
        let together = batched_codes(&janus, &[short, long], temperature, None);
        assert_eq!(together[0], alone_short[0], "temperature {temperature}");
        assert_eq!(together[1..], alone_long[..], "temperature {temperature}");
        // The second image of the long prompt is dropped after step 3: the
        // others go on exactly as before.
        let cancelled = batched_codes(&janus, &[short, long], temperature, Some((3, 1)));
        assert_eq!(cancelled[0], alone_short[0]);
        assert_eq!(cancelled[2], alone_long[1]);
        assert_eq!(cancelled[1].len(), 4);
        assert_eq!(cancelled[1][..], alone_long[0][..4]);
        // The long prompt joins the short one's running batch after 5 steps.
        let joined = joined_codes(&janus, short, long, temperature, 5);
        assert_eq!(joined[0], alone_short[0], "temperature {temperature}");
        assert_eq!(joined[1..], alone_long[..], "temperature {temperature}");
    }
}

/// Codes of `a`, with `b` joining its running batch after `after` steps, through
/// the batcher the server schedules with.
fn joined_codes(
    janus: &Janus<B>,
    a: (&str, usize, f32),
    b: (&str, usize, f32),
    temperature: f32,
    after: usize,
) -> Vec<Vec<u32>> {
    use janus_pipeline::{ImageBatcher, ImageJob};
    let job = |tag: usize, (prompt, n, w): (&str, usize, f32)| ImageJob {
        tag,
        prompt_ids: janus.processor().generation_prompt(prompt).unwrap(),
        config: ImageGenConfig {
            parallel: n,
            cfg_weight: w,
            temperature,
            seed: 7,
        },
    };
    let pad = janus.processor().tokenizer().ids.pad;
    let mut batcher = ImageBatcher::new(janus.model(), pad);
    let mut out = vec![Vec::new(); a.1 + b.1];
    let mut joining = vec![job(0, a)];
    let mut step = 0;
    while step == 0 || !batcher.is_empty() {
        if step == after {
            joining.push(job(1, b));
        }
        for done in batcher.step(std::mem::take(&mut joining)).unwrap() {
            out[done.tag * a.1 + done.index] = done.codes;
        }
        step += 1;
    }
    out
}

/// The golden conversation `conv` as a request with its token budget.
fn golden_request(g: &Golden, conv: &str) -> Request {
    let messages: Vec<Message> =
        serde_json::from_value(g.at(&format!("prompts.pro.{conv}.messages")).clone()).unwrap();
    let images = messages
        .iter()
        .flat_map(|m| &m.images)
        .map(|f| open_image(g.dir.join("images").join(f)).unwrap())
        .collect();
    let max = g.int(&format!(
        "understanding.{conv}.generate_flags.max_new_tokens"
    )) as usize;
    Request {
        images,
        ..Request::chat(messages).max_new_tokens(max)
    }
}

#[test]
fn conversations_batched_together_give_the_answers_they_give_alone() {
    use janus_pipeline::{SamplingConfig, TextBatcher, TextEvent};
    let g = Golden::load();
    let janus = load();
    let convs = ["und_one_image", "und_two_images", "text_only"];
    let mut requests: Vec<Request> = convs.iter().map(|c| golden_request(&g, c)).collect();
    // A sampled one with a longer budget, and one that stops after 3 tokens.
    requests.push(
        golden_request(&g, "text_only")
            .max_new_tokens(40)
            .sampling(SamplingConfig {
                temperature: 0.9,
                top_k: 50,
                top_p: 0.95,
                seed: 11,
                // Each row keeps its own picks when batched.
                frequency_penalty: 0.5,
                presence_penalty: 0.3,
            }),
    );
    requests.push(golden_request(&g, "und_one_image").max_new_tokens(3));
    let alone: Vec<Vec<u32>> = requests
        .iter()
        .map(|r| {
            let mut answer = janus.understand(r).unwrap();
            for d in &mut answer {
                d.unwrap();
            }
            answer.token_ids().to_vec()
        })
        .collect();
    for (conv, got) in convs.iter().zip(&alone) {
        let want: Vec<u32> = ids(g.at(&format!("understanding.{conv}.greedy_tokens")));
        assert_eq!(*got, want, "{conv} alone");
    }
    // Joining at steps 0, 0, 2, 5 and 7 of a running batch.
    let joins = [0, 0, 2, 5, 7];
    let mut batch = TextBatcher::new(&janus);
    let mut tokens = vec![Vec::new(); requests.len()];
    let mut texts = vec![String::new(); requests.len()];
    let mut finished = vec![None; requests.len()];
    let mut step = 0;
    while step <= 7 || !batch.is_empty() {
        let mut events = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            if joins[i] == step {
                events.extend(batch.join(i, r).unwrap());
            }
        }
        events.extend(batch.step().unwrap());
        for (i, e) in events {
            match e {
                TextEvent::Delta(d) => {
                    tokens[i].extend(d.token);
                    texts[i].push_str(&d.text);
                }
                TextEvent::Finished { reason, .. } => finished[i] = Some(reason),
                TextEvent::Started { .. } => {}
            }
        }
        step += 1;
    }
    assert_eq!(tokens, alone);
    for (i, conv) in convs.iter().enumerate() {
        let want = g.at(&format!("understanding.{conv}.greedy_text_skip_special"));
        assert_eq!(texts[i], want.as_str().unwrap(), "{conv}");
    }
    assert!(finished.iter().all(Option::is_some));
}
