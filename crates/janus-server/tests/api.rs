//! The server over real HTTP on an ephemeral port, on the tiny reference
//! checkpoint: every endpoint, the reference's greedy answers and argmax
//! images through the API, streamed == whole, bad requests, concurrency,
//! cancellation and shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use burn::tensor::DType;
use janus_pipeline::Janus;
use janus_server::{Limits, Server, ServerConfig, Shutdown};
use janus_tests::{Golden, TestBackend as B, add_special_tokens, testdata_dir, tiny_copy};
use serde_json::{Value, json};

struct Running {
    addr: SocketAddr,
    shutdown: Shutdown,
    thread: Option<JoinHandle<Result<(), janus_server::ServerError>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server on the tiny checkpoint, returned once the model is loaded.
fn start(config: ServerConfig) -> Running {
    start_with(config, || {
        let dir = testdata_dir();
        Janus::<B>::load(dir.to_str().unwrap(), &Default::default(), DType::F32)
            .map_err(|e| e.to_string())
    })
}

/// A server on the model `load` gives, returned once it is loaded.
fn start_with(
    config: ServerConfig,
    load: impl FnOnce() -> Result<Janus<B>, String> + Send + 'static,
) -> Running {
    let config = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        model_id: "janus-tiny".into(),
        ..config
    };
    let server = Server::bind(config).unwrap();
    let addr = server.local_addr();
    let shutdown = server.shutdown_handle();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || server.run(load, move |_| ready_tx.send(()).unwrap()));
    ready_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the server did not get ready");
    Running {
        addr,
        shutdown,
        thread: Some(thread),
    }
}

/// The server most tests share.
fn shared() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        let running = start(ServerConfig::default());
        let addr = running.addr;
        // Lives for the whole test binary.
        std::mem::forget(running);
        addr
    })
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build()
}

/// Status and JSON body (errors included).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = agent().request(method, &format!("http://{addr}{path}"));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    call(addr, "POST", path, Some(&body.to_string()), None)
}

/// Server-sent events of a streamed request: `(event name, data)`.
fn events(addr: SocketAddr, path: &str, body: &Value) -> Vec<(String, String)> {
    let resp = agent()
        .post(&format!("http://{addr}{path}"))
        .send_string(&body.to_string())
        .unwrap();
    assert_eq!(resp.content_type(), "text/event-stream");
    read_events(resp.into_reader())
}

fn read_events(reader: impl Read) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(reader).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((std::mem::take(&mut name), d.to_string()));
        }
    }
    out
}

fn data_url(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn image_part(name: &str) -> Value {
    let path = testdata_dir().join("images").join(name);
    json!({"type": "image_url", "image_url": {"url": data_url(&path)}})
}

fn text_part(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// The golden conversations as OpenAI messages: images inline where their
/// placeholders are.
fn golden_messages(g: &Golden, conv: &str) -> Vec<Value> {
    let messages = g
        .at(&format!("prompts.pro.{conv}.messages"))
        .as_array()
        .unwrap();
    let mut out = Vec::new();
    for m in messages {
        let role = if m["role"].as_str().unwrap().contains("User") {
            "user"
        } else {
            "assistant"
        };
        let content = m["content"].as_str().unwrap();
        if role == "assistant" && content.is_empty() {
            continue;
        }
        let images: Vec<&str> = m["images"]
            .as_array()
            .map(|a| a.iter().map(|i| i.as_str().unwrap()).collect())
            .unwrap_or_default();
        if images.is_empty() {
            out.push(json!({"role": role, "content": content}));
            continue;
        }
        let mut parts = Vec::new();
        for (k, piece) in content.split("<image_placeholder>").enumerate() {
            if k > 0 {
                parts.push(image_part(images[k - 1]));
            }
            if !piece.is_empty() {
                parts.push(text_part(piece));
            }
        }
        out.push(json!({"role": role, "content": parts}));
    }
    out
}

fn streamed_text(events: &[(String, String)]) -> (String, Option<String>) {
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let mut text = String::new();
    let mut finish = None;
    for (_, data) in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    (text, finish)
}

#[test]
fn health_models_metrics_and_the_page() {
    let addr = shared();
    assert_eq!(
        call(addr, "GET", "/health", None, None),
        (
            200,
            json!({"status": "ok", "max_images": 8, "max_body_bytes": 20_000_000, "max_tokens": 4096})
        )
    );
    let (s, models) = call(addr, "GET", "/v1/models", None, None);
    assert_eq!(s, 200);
    assert_eq!(models["data"][0]["id"], "janus-tiny");
    // Any id, hub ids with their slash unencoded included.
    for id in ["another-name", "deepseek-ai/Janus-Pro-1B"] {
        let path = format!("/v1/models/{id}");
        assert_eq!(
            call(addr, "GET", &path, None, None).1["id"],
            "janus-tiny",
            "{id}"
        );
    }
    let (s, metrics) = call(addr, "GET", "/metrics", None, None);
    assert_eq!(s, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(metrics.contains("janus_ready 1"), "{metrics}");
    assert!(metrics.contains("janus_queue_depth "), "{metrics}");
    let (s, page) = call(addr, "GET", "/", None, None);
    assert_eq!(s, 200);
    let page = page.as_str().unwrap();
    assert!(page.contains("<html") && page.contains("/v1/chat/completions"));
    for external in ["src=\"http", "href=\"http", "@import", "cdn."] {
        assert!(
            !page.contains(external),
            "the page loads an external asset: {external}"
        );
    }
}

#[test]
fn chat_gives_the_reference_greedy_answers_whole_and_streamed() {
    let addr = shared();
    let g = Golden::load();
    for conv in ["und_one_image", "und_two_images", "text_only"] {
        let max = g.int(&format!(
            "understanding.{conv}.generate_flags.max_new_tokens"
        ));
        let want = g.at(&format!("understanding.{conv}.greedy_text_skip_special"));
        let body = json!({
            "model": "whatever",
            "messages": golden_messages(&g, conv),
            "max_tokens": max,
        });
        let (status, whole) = post(addr, "/v1/chat/completions", &body);
        assert_eq!(status, 200, "{conv}: {whole}");
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["model"], "janus-tiny");
        assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
        assert_eq!(whole["choices"][0]["message"]["content"], *want, "{conv}");
        assert_eq!(whole["choices"][0]["finish_reason"], "length");
        let prompt = g.ints(&format!("prompt.pro.{conv}.attention_mask")).len();
        assert_eq!(whole["usage"]["prompt_tokens"], prompt, "{conv}");
        assert_eq!(whole["usage"]["completion_tokens"], max);
        assert_eq!(whole["usage"]["total_tokens"], prompt as i64 + max);

        let mut body = body;
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let ev = events(addr, "/v1/chat/completions", &body);
        let (text, finish) = streamed_text(&ev);
        assert_eq!(text, want.as_str().unwrap(), "{conv}");
        assert_eq!(finish.as_deref(), Some("length"));
        let usage: Value = serde_json::from_str(&ev[ev.len() - 2].1).unwrap();
        assert_eq!(usage["usage"], whole["usage"]);
    }
}

#[test]
fn stop_strings_and_system_prompts() {
    let addr = shared();
    let g = Golden::load();
    let want = g
        .at("understanding.text_only.greedy_text_skip_special")
        .as_str()
        .unwrap()
        .to_string();
    // Cut at a piece of the reference answer (characters 10..13).
    let chars: Vec<char> = want.chars().collect();
    let stop: String = chars[10..13].iter().collect();
    let cut = &want[..want.find(&stop).unwrap()];
    let body = json!({
        "messages": golden_messages(&g, "text_only"),
        "max_tokens": 24,
        "stop": [stop.as_str()],
    });
    let (_, whole) = post(addr, "/v1/chat/completions", &body);
    assert_eq!(whole["choices"][0]["message"]["content"], cut);
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (text, finish) = streamed_text(&events(addr, "/v1/chat/completions", &streamed));
    assert_eq!((text.as_str(), finish.as_deref()), (cut, Some("stop")));
    // A system message replaces the default system prompt: another prompt.
    let mut with_system = json!({"messages": golden_messages(&g, "text_only"), "max_tokens": 4});
    let (_, default) = post(addr, "/v1/chat/completions", &with_system);
    with_system["messages"].as_array_mut().unwrap().insert(
        0,
        json!({"role": "system", "content": "Answer in one word."}),
    );
    let (_, system) = post(addr, "/v1/chat/completions", &with_system);
    assert_ne!(
        default["usage"]["prompt_tokens"],
        system["usage"]["prompt_tokens"]
    );
    // An empty one (apps send their system field, empty by default) keeps
    // the default prompt.
    with_system["messages"][0]["content"] = json!(" ");
    let (_, empty) = post(addr, "/v1/chat/completions", &with_system);
    assert_eq!(default["usage"], empty["usage"]);
    assert_eq!(
        default["choices"][0]["message"],
        empty["choices"][0]["message"]
    );
}

fn pixels(b64: &str) -> Vec<u8> {
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    janus_pipeline::decode_image(&png, "response")
        .unwrap()
        .pixels
}

#[test]
fn argmax_images_are_the_reference_images_whole_and_streamed() {
    let addr = shared();
    let g = Golden::load();
    let n = g.int("image_generation.parallel_size");
    let prompt = g.at("prompts.pro.image_generation.messages")[0]["content"].clone();
    let size = g.int("image_generation.img_size");
    let body = json!({
        "prompt": prompt,
        "n": n,
        "size": format!("{size}x{size}"),
        "cfg_weight": g.at("image_generation.cfg_weight"),
        "temperature": 0,
        "response_format": "b64_json",
    });
    let (status, whole) = post(addr, "/v1/images/generations", &body);
    assert_eq!(status, 200, "{whole}");
    let images: Vec<Vec<u8>> = whole["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| pixels(d["b64_json"].as_str().unwrap()))
        .collect();
    assert_eq!(images.len() as i64, n);
    g.assert_pixels("gen.argmax.img_u8", &images.concat());
    // Another square size is the same image resized (clients such as Open
    // WebUI ask for 512x512); a non-square one is refused.
    let side = size as usize * 3 / 2;
    let mut other = body.clone();
    other["size"] = json!(format!("{side}x{side}"));
    let (status, bigger) = post(addr, "/v1/images/generations", &other);
    assert_eq!(status, 200, "{bigger}");
    assert_eq!(bigger["size"], format!("{side}x{side}"));
    let s0 = size as usize;
    for (d, native) in bigger["data"].as_array().unwrap().iter().zip(&images) {
        let want = janus_pipeline::resize_bicubic(native, s0, s0, 3, side, side);
        assert_eq!(pixels(d["b64_json"].as_str().unwrap()), want);
    }
    // Usage: the prompt's tokens in, every image's codes out.
    let steps = g.int("image_generation.image_token_num_per_image") as usize;
    let prompt_tokens = g
        .at("prompts.pro.image_generation.input_ids")
        .as_array()
        .unwrap()
        .len();
    let usage = |images: usize| {
        let out = images * steps;
        json!({"input_tokens": prompt_tokens, "output_tokens": out, "total_tokens": prompt_tokens + out})
    };
    assert_eq!(whole["usage"], usage(n as usize), "{whole}");

    let mut streamed = body;
    streamed["stream"] = json!(true);
    streamed["partial_images"] = json!(2);
    // OpenAI's event types only, unless progress events are asked for.
    let plain = events(addr, "/v1/images/generations", &streamed);
    assert!(
        plain
            .iter()
            .all(|(name, _)| name != "image_generation.progress"),
        "{plain:?}"
    );
    streamed["progress"] = json!(true);
    let ev = events(addr, "/v1/images/generations", &streamed);
    let mut progress = Vec::new();
    let mut partials = vec![0; n as usize];
    let mut done = vec![Vec::new(); n as usize];
    for (name, data) in &ev {
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], *name);
        match name.as_str() {
            "image_generation.progress" => progress.push(v["step"].as_u64().unwrap() as usize),
            "image_generation.partial_image" => {
                let i = v["image_index"].as_u64().unwrap() as usize;
                assert_eq!(v["partial_image_index"], partials[i]);
                assert_eq!(
                    pixels(v["b64_json"].as_str().unwrap()).len(),
                    images[i].len()
                );
                partials[i] += 1;
            }
            "image_generation.completed" => {
                let i = v["image_index"].as_u64().unwrap() as usize;
                done[i] = pixels(v["b64_json"].as_str().unwrap());
                assert_eq!(v["usage"], usage(1), "{data}");
            }
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert_eq!(progress, (1..=steps).collect::<Vec<_>>());
    assert_eq!(partials, vec![2; n as usize]);
    assert_eq!(done, images, "streamed images equal the whole response's");
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let addr = shared();
    let chat = "/v1/chat/completions";
    let images = "/v1/images/generations";
    let user = |content: Value| json!({"messages": [{"role": "user", "content": content}]});
    let with_url = |url: &str| {
        user(json!([text_part("what is this?"), {"type": "image_url", "image_url": {"url": url}}]))
    };
    let cases: Vec<(&str, &str, String, u16, Option<&str>)> = vec![
        ("invalid JSON", chat, "{\"messages\": [".into(), 400, None),
        ("not an object", chat, "[1, 2]".into(), 400, None),
        (
            "messages of the wrong type",
            chat,
            json!({"messages": "hi"}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "max_tokens of the wrong type",
            chat,
            json!({"messages": [], "max_tokens": "ten"}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "no messages",
            chat,
            json!({"messages": []}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "messages missing",
            chat,
            json!({"max_tokens": 2}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "prompt missing",
            images,
            json!({"n": 1}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "a message's role missing",
            chat,
            json!({"messages": [{"content": "hi"}]}).to_string(),
            400,
            Some("messages[0].role"),
        ),
        (
            "a remote image URL",
            chat,
            with_url("https://example.com/cat.png").to_string(),
            400,
            Some("messages[0].content[1].image_url"),
        ),
        (
            "bad base64",
            chat,
            with_url("data:image/png;base64,!!!notbase64").to_string(),
            400,
            Some("messages[0].content[1].image_url"),
        ),
        (
            "non-image bytes",
            chat,
            with_url("data:image/png;base64,aGVsbG8gd29ybGQ=").to_string(),
            400,
            Some("messages[0].content[1].image_url"),
        ),
        (
            "an unknown part type",
            chat,
            user(json!([{"type": "audio"}])).to_string(),
            400,
            Some("messages[0].content[0].type"),
        ),
        (
            "an unknown role",
            chat,
            json!({"messages": [{"role": "tool", "content": "x"}]}).to_string(),
            400,
            Some("messages[0].role"),
        ),
        (
            "n > 1 for chat",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}).to_string(),
            400,
            Some("n"),
        ),
        (
            "max_tokens over the limit",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1_000_000})
                .to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "a negative temperature",
            chat,
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}).to_string(),
            400,
            Some("temperature"),
        ),
        (
            "an unsupported size",
            images,
            json!({"prompt": "a cat", "size": "1792x1024"}).to_string(),
            400,
            Some("size"),
        ),
        (
            "n too large",
            images,
            json!({"prompt": "a cat", "n": 1000}).to_string(),
            400,
            Some("n"),
        ),
        (
            "url response format",
            images,
            json!({"prompt": "a cat", "response_format": "url"}).to_string(),
            400,
            Some("response_format"),
        ),
        ("no prompt", images, json!({"n": 1}).to_string(), 400, None),
        (
            "too many partial images",
            images,
            json!({"prompt": "a cat", "stream": true, "partial_images": 9}).to_string(),
            400,
            Some("partial_images"),
        ),
    ];
    for (what, path, body, status, param) in cases {
        let (got, v) = call(addr, "POST", path, Some(&body), None);
        assert_eq!(got, status, "{what}: {v}");
        let e = &v["error"];
        assert!(
            e["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        assert_eq!(e["type"], "invalid_request_error", "{what}: {v}");
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{what}: {v}");
        }
    }
    // An image prompt that, with the image's tokens, runs past the
    // checkpoint's context (one word per position is at least that many
    // tokens).
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata_dir().join("config.json")).unwrap())
            .unwrap();
    let context = config["language_config"]["max_position_embeddings"]
        .as_u64()
        .unwrap() as usize;
    let (s, v) = post(addr, images, &json!({"prompt": "abc ".repeat(context)}));
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        (&v["error"]["param"], &v["error"]["code"]),
        (&json!("prompt"), &json!("context_length_exceeded")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("over the model's context")),
        "{v}"
    );
    // Prompts far past the context are refused before they are tokenized
    // (8 MB of text took ~2 GB in the tokenizer; a few at once killed the
    // server), for chats and images alike.
    let huge = "hello world foo bar ".repeat(400_000);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": huge}]}),
        ),
        (images, json!({"prompt": huge})),
    ] {
        let (s, v) = post(addr, path, &body);
        refused_before_tokenizing(s, &v);
    }
    // Many empty messages: each takes at least its role's token, so they are
    // refused before tokenizing too; whitespace the template trims does not
    // count against the prompt.
    let empties: Vec<Value> = (0..context + 10)
        .map(|_| json!({"role": "user", "content": ""}))
        .collect();
    let (s, v) = post(addr, "/v1/chat/completions", &json!({"messages": empties}));
    refused_before_tokenizing(s, &v);
    let padded = format!("hi{}", " ".repeat(40 * context));
    let body = json!({"messages": [{"role": "user", "content": padded}], "max_tokens": 1});
    let (s, v) = post(addr, "/v1/chat/completions", &body);
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(
        addr,
        images,
        &json!({"prompt": format!("a cat{}", " ".repeat(40 * context)), "n": 1}),
    );
    assert_eq!(s, 200, "{}", &v.to_string()[..200.min(v.to_string().len())]);
    // The same code for a chat past the context, naming `messages` as
    // OpenAI does.
    let long = json!({"messages": [{"role": "user", "content": "abc ".repeat(context)}]});
    let (s, v) = post(addr, "/v1/chat/completions", &long);
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!(v["error"]["param"], "messages", "{v}");
    // The prompt's length is checked before its images are decoded: with a
    // part that is not an image, a prompt past the context still gets the
    // context error (the image's error came first, after decoding).
    let not_image =
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}});
    let long = json!({"messages": [{"role": "user", "content": [not_image, text_part(&"abc ".repeat(context))]}]});
    let (s, v) = post(addr, "/v1/chat/completions", &long);
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("context_length_exceeded")),
        "{v}"
    );
    let short = json!({"messages": [{"role": "user", "content": [not_image, text_part("hi")]}]});
    let (s, v) = post(addr, "/v1/chat/completions", &short);
    assert_eq!(
        (s, &v["error"]["code"]),
        (400, &json!("invalid_image")),
        "{v}"
    );
    // A client's long string is quoted shortly in the error.
    let role = "r".repeat(100_000);
    let (s, v) = post(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": role, "content": "hi"}]}),
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().len() < 300, "{v}");
    // Errors name the budget field the client sent.
    for field in ["max_completion_tokens", "max_tokens"] {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        body[field] = json!(0);
        let (s, v) = post(addr, "/v1/chat/completions", &body);
        assert_eq!((s, &v["error"]["param"]), (400, &json!(field)), "{v}");
    }
    // A top_p under f32's range is the most likely token, not an error.
    let tiny_p = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
        "temperature": 1, "top_p": 1e-300});
    let (s, v) = post(addr, "/v1/chat/completions", &tiny_p);
    assert_eq!(s, 200, "{v}");
    // `;BASE64` as well as `;base64` (the data URL scheme is case-insensitive).
    let upper = data_url(
        &testdata_dir().join("images").join(
            Golden::load().at("vq.input_images")[0]
                .as_str()
                .unwrap()
                .to_string()
                + ".png",
        ),
    )
    .replacen(";base64,", ";BASE64,", 1);
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": upper}}, text_part("hi")]}], "max_tokens": 1});
    let (s, v) = post(addr, "/v1/chat/completions", &body);
    assert_eq!(s, 200, "{v}");
    // What the server cannot give is refused, not silently left out.
    for (field, value) in [
        ("logprobs", json!(true)),
        ("top_logprobs", json!(2)),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("response_format", json!({"type": "json_object"})),
        ("modalities", json!(["text", "audio"])),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
    ] {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        body[field] = value;
        let (s, v) = post(addr, "/v1/chat/completions", &body);
        assert_eq!(s, 400, "{field}: {v}");
        assert_eq!(
            (&v["error"]["param"], &v["error"]["code"]),
            (&json!(field), &json!("unsupported_parameter")),
            "{v}"
        );
    }
    for (field, value) in [
        ("functions", json!([{"name": "f"}])),
        ("tool_choice", json!("required")),
        ("function_call", json!({"name": "f"})),
        ("logit_bias", json!({"42": 100})),
        ("frequency_penalty", json!(2.5)),
        ("presence_penalty", json!(-3)),
        ("stream_options", json!({"include_usage": true})),
    ] {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        body[field] = value;
        let (s, v) = post(addr, "/v1/chat/completions", &body);
        assert_eq!((s, &v["error"]["param"]), (400, &json!(field)), "{v}");
    }
    // Their neutral values are accepted (clients send them).
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
        "logprobs": false, "top_logprobs": 0, "tools": [], "response_format": {"type": "text"},
        "tool_choice": "none", "functions": [], "function_call": "auto", "logit_bias": {},
        "modalities": ["text"], "audio": null, "frequency_penalty": 0, "presence_penalty": 0});
    let (s, v) = post(addr, "/v1/chat/completions", &body);
    assert_eq!(s, 200, "{v}");
    // Tools the client forbids calling ask for a text answer only.
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none",
        "functions": [{"name": "f"}], "function_call": "none"});
    let (s, v) = post(addr, "/v1/chat/completions", &body);
    assert_eq!(s, 200, "{v}");
    // `stop` of the wrong type says what it takes.
    let bad_stop = json!({"messages": [{"role": "user", "content": "hi"}], "stop": 5});
    let (s, v) = post(addr, "/v1/chat/completions", &bad_stop);
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("a string or a list of strings")),
        "{v}"
    );
    // A compressed body: 415 naming the encoding, not "not valid JSON".
    let gz = agent()
        .post(&format!("http://{addr}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .set("Content-Encoding", "gzip")
        .send_bytes(&[0x1f, 0x8b, 8, 0]);
    let Err(ureq::Error::Status(415, resp)) = gz else {
        panic!("expected 415, got {gz:?}");
    };
    let v: Value = resp.into_json().unwrap();
    assert_eq!(v["error"]["code"], "unsupported_encoding", "{v}");
    // An empty Content-Encoding is no encoding.
    let plain = agent()
        .post(&format!("http://{addr}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .set("Content-Encoding", "")
        .send_string(
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).to_string(),
        );
    assert_eq!(plain.map(|r| r.status()).ok(), Some(200));
    // OpenAI's type for an unknown route.
    let (s, v) = call(addr, "GET", "/v1/nothing", None, None);
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (404, Some("invalid_request_error"))
    );
    // Images this server cannot give are refused, not answered with an
    // opaque PNG; hints with nothing to tune pass.
    for (field, value) in [("background", "transparent"), ("output_format", "webp")] {
        let body = json!({"prompt": "a cat", field: value});
        let (s, v) = post(addr, "/v1/images/generations", &body);
        assert_eq!(
            (s, &v["error"]["code"], &v["error"]["param"]),
            (400, &json!("unsupported_parameter"), &json!(field)),
            "{v}"
        );
    }
    let hinted = json!({"prompt": "a cat", "background": "opaque", "output_format": "png",
                        "quality": "hd", "style": "vivid", "moderation": "low"});
    let (s, v) = post(addr, "/v1/images/generations", &hinted);
    assert_eq!(s, 200, "{}", &v.to_string()[..200.min(v.to_string().len())]);
    let (s, _) = call(addr, "GET", chat, None, None);
    assert_eq!(s, 405);
    // Still serving.
    let (s, v) = post(
        addr,
        chat,
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    );
    assert_eq!(s, 200, "{v}");
}

/// A 400 `context_length_exceeded` from the bound checked before a prompt is
/// tokenized ("takes at least N tokens").
fn refused_before_tokenizing(status: u16, v: &Value) {
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("context_length_exceeded")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("at least")),
        "{v}"
    );
}

/// The status line the server answers the raw `request` with (nothing more
/// is sent: a client waiting for `100 Continue` reads this first).
fn raw_status(addr: SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head).to_string()
}

/// `(status, access-control-allow-origin)` of a request with an `Origin`.
fn cors(addr: SocketAddr, method: &str, path: &str) -> (u16, Option<String>) {
    let resp = agent()
        .request(method, &format!("http://{addr}{path}"))
        .set("Origin", "http://app.example")
        .call();
    let resp = match resp {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    let origin = resp
        .header("access-control-allow-origin")
        .map(str::to_string);
    (resp.status(), origin)
}

#[test]
fn limits_the_api_key_and_cors() {
    let running = start(ServerConfig {
        api_key: Some("sesame".into()),
        cors_origin: Some("http://app.example".into()),
        limits: Limits {
            max_body_bytes: 2_000_000,
            max_images: 1,
            // Room for no image at all: generation is refused, not attempted.
            max_memory: Some(1000),
            ..Limits::default()
        },
        ..ServerConfig::default()
    });
    let addr = running.addr;
    let origin = Some("http://app.example".to_string());
    assert_eq!(
        cors(addr, "OPTIONS", "/v1/chat/completions"),
        (204, origin.clone())
    );
    // A preflight gets the headers it asks for (the OpenAI SDKs add their
    // own `x-stainless-*` ones).
    let asked = "authorization, content-type, x-stainless-os, x-stainless-lang";
    let resp = agent()
        .request("OPTIONS", &format!("http://{addr}/v1/chat/completions"))
        .set("Origin", "http://app.example")
        .set("Access-Control-Request-Method", "POST")
        .set("Access-Control-Request-Headers", asked)
        .call()
        .unwrap();
    assert_eq!(resp.header("access-control-allow-headers"), Some(asked));
    assert_eq!(
        resp.header("vary"),
        Some("origin, access-control-request-headers")
    );
    assert_eq!(cors(addr, "GET", "/health"), (200, origin));
    assert_eq!(
        cors(shared(), "GET", "/health"),
        (200, None),
        "no CORS unless asked"
    );
    let (s, v) = call(
        addr,
        "POST",
        "/v1/images/generations",
        Some(&json!({"prompt": "a cat"}).to_string()),
        Some("sesame"),
    );
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "out_of_memory");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(" MB beyond the weights") && message.contains("but 1 KB is available"),
        "{v}"
    );
    // Streamed, the refusal is the response's status too, not a 200 stream
    // holding one error event.
    let (s, v) = call(
        addr,
        "POST",
        "/v1/images/generations",
        Some(&json!({"prompt": "a cat", "stream": true}).to_string()),
        Some("sesame"),
    );
    assert_eq!(
        (s, &v["error"]["code"]),
        (503, &json!("out_of_memory")),
        "{v}"
    );
    // A request that can never fit is not told to come back in a second.
    match agent()
        .post(&format!("http://{addr}/v1/images/generations"))
        .set("Authorization", "Bearer sesame")
        .send_string(&json!({"prompt": "a cat"}).to_string())
    {
        Err(ureq::Error::Status(503, resp)) => {
            assert_eq!(resp.header("retry-after"), None);
            // The OpenAI SDKs retry a 503 unless told not to.
            assert_eq!(resp.header("x-should-retry"), Some("false"));
        }
        other => panic!("{other:?}"),
    }
    let hi = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string();
    for key in [None, Some("wrong")] {
        let (s, v) = call(addr, "POST", "/v1/chat/completions", Some(&hi), key);
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (401, Some("authentication_error"))
        );
        assert_eq!(call(addr, "GET", "/v1/models", None, key).0, 401);
    }
    assert_eq!(
        call(addr, "GET", "/health", None, None).0,
        200,
        "health needs no key"
    );
    // The scheme's case does not matter (RFC 9110).
    let lower = agent()
        .get(&format!("http://{addr}/v1/models"))
        .set("Authorization", "bearer sesame")
        .call()
        .unwrap();
    assert_eq!(lower.status(), 200);
    assert_eq!(
        call(
            addr,
            "POST",
            "/v1/chat/completions",
            Some(&hi),
            Some("sesame")
        )
        .0,
        200
    );
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(2_100_000)}]}).to_string();
    let (s, v) = call(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&big),
        Some("sesame"),
    );
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("2000000"),
        "{v}"
    );
    // A client waiting for `100 Continue` before sending a body declared over
    // the limit gets the 413 instead, without sending it; not on a route
    // that does not exist (its 404).
    let request = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sesame\r\n\
             Content-Type: application/json\r\nContent-Length: 2000001\r\n\
             Expect: 100-continue\r\n\r\n"
        )
    };
    let status = raw_status(addr, &request("/v1/chat/completions"));
    assert_eq!(status, "HTTP/1.1 413");
    assert_eq!(raw_status(addr, &request("/v1/nothing")), "HTTP/1.1 404");
    let two = json!({"messages": [{"role": "user", "content": [
        image_part("equation.png"), image_part("equation.png"), text_part("same?")]}]})
    .to_string();
    let (s, v) = call(
        addr,
        "POST",
        "/v1/chat/completions",
        Some(&two),
        Some("sesame"),
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1"),
        "{v}"
    );
}

/// What `body` gives on `path`: the text of a chat, the pixels of images.
fn result_of(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let (s, v) = post(addr, path, body);
    assert_eq!(s, 200, "{v}");
    if path.contains("chat") {
        v["choices"][0]["message"]["content"].clone()
    } else {
        let px: Vec<Value> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| json!(pixels(d["b64_json"].as_str().unwrap())))
            .collect();
        json!(px)
    }
}

#[test]
fn eight_clients_at_once_get_what_they_get_one_at_a_time() {
    let running = start(ServerConfig::default());
    let addr = running.addr;
    let g = Golden::load();
    let chat = "/v1/chat/completions";
    let images = "/v1/images/generations";
    let requests: Vec<(&str, Value)> = vec![
        (
            chat,
            json!({"messages": golden_messages(&g, "und_one_image"), "max_tokens": 24}),
        ),
        (images, json!({"prompt": "a red apple", "n": 2, "seed": 1})),
        (
            chat,
            json!({"messages": golden_messages(&g, "text_only"), "max_tokens": 40, "temperature": 0.8, "seed": 3}),
        ),
        (
            images,
            json!({"prompt": "a lighthouse at dusk with waves crashing on rocks", "seed": 2, "cfg_weight": 3}),
        ),
        (
            chat,
            json!({"messages": golden_messages(&g, "und_two_images"), "max_tokens": 24}),
        ),
        (images, json!({"prompt": "a cat", "temperature": 0})),
        (
            chat,
            json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 64}),
        ),
        (
            images,
            json!({"prompt": "an oil painting of a ship", "n": 3, "seed": 9, "temperature": 0.7}),
        ),
    ];
    let alone: Vec<Value> = requests
        .iter()
        .map(|(p, b)| result_of(addr, p, b))
        .collect();
    let together: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .iter()
            .map(|(p, b)| s.spawn(move || result_of(addr, p, b)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert!(
            a == t,
            "request {i} ({}) differs when run with the others",
            requests[i].0
        );
    }
}

/// Polls `/metrics` until the queue is empty (fails after a minute).
#[test]
fn a_request_the_worker_panics_on_gets_500_and_the_server_goes_on() {
    // A tokenizer with ids past the model's 512 embedding rows: loading
    // refuses it, so the model is assembled from parts, and a prompt holding
    // such a token panics in the worker's embedding lookup.
    let dir = tiny_copy("server-panic");
    let extra = add_special_tokens(&dir, 20);
    let running = start_with(ServerConfig::default(), move || {
        let config = janus_pipeline::JanusConfig::from_file(dir.join("config.json"))
            .map_err(|e| e.to_string())?;
        let processor = janus_pipeline::Processor::from_dir(&dir, "tiny", &config.vision, None)
            .map_err(|e| e.to_string())?;
        let model =
            janus_pipeline::JanusModel::load_dir(testdata_dir(), &Default::default(), DType::F32)
                .map_err(|e| e.to_string())?;
        Ok(Janus::from_parts(model, processor, dir))
    });
    let addr = running.addr;
    let chat = |text: &str| {
        json!({"model": "janus-tiny", "max_tokens": 3,
               "messages": [{"role": "user", "content": text}]})
    };
    for (path, body) in [
        ("/v1/chat/completions", chat(&format!("say {}", extra[19]))),
        (
            "/v1/images/generations",
            json!({"prompt": format!("a {}", extra[19])}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "janus-tiny", "stream": true, "max_tokens": 3,
                   "messages": [{"role": "user", "content": extra[19]}]}),
        ),
    ] {
        let (status, err) = post(addr, path, &body);
        assert_eq!(status, 500, "{path}: {err}");
        assert_eq!(err["error"]["code"], "internal_error", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("model worker failed"),
            "{err}"
        );
    }
    // The worker goes on: the next requests are answered, and it is counted.
    let (status, ok) = post(addr, "/v1/chat/completions", &chat("Hello"));
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["usage"]["completion_tokens"], 3, "{ok}");
    let (status, health) = call(addr, "GET", "/health", None, None);
    assert_eq!(status, 200, "{health}");
    let (_, metrics) = call(addr, "GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("janus_worker_failures_total 3"),
        "{metrics}"
    );
}

fn wait_for_empty_queue(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = call(addr, "GET", "/metrics", None, None);
        if m.as_str().unwrap().contains("janus_queue_depth 0\n") {
            return;
        }
        assert!(Instant::now() < deadline, "the queue never emptied: {m}");
        std::thread::yield_now();
    }
}

/// A streamed chat of 4096 tokens, after its first chunk.
fn long_stream(addr: SocketAddr) -> BufReader<Box<dyn Read + Send + Sync + 'static>> {
    let body = json!({"messages": [{"role": "user", "content": "Talk."}], "max_tokens": 4096, "stream": true});
    let resp = agent()
        .post(&format!("http://{addr}/v1/chat/completions"))
        .send_string(&body.to_string())
        .unwrap();
    let mut reader = BufReader::new(resp.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    reader
}

#[test]
fn a_full_queue_answers_429_and_a_client_that_leaves_frees_its_place() {
    let running = start(ServerConfig {
        max_queue: 1,
        ..ServerConfig::default()
    });
    let addr = running.addr;
    // A long answer, streamed; read its first chunk, then go away.
    let reader = long_stream(addr);
    let full = agent()
        .post(&format!("http://{addr}/v1/images/generations"))
        .send_json(json!({"prompt": "a cat"}));
    let Err(ureq::Error::Status(429, resp)) = full else {
        panic!("expected 429, got {full:?}");
    };
    assert_eq!(resp.header("retry-after"), Some("1"));
    let v: Value = resp.into_json().unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // The queue place comes before the prompt is checked and the images are
    // decoded: a full queue answers at once, without decoding (this image
    // would have been a 400 after its decoding).
    let not_image =
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}});
    let body = json!({"messages": [{"role": "user", "content": [not_image, text_part("hi")]}]});
    let (s, v) = post(addr, "/v1/chat/completions", &body);
    assert_eq!((s, &v["error"]["code"]), (429, &json!("queue_full")), "{v}");
    // A client waiting for `100 Continue` gets the 429 before sending its body.
    let status = raw_status(
        addr,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 429");
    drop(reader);
    wait_for_empty_queue(addr);
    let (s, v) = post(addr, "/v1/images/generations", &json!({"prompt": "a cat"}));
    assert_eq!(s, 200, "{v}");
}

#[test]
fn shutdown_cancels_running_work_and_stops_accepting() {
    let mut running = start(ServerConfig::default());
    let addr = running.addr;
    let reader = long_stream(addr);
    // A client sending its body slowly (it has sent part of it) does not
    // hold the exit for the idle limit (30 s): the server is gone within its
    // grace period.
    // `Expect: 100-continue`: the interim answer comes once the server reads
    // the body.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0u8; 25];
    slow.read_exact(&mut interim).unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    slow.write_all(b"{\"mess").unwrap();
    let stopping = std::time::Instant::now();
    running.shutdown.trigger();
    let result = running.thread.take().unwrap().join().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "stopped after {:?}",
        stopping.elapsed()
    );
    // The stream ended with an error event, well before its 4096 tokens.
    let rest = read_events(reader);
    let (_, last) = rest.last().expect("the stream ends with an event");
    assert!(last.contains("shutting down"), "{last}");
    assert!(rest.len() < 4000, "{} events", rest.len());
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "still accepting after shutdown"
    );
}

/// Reads from `stream` until the peer closes it or `within` passes; returns
/// what arrived and whether it was closed.
fn read_until_closed(stream: &mut std::net::TcpStream, within: Duration) -> (String, bool) {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let closed = match stream.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    };
    (String::from_utf8_lossy(&got).to_string(), closed)
}

#[test]
fn slow_and_idle_clients_are_cut_off_and_connections_are_capped() {
    use std::io::Write;
    use std::net::TcpStream;
    let running = start(ServerConfig {
        idle_timeout: Duration::from_secs(1),
        max_connections: 2,
        ..ServerConfig::default()
    });
    let addr = running.addr;
    // A body that stops arriving: the request fails, naming the wait.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{",
    )
    .unwrap();
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(20));
    assert!(closed, "still open: {answer}");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("no request body data for 1 s"),
        "{answer}"
    );
    // Headers that never end, on every connection the server takes: each is
    // closed after the deadline, and a real client is served after them.
    let mut hung: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect();
    let t = Instant::now();
    assert_eq!(call(addr, "GET", "/health", None, None).0, 200);
    assert!(t.elapsed() < Duration::from_secs(20));
    for c in &mut hung {
        let (_, closed) = read_until_closed(c, Duration::from_secs(20));
        assert!(closed, "a connection with unfinished headers stayed open");
    }
    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(20));
    assert!(closed && answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn one_address_cannot_take_every_connection_nor_hold_one_by_not_reading() {
    use std::io::Write;
    use std::net::TcpStream;
    let running = start(ServerConfig {
        idle_timeout: Duration::from_secs(1),
        max_connections_per_address: 2,
        ..ServerConfig::default()
    });
    let addr = running.addr;
    // A client that sends many requests and reads none of the answers: once
    // the socket buffers are full, the server gives up after the idle time.
    let mut greedy = TcpStream::connect(addr).unwrap();
    let page = call(addr, "GET", "/", None, None).1.as_str().unwrap().len();
    let requests = 64 * 1024 * 1024 / page + 1;
    let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut sent = 0;
    greedy
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while sent < requests && greedy.write_all(one).is_ok() {
        sent += 1;
    }
    let t = Instant::now();
    // Read nothing for a while (more than the idle time), then everything.
    std::thread::sleep(Duration::from_secs(3));
    let (answers, closed) = read_until_closed(&mut greedy, Duration::from_secs(30));
    assert!(closed, "a client that did not read kept its connection");
    assert!(
        answers.len() < requests * page,
        "all {requests} answers were written ({} bytes)",
        answers.len()
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    // Two connections held by one address: a third from it is closed at once.
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut third = TcpStream::connect(addr).unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok();
    let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(20));
    assert!(closed && answer.is_empty(), "{answer}");
    drop(held);
    // Once they are gone, the address is served again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = agent().get(&format!("http://{addr}/health")).call().is_ok();
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the address stayed locked out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn long_stop_strings_are_refused() {
    let long = "v".repeat(257);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stop": [long]});
    let (s, v) = post(shared(), "/v1/chat/completions", &body);
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["param"], "stop", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 256"),
        "{v}"
    );
}

#[test]
fn two_servers_started_together_give_different_response_ids() {
    // Replicas behind one balancer: ids counted from the start second alone
    // were the same.
    let (a, b) = (
        start(ServerConfig::default()),
        start(ServerConfig::default()),
    );
    let hi = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    let (_, first) = post(a.addr, "/v1/chat/completions", &hi);
    let (_, second) = post(b.addr, "/v1/chat/completions", &hi);
    let ids = [first["id"].as_str(), second["id"].as_str()];
    assert!(
        ids.iter()
            .all(|i| i.is_some_and(|i| i.starts_with("chatcmpl-"))),
        "{ids:?}"
    );
    assert_ne!(ids[0], ids[1]);
}
