//! The one thread that owns the model. Each turn of its loop admits new work,
//! gives every running chat one token and the image batch one step, so text
//! never waits behind a long image job, and image requests join the running
//! batch at the next step boundary.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvError};
use std::time::Instant;

use axum::http::StatusCode;
use burn::prelude::Backend;
use janus_pipeline::{ImageBatcher, ImageJob, Janus, Request, RgbImage, TextBatcher, TextEvent};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// What the HTTP side hands the worker.
pub enum Work {
    /// A chat completion.
    Chat(ChatWork),
    /// An image generation.
    Image(ImageWork),
    /// Stop: drop everything running (its clients see the stream end).
    Shutdown,
}

/// A chat completion request.
pub struct ChatWork {
    /// The request for the pipeline.
    pub request: Request,
    /// Where the answer goes; dropped by the client side on disconnect.
    pub events: UnboundedSender<ChatEvent>,
}

/// Progress of a chat completion.
#[derive(Debug)]
pub enum ChatEvent {
    /// The prompt ran.
    Started {
        /// Prompt tokens (image slots included).
        prompt_tokens: usize,
    },
    /// Text of the next token (`token`), or the held-back rest at the end.
    Delta {
        /// The text.
        text: String,
        /// Whether a token produced it.
        token: bool,
    },
    /// The end.
    Done {
        /// Why.
        finish: janus_pipeline::FinishReason,
        /// Tokens generated.
        completion_tokens: usize,
    },
    /// Failed before or while generating.
    Failed(ApiError),
}

/// An image generation request.
pub struct ImageWork {
    /// Tokenised prompt and settings.
    pub job: ImageJob<()>,
    /// Previews per image (0-3).
    pub partial_images: usize,
    /// Where the images go.
    pub events: UnboundedSender<ImageEvent>,
}

/// Progress of an image generation.
#[derive(Debug)]
pub enum ImageEvent {
    /// Waiting for room in the batch.
    Queued,
    /// `step` of `steps` codes done.
    Progress {
        /// Codes generated per image.
        step: usize,
        /// Codes per image.
        steps: usize,
    },
    /// A preview of image `image` (PNG-encoded by the HTTP side: the
    /// worker's thread runs the model for every request).
    Partial {
        /// Image index.
        image: usize,
        /// Preview index.
        index: usize,
        /// The pixels, at the model's size.
        picture: RgbImage,
    },
    /// Image `image` is done.
    Image {
        /// Image index.
        image: usize,
        /// The pixels, at the model's size.
        picture: RgbImage,
    },
    /// Failed.
    Failed(ApiError),
}

/// A conversation of the text batch, keyed by its tag.
struct ChatClient {
    id: u64,
    events: UnboundedSender<ChatEvent>,
}

/// A job of the image batch, keyed by its tag.
struct ImageClient {
    id: u64,
    events: UnboundedSender<ImageEvent>,
    partial_images: usize,
    images: usize,
    delivered: usize,
    previews: usize,
    prompt_len: usize,
}

/// The worker's loop; returns when told to shut down or when every sender is gone.
pub fn run<B: Backend>(
    janus: &Janus<B>,
    rx: &Receiver<Work>,
    metrics: Arc<Metrics>,
    limits: &crate::config::Limits,
) {
    let max_batch_images = limits.max_batch_images;
    let pad = janus.processor().tokenizer().ids.pad;
    let mut chats: Vec<ChatClient> = Vec::new();
    let mut text: TextBatcher<'_, B, u64> = TextBatcher::new(janus);
    // Image requests not yet in the batch: (work, id, told it waits).
    let mut waiting: VecDeque<(ImageWork, u64, bool)> = VecDeque::new();
    let mut clients: Vec<ImageClient> = Vec::new();
    let mut batch: ImageBatcher<'_, B, u64> = ImageBatcher::new(janus.model(), pad);
    let mut next_id = 0u64;
    loop {
        // Admit: block only when idle.
        let mut incoming = Vec::new();
        if text.is_empty() && batch.is_empty() && waiting.is_empty() {
            match rx.recv() {
                Ok(w) => incoming.push(w),
                Err(RecvError) => return,
            }
        }
        incoming.extend(rx.try_iter());
        for work in incoming {
            match work {
                Work::Shutdown => return,
                Work::Chat(w) => {
                    if w.events.is_closed() {
                        continue;
                    }
                    next_id += 1;
                    match text.join(next_id, &w.request) {
                        Ok(events) => {
                            chats.push(ChatClient {
                                id: next_id,
                                events: w.events,
                            });
                            send_text(&mut chats, events);
                        }
                        Err(e) => {
                            let _ = w.events.send(ChatEvent::Failed(e.into()));
                        }
                    }
                }
                Work::Image(w) => {
                    next_id += 1;
                    waiting.push_back((w, next_id, false));
                }
            }
        }
        let t0 = Instant::now();
        let mut tokens = 0u64;
        // One token per chat, all chats in one forward.
        let closed: Vec<u64> = chats
            .iter()
            .filter(|c| c.events.is_closed())
            .map(|c| c.id)
            .collect();
        if !closed.is_empty() {
            chats.retain(|c| !closed.contains(&c.id));
            if let Err(e) = text.cancel(|id| closed.contains(id)) {
                fail_chats(&mut chats, &mut text, e.into());
            }
        }
        if !text.is_empty() {
            match text.step() {
                Ok(events) => {
                    tokens += events
                        .iter()
                        .filter(|(_, e)| matches!(e, TextEvent::Delta(d) if d.token.is_some()))
                        .count() as u64;
                    send_text(&mut chats, events);
                }
                Err(e) => fail_chats(&mut chats, &mut text, e.into()),
            }
        }
        // Cancelled image clients leave the batch.
        let gone: Vec<u64> = clients
            .iter()
            .filter(|c| c.events.is_closed())
            .map(|c| c.id)
            .collect();
        if !gone.is_empty() {
            if let Err(e) = batch.cancel(|id| gone.contains(id)) {
                fail_all(&mut clients, &mut batch, e.into());
            }
            clients.retain(|c| !gone.contains(&c.id));
        }
        waiting.retain(|(w, _, _)| !w.events.is_closed());
        // Waiting image jobs join while the batch has room and memory allows.
        let mut joining = Vec::new();
        let mut running = batch.images().len();
        let mut longest = batch_prompt_len(&clients);
        while let Some((w, id, _)) = waiting.front() {
            let n = w.job.config.parallel;
            let len = longest.max(w.job.prompt_ids.len());
            let fits_rows = running + n <= max_batch_images.max(n);
            let memory = janus.check_generation_memory_within(len, running + n, limits.max_memory);
            if fits_rows && memory.is_ok() {
                longest = len;
                running += n;
                let id = *id;
                let (work, _, _) = waiting.pop_front().expect("front exists");
                let w = work.job;
                clients.push(ImageClient {
                    id,
                    events: work.events,
                    partial_images: work.partial_images,
                    images: n,
                    delivered: 0,
                    previews: 0,
                    prompt_len: w.prompt_ids.len(),
                });
                joining.push(ImageJob {
                    tag: id,
                    prompt_ids: w.prompt_ids,
                    config: w.config,
                });
                continue;
            }
            if running == 0 {
                // Even alone it does not fit.
                let (work, _, _) = waiting.pop_front().expect("front exists");
                let msg = memory
                    .err()
                    .map_or_else(|| "the request does not fit".to_string(), |e| e.to_string());
                let _ = work.events.send(ImageEvent::Failed(
                    ApiError::status(StatusCode::SERVICE_UNAVAILABLE, msg).code("out_of_memory"),
                ));
                continue;
            }
            for (w, _, told) in waiting.iter_mut().filter(|(_, _, told)| !told) {
                let _ = w.events.send(ImageEvent::Queued);
                *told = true;
            }
            break;
        }
        let had_images = !batch.is_empty() || !joining.is_empty();
        if had_images {
            let images_before =
                batch.images().len() + joining.iter().map(|j| j.config.parallel).sum::<usize>();
            match batch.step(joining) {
                Ok(finished) => {
                    deliver(janus, &mut clients, &batch, finished);
                    metrics.step(tokens, images_before as u64, t0.elapsed().as_nanos() as u64);
                }
                Err(e) => fail_all(&mut clients, &mut batch, e.into()),
            }
        } else if tokens > 0 {
            metrics.step(tokens, 0, t0.elapsed().as_nanos() as u64);
        }
    }
}

/// Text events to their clients; finished clients are dropped.
fn send_text(chats: &mut Vec<ChatClient>, events: Vec<(u64, TextEvent)>) {
    for (id, event) in events {
        let Some(c) = chats.iter().find(|c| c.id == id) else {
            continue;
        };
        let (event, last) = match event {
            TextEvent::Started { prompt_tokens } => (ChatEvent::Started { prompt_tokens }, false),
            TextEvent::Delta(d) => (
                ChatEvent::Delta {
                    text: d.text,
                    token: d.token.is_some(),
                },
                false,
            ),
            TextEvent::Finished {
                reason,
                completion_tokens,
            } => (
                ChatEvent::Done {
                    finish: reason,
                    completion_tokens,
                },
                true,
            ),
        };
        let _ = c.events.send(event);
        if last {
            chats.retain(|c| c.id != id);
        }
    }
}

/// Fails every chat (after an error in the text batch) and starts afresh.
fn fail_chats<B: Backend>(
    chats: &mut Vec<ChatClient>,
    text: &mut TextBatcher<'_, B, u64>,
    error: ApiError,
) {
    let error = ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        ..error
    };
    for c in chats.drain(..) {
        let _ = c.events.send(ChatEvent::Failed(error.clone()));
    }
    let _ = text.cancel(|_| true);
}

/// The longest prompt of the running image jobs.
fn batch_prompt_len(clients: &[ImageClient]) -> usize {
    clients.iter().map(|c| c.prompt_len).max().unwrap_or(0)
}

/// Progress, previews and finished images to their clients.
fn deliver<B: Backend>(
    janus: &Janus<B>,
    clients: &mut Vec<ImageClient>,
    batch: &ImageBatcher<'_, B, u64>,
    finished: Vec<janus_pipeline::BatchImage<u64>>,
) {
    let steps = batch.steps();
    for c in clients.iter_mut() {
        let step = batch
            .images()
            .iter()
            .chain(finished.iter())
            .find(|i| i.tag == c.id)
            .map_or(steps, |i| i.codes.len());
        let _ = c.events.send(ImageEvent::Progress { step, steps });
        // Previews at k/(partial+1) of the way, k = 1..=partial.
        while c.previews < c.partial_images
            && step >= (c.previews + 1) * steps / (c.partial_images + 1)
            && step < steps
        {
            for image in batch.images().iter().filter(|i| i.tag == c.id) {
                match janus.decode_partial(&image.codes) {
                    Ok(picture) => {
                        let _ = c.events.send(ImageEvent::Partial {
                            image: image.index,
                            index: c.previews,
                            picture,
                        });
                    }
                    Err(e) => {
                        let _ = c.events.send(ImageEvent::Failed(e.into()));
                    }
                }
            }
            c.previews += 1;
        }
    }
    if finished.is_empty() {
        return;
    }
    let codes: Vec<Vec<u32>> = finished.iter().map(|i| i.codes.clone()).collect();
    let mut pictures = janus
        .decode_codes(&codes)
        .map_err(ApiError::from)
        .map(|p| p.into_iter().map(Some).collect::<Vec<_>>());
    for (k, image) in finished.iter().enumerate() {
        let Some(c) = clients.iter_mut().find(|c| c.id == image.tag) else {
            continue;
        };
        let event = match &mut pictures {
            Ok(p) => ImageEvent::Image {
                image: image.index,
                picture: p[k].take().expect("each picture is sent once"),
            },
            Err(e) => ImageEvent::Failed(e.clone()),
        };
        let _ = c.events.send(event);
        c.delivered += 1;
    }
    clients.retain(|c| c.delivered < c.images);
}

/// Fails every image client (after an error in the batch) and starts afresh.
fn fail_all<B: Backend>(
    clients: &mut Vec<ImageClient>,
    batch: &mut ImageBatcher<'_, B, u64>,
    error: ApiError,
) {
    let error = ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        ..error
    };
    for c in clients.drain(..) {
        let _ = c.events.send(ImageEvent::Failed(error.clone()));
    }
    let _ = batch.cancel(|_| true);
}
