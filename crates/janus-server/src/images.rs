//! `POST /v1/images/generations`: PNGs as `b64_json`, whole or streamed as
//! OpenAI's image events (`image_generation.partial_image`,
//! `image_generation.completed`) plus `image_generation.progress` per step.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::stream;
use janus_pipeline::{ImageGenConfig, ImageJob, RgbImage};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use crate::Shutdown;
use crate::error::{ApiError, excerpt};
use crate::http::{
    FIRST_EVENT_WAIT, LIGHT_PIXELS, LIGHT_TEXT_BYTES, Weight, json_body, keep_alive, off_async,
    respond,
};
use crate::openai::{ImagesRequest, in_range};
use crate::state::{AppState, Slot, random_u64, unix_now, worker_gone};
use crate::worker::{ImageEvent, ImageWork, Work};

const ENDPOINT: &str = "images";

/// The handler.
pub async fn generations(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&app, ENDPOINT, start(app.clone(), body).await)
}

struct Running {
    events: UnboundedReceiver<ImageEvent>,
    /// An event received before the stream started, sent first.
    first: Option<ImageEvent>,
    n: usize,
    created: u64,
    size: String,
    /// The side of the images sent.
    side: usize,
    prompt_tokens: usize,
    /// Codes generated per image.
    steps: usize,
    /// Whether `image_generation.progress` events are sent.
    progress: bool,
    shutdown: Shutdown,
    slot: Slot,
}

async fn start(
    app: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ImagesRequest = json_body(body, &app.config.limits)?;
    req.unsupported()?;
    let limits = &app.config.limits;
    let model = app.model()?;
    if req.prompt.trim().is_empty() {
        return Err(ApiError::invalid(
            Some("prompt".into()),
            "`prompt` is empty",
        ));
    }
    let n = req.n.unwrap_or(1);
    if n == 0 || n > limits.max_n as u64 {
        return Err(ApiError::invalid(
            Some("n".into()),
            format!("`n` must be in 1..={} (--max-n), got {n}", limits.max_n),
        )
        .code("limit_exceeded"));
    }
    // The model draws `image_size` squares; other square sizes (clients such
    // as Open WebUI ask for 512x512 by default) are the same image resized.
    let native = format!("{0}x{0}", model.image_size);
    let side = match req.size.as_deref() {
        None | Some("auto") => model.image_size,
        Some(size) => square_side(size, model.image_size).ok_or_else(|| {
            ApiError::invalid(
                Some("size".into()),
                format!(
                    "`size` {} is not supported: this model draws square images \
                     ({native}); give NxN with N from {MIN_SIDE} to {MAX_SIDE}, or auto",
                    excerpt(size)
                ),
            )
            .code("unsupported_size")
        })?,
    };
    let size = format!("{side}x{side}");
    match req.response_format.as_deref() {
        None | Some("b64_json") => {}
        Some("url") => {
            return Err(ApiError::invalid(
                Some("response_format".into()),
                "`response_format` url is not supported (the server stores nothing): use b64_json",
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid(
                Some("response_format".into()),
                format!("`response_format` must be b64_json, got {}", excerpt(other)),
            ));
        }
    }
    let stream = req.stream.unwrap_or(false);
    let partial_images = req.partial_images.unwrap_or(0);
    if partial_images > 3 {
        return Err(ApiError::invalid(
            Some("partial_images".into()),
            format!("`partial_images` must be in 0..=3, got {partial_images}"),
        ));
    }
    let config = ImageGenConfig {
        parallel: n as usize,
        cfg_weight: in_range(
            "cfg_weight",
            req.cfg_weight.unwrap_or(5.0),
            0.0,
            janus_pipeline::MAX_CFG_WEIGHT.into(),
        )? as f32,
        temperature: in_range("temperature", req.temperature.unwrap_or(1.0), 0.0, 2.0)? as f32,
        seed: req.seed.map_or_else(random_u64, |s| s as u64),
    };
    // The queue place first: a full queue is a 429 at once, and the requests
    // being prepared below are within --max-queue.
    let slot = app.admit()?;
    // Tokenizing a long prompt takes a while: off the async threads.
    let (checking, prompt) = (app.clone(), req.prompt);
    let weight = Weight::of(prompt.len() as u64, LIGHT_TEXT_BYTES);
    let prompt_ids = off_async(weight, &slot, move || {
        let model = checking.model()?;
        model
            .processor
            .generation_prompt_within(&prompt, model.image_steps, model.context)
            .map_err(|e| ApiError::from(e).on_context_param("prompt"))
    })
    .await?;
    let (tx, rx) = unbounded_channel();
    let prompt_tokens = prompt_ids.len();
    app.submit(Work::Image(ImageWork {
        job: ImageJob {
            tag: (),
            prompt_ids,
            config,
        },
        partial_images: if stream { partial_images as usize } else { 0 },
        events: tx,
    }))?;
    let mut running = Running {
        events: rx,
        first: None,
        n: n as usize,
        created: unix_now(),
        size,
        side,
        prompt_tokens,
        steps: model.image_steps,
        progress: req.progress.unwrap_or(false),
        shutdown: app.shutdown.clone(),
        slot,
    };
    if stream {
        // The stream (status 200) starts with the worker's first word, so a
        // request refused at once (no memory for even one image) gets its
        // status, as without streaming.
        // (at most FIRST_EVENT_WAIT: then it starts anyway, so keep-alives
        // flow, and a refusal is an error event)
        match tokio::time::timeout(FIRST_EVENT_WAIT, running.events.recv()).await {
            Ok(Some(ImageEvent::Failed(e))) => return Err(e),
            Ok(None) => return Err(worker_gone(&running.shutdown)),
            Ok(first) => running.first = first,
            Err(_) => {}
        }
        Ok(sse(running).into_response())
    } else {
        whole(running).await
    }
}

/// The smallest and largest side of the square images the server returns.
const MIN_SIDE: usize = 64;
const MAX_SIDE: usize = 2048;

/// `N` of a size `NxN` with `N` in `MIN_SIDE..=MAX_SIDE`.
fn square_side(size: &str, native: usize) -> Option<usize> {
    let (w, h) = size.split_once('x')?;
    let (w, h): (usize, usize) = (w.parse().ok()?, h.parse().ok()?);
    (w == h && (w == native || (MIN_SIDE..=MAX_SIDE).contains(&w))).then_some(w)
}

/// `picture` as base64 PNG, resized to the request's side where that is not
/// the model's (bicubic, as Pillow): off the async threads.
async fn b64_png(picture: RgbImage, side: usize, slot: &Slot) -> Result<String, ApiError> {
    let pixels = (side * side).max(picture.width * picture.height);
    let weight = Weight::of(pixels as u64, LIGHT_PIXELS);
    off_async(weight, slot, move || {
        let picture = if (side, side) == (picture.width, picture.height) {
            picture
        } else {
            RgbImage {
                width: side,
                height: side,
                pixels: janus_pipeline::resize_bicubic(
                    &picture.pixels,
                    picture.width,
                    picture.height,
                    3,
                    side,
                    side,
                ),
            }
        };
        let png = janus_pipeline::encode_png(&picture)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(png))
    })
    .await
}

async fn whole(mut r: Running) -> Result<Response, ApiError> {
    let mut images: Vec<Option<String>> = vec![None; r.n];
    let mut got = 0;
    while got < r.n {
        match r.events.recv().await {
            Some(ImageEvent::Image { image, picture }) => {
                if let Some(slot) = images.get_mut(image) {
                    *slot = Some(b64_png(picture, r.side, &r.slot).await?);
                    got += 1;
                }
            }
            Some(ImageEvent::Failed(e)) => return Err(e),
            Some(_) => {}
            None => return Err(worker_gone(&r.shutdown)),
        }
    }
    let data: Vec<Value> = images
        .into_iter()
        .map(|b| json!({"b64_json": b.unwrap_or_default()}))
        .collect();
    Ok(axum::Json(json!({
        "created": r.created,
        "data": data,
        "output_format": "png",
        "size": r.size,
        "usage": usage(r.prompt_tokens, r.n * r.steps),
    }))
    .into_response())
}

/// OpenAI's image usage: the prompt's tokens in, the image codes out.
fn usage(input: usize, output: usize) -> Value {
    json!({"input_tokens": input, "output_tokens": output, "total_tokens": input + output})
}

fn sse(
    r: Running,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let state = (r, VecDeque::<(String, Value)>::new(), 0usize, false);
    let events = stream::unfold(state, |(mut r, mut out, mut done, mut ended)| async move {
        loop {
            if let Some((name, data)) = out.pop_front() {
                let event = Event::default().event(name).data(data.to_string());
                return Some((Ok(event), (r, out, done, ended)));
            }
            if ended {
                return None;
            }
            let image_event = |kind: &str, r: &Running, image: usize, b64: String| {
                json!({
                    "type": kind,
                    "b64_json": b64,
                    "created_at": r.created,
                    "size": r.size,
                    "quality": "auto",
                    "background": "opaque",
                    "output_format": "png",
                    "image_index": image,
                })
            };
            let next = match r.first.take() {
                Some(first) => Some(first),
                None => r.events.recv().await,
            };
            match next {
                Some(ImageEvent::Queued | ImageEvent::Progress { .. }) if !r.progress => {}
                Some(ImageEvent::Queued) => {
                    let e = json!({"type": "image_generation.progress", "step": 0, "steps": 0, "queued": true});
                    out.push_back(("image_generation.progress".into(), e));
                }
                Some(ImageEvent::Progress { step, steps }) => {
                    let e =
                        json!({"type": "image_generation.progress", "step": step, "steps": steps});
                    out.push_back(("image_generation.progress".into(), e));
                }
                Some(ImageEvent::Partial {
                    image,
                    index,
                    picture,
                }) => match b64_png(picture, r.side, &r.slot).await {
                    Ok(b64) => {
                        let kind = "image_generation.partial_image";
                        let mut e = image_event(kind, &r, image, b64);
                        e["partial_image_index"] = json!(index);
                        out.push_back((kind.into(), e));
                    }
                    Err(e) => {
                        out.push_back(("error".into(), e.body()));
                        ended = true;
                    }
                },
                Some(ImageEvent::Image { image, picture }) => {
                    let b64 = match b64_png(picture, r.side, &r.slot).await {
                        Ok(b64) => b64,
                        Err(e) => {
                            out.push_back(("error".into(), e.body()));
                            ended = true;
                            continue;
                        }
                    };
                    let kind = "image_generation.completed";
                    let mut e = image_event(kind, &r, image, b64);
                    e["usage"] = usage(r.prompt_tokens, r.steps);
                    out.push_back((kind.into(), e));
                    done += 1;
                    ended = done == r.n;
                }
                Some(ImageEvent::Failed(e)) => {
                    out.push_back(("error".into(), e.body()));
                    ended = true;
                }
                None => {
                    out.push_back(("error".into(), worker_gone(&r.shutdown).body()));
                    ended = true;
                }
            }
        }
    });
    Sse::new(events).keep_alive(keep_alive())
}

#[cfg(test)]
mod tests {
    use super::square_side;

    #[test]
    fn the_native_size_is_taken_even_under_the_resize_range() {
        // Small models draw small squares: their own size is always taken.
        assert_eq!(square_side("32x32", 32), Some(32));
        assert_eq!(square_side("32x32", 384), None);
        assert_eq!(square_side("512x512", 384), Some(512));
        assert_eq!(square_side("4096x4096", 4096), Some(4096));
        assert_eq!(square_side("4096x4096", 384), None);
        assert_eq!(square_side("512x384", 384), None);
        assert_eq!(square_side("x", 384), None);
    }
}
