//! `POST /v1/chat/completions`, streamed (SSE chunks, then `[DONE]`) or whole.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use janus_pipeline::{FinishReason, Request, SamplingConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::Shutdown;
use crate::content::{Conversation, conversation, declared_pixels, decode_images};
use crate::error::ApiError;
use crate::http::{
    FIRST_EVENT_WAIT, LIGHT_DECODE_PIXELS, LIGHT_TEXT_BYTES, Weight, json_body, keep_alive,
    off_async, respond,
};
use crate::openai::{ChatRequest, in_range};
use crate::state::{AppState, Slot, random_u64, unix_now, worker_gone};
use crate::stop::StopFilter;
use crate::worker::{ChatEvent, ChatWork, Work};

/// The longest `stop` string accepted, in characters.
const MAX_STOP_CHARS: usize = 256;

const ENDPOINT: &str = "chat";

/// The handler.
pub async fn completions(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&app, ENDPOINT, start(app.clone(), body).await)
}

/// What a chat needs after it started in the worker.
struct Running {
    events: UnboundedReceiver<ChatEvent>,
    filter: StopFilter,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    tokens: usize,
    shutdown: Shutdown,
    _slot: Slot,
}

async fn start(
    app: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = json_body(body, &app.config.limits)?;
    let limits = app.config.limits.clone();
    req.unsupported()?;
    if let Some(n) = req.n
        && n != 1
    {
        return Err(ApiError::invalid(
            Some("n".into()),
            format!("`n` must be 1 (one choice per request), got {n}"),
        ));
    }
    // Errors name the field the client sent.
    let budget_field = if req.max_completion_tokens.is_some() {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let max_tokens = match req.max_completion_tokens.or(req.max_tokens) {
        Some(0) => {
            return Err(ApiError::invalid(
                Some(budget_field.into()),
                format!("`{budget_field}` must be at least 1"),
            ));
        }
        Some(n) if n > limits.max_tokens as u64 => {
            return Err(ApiError::invalid(
                Some(budget_field.into()),
                format!(
                    "`{budget_field}` is {n}, over this server's limit of {} (--max-tokens)",
                    limits.max_tokens
                ),
            )
            .code("limit_exceeded"));
        }
        Some(n) => n as usize,
        None => limits.max_tokens,
    };
    let sampling = SamplingConfig {
        temperature: in_range("temperature", req.temperature.unwrap_or(0.0), 0.0, 2.0)? as f32,
        top_p: match req.top_p {
            Some(p) if !(p > 0.0 && p <= 1.0) => {
                return Err(ApiError::invalid(
                    Some("top_p".into()),
                    format!("`top_p` must be in (0, 1], got {p}"),
                ));
            }
            // A positive p under f32's range keeps the most likely token.
            Some(p) => (p as f32).max(f32::MIN_POSITIVE),
            None => 1.0,
        },
        top_k: req.top_k.unwrap_or(0).min(u32::MAX as u64) as usize,
        // As OpenAI: without a seed, each request samples afresh.
        seed: req.seed.map_or_else(random_u64, |s| s as u64),
        frequency_penalty: penalty("frequency_penalty", req.frequency_penalty)?,
        presence_penalty: penalty("presence_penalty", req.presence_penalty)?,
    };
    let stops = req.stop.map(|s| s.strings()).unwrap_or_default();
    if stops.len() > 4 {
        return Err(ApiError::invalid(
            Some("stop".into()),
            format!("`stop` holds {} strings, at most 4", stops.len()),
        ));
    }
    // Each generated piece is matched against every stop string: long ones
    // would make a request cost their length times its tokens.
    if let Some(long) = stops.iter().find(|s| s.chars().count() > MAX_STOP_CHARS) {
        return Err(ApiError::invalid(
            Some("stop".into()),
            format!(
                "a `stop` string is {} characters long, at most {MAX_STOP_CHARS}",
                long.chars().count()
            ),
        ));
    }
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            Some("stream_options".into()),
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    let include_usage = req
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let model = app.model()?;
    let conv = conversation(
        req.messages,
        &model.processor.tokenizer().image_tag,
        &limits,
    )?;
    let Conversation {
        messages,
        images: urls,
        system_prompt,
    } = conv;
    // The queue place first: a full queue is a 429 at once, and the requests
    // being prepared below are within --max-queue.
    let slot = app.admit()?;
    // The whole prompt must fit before any image is decoded (tokenizing a
    // long one takes a while: off the async threads too).
    let (checking, image_count) = (app.clone(), urls.len());
    let text_bytes = messages.iter().map(|m| m.content.len()).sum::<usize>()
        + system_prompt.as_ref().map_or(0, String::len);
    let weight = Weight::of(text_bytes as u64, LIGHT_TEXT_BYTES);
    let (messages, system_prompt) = off_async(weight, &slot, move || {
        let model = checking.model()?;
        let system = system_prompt
            .as_deref()
            .unwrap_or(janus_pipeline::chat::SYSTEM_PROMPT);
        model
            .processor
            .understanding_len_within(&messages, image_count, system, model.context)
            .map_err(|e| ApiError::from(e).on_context_param("messages"))?;
        Ok((messages, system_prompt))
    })
    .await?;
    let fit = model.processor.image_processor().clone();
    // Image decoding can take a while: off the async threads, and a bounded
    // number of requests at a time (each holds one full-size image while it
    // decodes, up to --max-image-pixels: memory must not grow with the queue).
    let images = if urls.is_empty() {
        Vec::new()
    } else {
        // Small images (by what their headers declare, read off the async
        // threads) decode at once.
        let (urls, declared) = off_async(Weight::Light, &slot, move || {
            let pixels = declared_pixels(&urls);
            Ok((urls, pixels))
        })
        .await?;
        // (Unreadable headers: heavy.)
        let weight = Weight::of(declared.unwrap_or(u64::MAX), LIGHT_DECODE_PIXELS);
        off_async(weight, &slot, move || {
            decode_images(urls, &limits, Some(&fit))
        })
        .await?
    };
    let (tx, mut rx) = unbounded_channel();
    let request = Request {
        messages,
        images,
        sampling,
        max_new_tokens: max_tokens,
        system_prompt,
    };
    app.submit(Work::Chat(ChatWork {
        request,
        events: tx,
    }))?;
    // A refusal at the start is the response's status; a stream whose chat
    // has not started within FIRST_EVENT_WAIT (the worker busy with a long
    // prompt) starts anyway, so keep-alives flow (its prompt's length comes
    // with the start, a refusal as an error event).
    let first = if stream {
        tokio::time::timeout(FIRST_EVENT_WAIT, rx.recv()).await.ok()
    } else {
        Some(rx.recv().await)
    };
    let prompt_tokens = match first {
        Some(Some(ChatEvent::Started { prompt_tokens })) => prompt_tokens,
        Some(Some(ChatEvent::Failed(e))) => return Err(e),
        Some(_) => return Err(worker_gone(&app.shutdown)),
        None => 0,
    };
    let running = Running {
        events: rx,
        filter: StopFilter::new(stops),
        id: app.id("chatcmpl"),
        created: unix_now(),
        model: app.config.model_id.clone(),
        prompt_tokens,
        tokens: 0,
        shutdown: app.shutdown.clone(),
        _slot: slot,
    };
    if stream {
        Ok(sse(running, include_usage).into_response())
    } else {
        whole(running).await
    }
}

fn reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

async fn whole(mut r: Running) -> Result<Response, ApiError> {
    let mut text = String::new();
    let (finish, completion) = loop {
        match r.events.recv().await {
            Some(ChatEvent::Delta { text: t, token }) => {
                r.tokens += token as usize;
                let (out, stopped) = r.filter.push(&t);
                text.push_str(&out);
                if stopped {
                    break ("stop", r.tokens);
                }
            }
            Some(ChatEvent::Done {
                finish,
                completion_tokens,
            }) => {
                text.push_str(&r.filter.finish());
                break (reason(finish), completion_tokens);
            }
            Some(ChatEvent::Failed(e)) => return Err(e),
            Some(ChatEvent::Started { .. }) => {}
            None => return Err(worker_gone(&r.shutdown)),
        }
    };
    let body = json!({
        "id": r.id,
        "object": "chat.completion",
        "created": r.created,
        "model": r.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage(r.prompt_tokens, completion),
        "system_fingerprint": null,
    });
    Ok(axum::Json(body).into_response())
}

fn sse(
    r: Running,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let chunk = |r: &Running, delta: Value, finish: Option<&str>| {
        json!({
            "id": r.id,
            "object": "chat.completion.chunk",
            "created": r.created,
            "model": r.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut out = VecDeque::new();
    out.push_back(chunk(&r, json!({"role": "assistant", "content": ""}), None).to_string());
    let state = (r, out, false);
    let events = stream::unfold(state, move |(mut r, mut out, mut ended)| async move {
        loop {
            if let Some(data) = out.pop_front() {
                return Some((Ok(Event::default().data(data)), (r, out, ended)));
            }
            if ended {
                return None;
            }
            let end = |r: &Running, out: &mut VecDeque<String>, finish: &str, completion| {
                out.push_back(chunk(r, json!({}), Some(finish)).to_string());
                if include_usage {
                    let mut u = chunk(r, json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage(r.prompt_tokens, completion);
                    out.push_back(u.to_string());
                }
                out.push_back("[DONE]".to_string());
            };
            match r.events.recv().await {
                Some(ChatEvent::Delta { text, token }) => {
                    r.tokens += token as usize;
                    let (text, stopped) = r.filter.push(&text);
                    if !text.is_empty() {
                        out.push_back(chunk(&r, json!({"content": text}), None).to_string());
                    }
                    if stopped {
                        end(&r, &mut out, "stop", r.tokens);
                        ended = true;
                        // Dropping the receiver cancels the rest in the worker.
                        r.events.close();
                    }
                }
                Some(ChatEvent::Done {
                    finish,
                    completion_tokens,
                }) => {
                    let rest = r.filter.finish();
                    if !rest.is_empty() {
                        out.push_back(chunk(&r, json!({"content": rest}), None).to_string());
                    }
                    end(&r, &mut out, reason(finish), completion_tokens);
                    ended = true;
                }
                Some(ChatEvent::Failed(e)) => {
                    out.push_back(e.body().to_string());
                    ended = true;
                }
                Some(ChatEvent::Started { prompt_tokens }) => r.prompt_tokens = prompt_tokens,
                None => {
                    out.push_back(worker_gone(&r.shutdown).body().to_string());
                    ended = true;
                }
            }
        }
    });
    Sse::new(events).keep_alive(keep_alive())
}

/// A frequency or presence penalty: OpenAI's range, 0 when absent.
fn penalty(name: &str, value: Option<f64>) -> Result<f32, ApiError> {
    let max = janus_pipeline::MAX_PENALTY as f64;
    Ok(in_range(name, value.unwrap_or(0.0), -max, max)? as f32)
}
