//! The Llama backbone against the reference: all-position logits, the 24-token
//! greedy decodes (ids exact, per-step logits within tolerance) and the
//! left-padded batch, from both the f32 safetensors and the bf16 `.bin`.

use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use janus_checkpoint::Checkpoint;
use janus_core::Weights;
use janus_llm::Llama;
use janus_pipeline::JanusConfig;
use janus_tests::{Golden, TestBackend as B, argmax, testdata_dir, values};

const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

fn load(file: &str) -> Llama<B> {
    let dir = testdata_dir();
    let config = JanusConfig::from_file(dir.join("config.json")).unwrap();
    let ckpt = Checkpoint::open(dir.join(file)).unwrap();
    Llama::load(
        &Weights::new(&ckpt, &Default::default(), DType::F32).pp("language_model"),
        &config.language,
    )
    .unwrap()
}

struct Decode {
    /// Per step, per row.
    tokens: Vec<Vec<usize>>,
    /// Per step: `[rows * vocab]`.
    logits: Vec<Vec<f32>>,
}

/// Greedy decoding from `embeds`, feeding each argmax back through `embed_tokens`.
fn greedy(llm: &Llama<B>, embeds: Tensor<B, 3>, padding: Option<&[bool]>, steps: usize) -> Decode {
    let [b, t, _] = embeds.dims();
    let device = embeds.device();
    let mut cache = llm.new_cache(b, t + steps);
    let mut hidden = llm.forward(embeds, padding, &mut cache);
    let mut out = Decode {
        tokens: Vec::new(),
        logits: Vec::new(),
    };
    for _ in 0..steps {
        let last = hidden.dims()[1] - 1;
        let logits = values(llm.logits(hidden.narrow(1, last, 1)));
        let vocab = logits.len() / b;
        let next: Vec<usize> = logits.chunks(vocab).map(argmax).collect();
        let ids = TensorData::new(next.iter().map(|&i| i as i64).collect::<Vec<_>>(), [b, 1]);
        out.tokens.push(next);
        out.logits.push(logits);
        hidden = llm.forward(llm.embed(Tensor::from_data(ids, &device)), None, &mut cache);
    }
    out
}

fn check_decode(g: &Golden, prefix: &str, decode: &Decode, rows: usize, file: &str) {
    let want_tokens = g.ints(&format!("{prefix}.tokens"));
    let steps = decode.tokens.len();
    let step_name = format!("{prefix}.step_logits");
    let want_logits = g.f32(&step_name);
    let per_step = want_logits.len() / steps;
    for (s, (tokens, logits)) in decode.tokens.iter().zip(&decode.logits).enumerate() {
        g.assert_close_slice(
            &step_name,
            &want_logits[s * per_step..(s + 1) * per_step],
            logits,
            &format!("{file}: {prefix} step {s}"),
        );
        for (r, tok) in tokens.iter().enumerate() {
            // Golden tokens are [rows, steps] (or [steps] for one row).
            let want = want_tokens[r * steps + s];
            assert_eq!(*tok as i64, want, "{file}: {prefix} row {r} step {s}");
        }
    }
    assert_eq!(want_tokens.len(), rows * steps);
}

#[test]
fn all_position_logits_match_reference() {
    let g = Golden::load();
    for file in WEIGHT_FILES {
        let llm = load(file);
        let embeds = g.tensor::<3>("und.und_one_image.inputs_embeds");
        let [b, t, _] = embeds.dims();
        let mut cache = llm.new_cache(b, t);
        let logits = llm.logits(llm.forward(embeds, None, &mut cache));
        let shape = logits.dims().to_vec();
        g.assert_close("und.und_one_image.logits", &values(logits), &shape);
    }
}

#[test]
fn final_norm_and_first_layer_match_reference() {
    let g = Golden::load();
    let llm = load(WEIGHT_FILES[0]);
    let embeds = g.tensor::<3>("und.und_one_image.inputs_embeds");
    let mut cache = llm.new_cache(1, embeds.dims()[1]);
    let hidden = llm.forward(embeds, None, &mut cache);
    let shape = hidden.dims().to_vec();
    g.assert_close(
        "und.und_one_image.intermediate.llm.final_norm",
        &values(hidden),
        &shape,
    );
}

#[test]
fn greedy_decodes_match_reference() {
    let g = Golden::load();
    for file in WEIGHT_FILES {
        let llm = load(file);
        for conv in ["und_one_image", "und_two_images", "text_only"] {
            let prefix = format!("und.{conv}.greedy");
            let steps = g.shape(&format!("{prefix}.tokens"))[0];
            let embeds = g.tensor::<3>(&format!("und.{conv}.inputs_embeds"));
            let decode = greedy(&llm, embeds, None, steps);
            check_decode(&g, &prefix, &decode, 1, file);
        }
    }
}

#[test]
fn left_padded_batch_matches_reference() {
    let g = Golden::load();
    let rows: Vec<String> = g
        .at("prompts.pro.batch_left_padded.rows")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let ids = g.ints("prompt.pro.batch_left_padded.input_ids");
    let mask: Vec<bool> = g
        .ints("prompt.pro.batch_left_padded.attention_mask")
        .iter()
        .map(|m| *m != 0)
        .collect();
    let [b, t] = <[usize; 2]>::try_from(g.shape("prompt.pro.batch_left_padded.input_ids")).unwrap();
    assert_eq!(b, rows.len());
    let device = Default::default();
    for file in WEIGHT_FILES {
        let llm = load(file);
        // Pads get their token embeddings; real positions the reference's spliced embeds.
        let pad_embeds = llm.embed(Tensor::from_data(
            TensorData::new(ids.clone(), [b, t]),
            &device,
        ));
        let mut row_embeds = Vec::new();
        for (r, conv) in rows.iter().enumerate() {
            let real = g.tensor::<3>(&format!("und.{conv}.inputs_embeds"));
            let n_real = real.dims()[1];
            let pads = t - n_real;
            assert!(
                mask[r * t..r * t + pads].iter().all(|m| !m)
                    && mask[r * t + pads..(r + 1) * t].iter().all(|m| *m)
            );
            row_embeds.push(if pads == 0 {
                real
            } else {
                let row = pad_embeds.clone().narrow(0, r, 1).narrow(1, 0, pads);
                Tensor::cat(vec![row, real], 1)
            });
        }
        let embeds = Tensor::cat(row_embeds, 0);

        let mut cache = llm.new_cache(b, t);
        let hidden = llm.forward(embeds.clone(), Some(&mask), &mut cache);
        let last = values(llm.logits(hidden.narrow(1, t - 1, 1)));
        g.assert_close(
            "und.batch_left_padded.last_position_logits",
            &last,
            &[b, last.len() / b],
        );

        let steps = g.shape("und.batch_left_padded.greedy.tokens")[1];
        let decode = greedy(&llm, embeds, Some(&mask), steps);
        check_decode(&g, "und.batch_left_padded.greedy", &decode, b, file);
    }
}
