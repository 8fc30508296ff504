//! Continuous batching of text generation: conversations join a running batch
//! between steps (their prompts run on their own, then their rows join the
//! KV cache, masked), each row samples from its own seeded sampler and stops at
//! EOS or its own budget, and every answer is exactly what it would be alone.

use burn::prelude::*;

use crate::janus::{FinishReason, Janus, Request, TextDelta};
use crate::sampling::Sampler;
use crate::text_stream::TextStream;
use crate::understand::TextSession;
use crate::{PipelineError, Result};

/// What one step gave one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextEvent {
    /// Its prompt ran (it joins the batch at the next step).
    Started {
        /// Prompt tokens, image slots included.
        prompt_tokens: usize,
    },
    /// A token (its text may be empty while a character is incomplete).
    Delta(TextDelta),
    /// The end: the held-back rest of the text was sent as a last delta.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Tokens generated, EOS included.
        completion_tokens: usize,
    },
}

struct Row<'j, T> {
    tag: T,
    sampler: Sampler,
    stream: TextStream<'j>,
    left: usize,
}

/// Running conversations sharing one LLM forward per step.
pub struct TextBatcher<'j, B: Backend, T> {
    janus: &'j Janus<B>,
    session: Option<TextSession<'j, B>>,
    rows: Vec<Row<'j, T>>,
}

impl<'j, B: Backend, T: Clone> TextBatcher<'j, B, T> {
    /// An empty batch.
    pub fn new(janus: &'j Janus<B>) -> Self {
        Self {
            janus,
            session: None,
            rows: Vec::new(),
        }
    }

    /// Whether nothing is running.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Tags of the running conversations.
    pub fn tags(&self) -> impl Iterator<Item = &T> {
        self.rows.iter().map(|r| &r.tag)
    }

    /// Runs `request`'s prompt; it joins the batch at the next step. An invalid
    /// request is an error and nothing joins.
    pub fn join(&mut self, tag: T, request: &Request) -> Result<Vec<(T, TextEvent)>> {
        let started = self.janus.start_text(request)?;
        let event = TextEvent::Started {
            prompt_tokens: started.prompt_tokens,
        };
        let mut events = vec![(tag.clone(), event)];
        let row = Row {
            tag,
            sampler: started.sampler,
            stream: TextStream::new(self.janus.processor().tokenizer()),
            left: started.budget,
        };
        if row.left == 0 {
            events.push(finished(&row, FinishReason::Length));
            return Ok(events);
        }
        match &mut self.session {
            Some(session) => session.merge(started.session),
            None => self.session = Some(started.session),
        }
        self.rows.push(row);
        Ok(events)
    }

    /// One token for every running conversation; finished ones leave the batch.
    pub fn step(&mut self) -> Result<Vec<(T, TextEvent)>> {
        let Some(session) = &mut self.session else {
            return Ok(Vec::new());
        };
        let rows = &mut self.rows;
        let picked = session
            .step_with(|row, logits| rows[row].sampler.sample(logits) as u32)
            .ok_or_else(|| PipelineError::Invalid("the text batch has nothing to do".into()))?;
        let eos = self.janus.processor().tokenizer().ids.eos;
        let mut events = Vec::new();
        let mut keep = Vec::with_capacity(rows.len());
        for (row, id) in rows.iter_mut().zip(picked) {
            let Some(id) = id else {
                keep.push(false);
                continue;
            };
            row.left -= 1;
            let text = row.stream.push(id);
            events.push((
                row.tag.clone(),
                TextEvent::Delta(TextDelta {
                    text,
                    token: Some(id),
                }),
            ));
            let end = if id == eos {
                Some(FinishReason::Stop)
            } else {
                (row.left == 0).then_some(FinishReason::Length)
            };
            if let Some(reason) = end {
                let rest = row.stream.finish();
                if !rest.is_empty() {
                    let delta = TextDelta {
                        text: rest,
                        token: None,
                    };
                    events.push((row.tag.clone(), TextEvent::Delta(delta)));
                }
                events.push(finished(row, reason));
            }
            keep.push(end.is_none());
        }
        self.remove(&keep)?;
        Ok(events)
    }

    /// Drops the conversations `cancelled` says yes to.
    pub fn cancel(&mut self, cancelled: impl Fn(&T) -> bool) -> Result<()> {
        let keep: Vec<bool> = self.rows.iter().map(|r| !cancelled(&r.tag)).collect();
        self.remove(&keep)
    }

    fn remove(&mut self, keep: &[bool]) -> Result<()> {
        if keep.iter().all(|k| *k) {
            return Ok(());
        }
        let mut flags = keep.iter();
        self.rows.retain(|_| *flags.next().unwrap_or(&false));
        if self.rows.is_empty() {
            self.session = None;
        } else if let Some(session) = &mut self.session {
            session.retain(keep)?;
        }
        Ok(())
    }
}

fn finished<T: Clone>(row: &Row<'_, T>, reason: FinishReason) -> (T, TextEvent) {
    let event = TextEvent::Finished {
        reason,
        completion_tokens: row.stream.ids().len(),
    };
    (row.tag.clone(), event)
}
