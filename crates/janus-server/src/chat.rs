//! `POST /v1/chat/completions`: image understanding in OpenAI's chat format, whole or
//! streamed as server-sent events.

use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use janus::engine::sampling::random_seed;
use janus::engine::SamplingParams;
use janus::pipeline::UnderstandOptions;
use tokio::sync::mpsc;

use crate::api::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatRequest, ChunkChoice, Delta, Usage,
};
use crate::conversation::{self, Conversation, ImageSources};
use crate::error::{Result, ServerError};
use crate::extract::ApiJson;
use crate::jobs::{CancelOnDrop, ChatEvent, ChatJob, Job};
use crate::sse::json_event;
use crate::{unix_now, AppState};

/// Generated tokens when the request sets no limit (as `janus understand`), capped by the
/// room the prompt leaves in the context.
pub const DEFAULT_MAX_TOKENS: usize = 512;

/// Most stop sequences per request (OpenAI's limit).
const MAX_STOP_SEQUENCES: usize = 4;

/// The handler.
pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response> {
    let created = unix_now();
    let id = format!("chatcmpl-{:032x}", rand::random::<u128>());
    state.check_model(req.model.as_deref())?;
    if let Some(n) = req.n.filter(|&n| n != 1) {
        return Err(ServerError::invalid(
            "n",
            format!("only n = 1 is supported, got {n}"),
        ));
    }
    if req.logprobs == Some(true) {
        return Err(ServerError::invalid(
            "logprobs",
            "log probabilities are not supported",
        ));
    }
    let temperature = req.temperature.unwrap_or(0.0);
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(ServerError::invalid(
            "temperature",
            format!("temperature must be a number >= 0, got {temperature}"),
        ));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ServerError::invalid(
            "top_p",
            format!("top_p must be in (0, 1], got {top_p}"),
        ));
    }
    let stop = req.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOP_SEQUENCES {
        return Err(ServerError::invalid(
            "stop",
            format!(
                "at most {MAX_STOP_SEQUENCES} stop sequences are supported, got {}",
                stop.len()
            ),
        ));
    }
    let (max_param, max_tokens) = match (req.max_completion_tokens, req.max_tokens) {
        (Some(m), _) => ("max_completion_tokens", Some(m)),
        (None, m) => ("max_tokens", m),
    };
    if max_tokens == Some(0) {
        return Err(ServerError::invalid(
            max_param,
            format!("{max_param} must be at least 1"),
        ));
    }
    let stream = req.stream.unwrap_or(false);
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let seed = req.seed.unwrap_or_else(random_seed);

    // Decoding images and tokenising is blocking work.
    let sources = ImageSources {
        allow_remote: state.opts.allow_remote_images,
        max_bytes: state.opts.max_body_bytes,
    };
    let messages = req.messages;
    let st = state.clone();
    let (conv, prompt_tokens) = tokio::task::spawn_blocking(move || {
        let conv = conversation::build(messages, sources)?;
        let n = prompt_tokens(&st, &conv)?;
        Ok::<_, ServerError>((conv, n))
    })
    .await
    .map_err(|e| ServerError::Internal(format!("request task failed: {e}")))??;

    let ctx = state.facts.max_positions;
    if prompt_tokens >= ctx {
        return Err(ServerError::InvalidRequest {
            message: format!(
                "the prompt is {prompt_tokens} tokens long (images included), but the model's \
                 context holds {ctx}"
            ),
            param: Some("messages".into()),
            code: Some("context_length_exceeded"),
        });
    }
    let room = ctx - prompt_tokens;
    let max_new_tokens = match max_tokens {
        Some(m) if m > room as u64 => {
            return Err(ServerError::InvalidRequest {
                message: format!(
                    "{max_param} is {m}, but the prompt ({prompt_tokens} tokens) leaves room for \
                     {room} of the model's {ctx}-token context"
                ),
                param: Some(max_param.into()),
                code: Some("context_length_exceeded"),
            })
        }
        Some(m) => m as usize,
        None => DEFAULT_MAX_TOKENS.min(room),
    };

    let Conversation { system, messages } = conv;
    let opts = UnderstandOptions {
        sampling: SamplingParams {
            temperature,
            top_p,
            top_k: 0,
            seed,
        },
        max_new_tokens,
        system,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    state.queue.push(Job::Chat(ChatJob {
        messages,
        opts,
        stop,
        events: tx,
        cancel: cancel.clone(),
    }))?;
    let guard = CancelOnDrop(cancel);
    let head = Head {
        id,
        created,
        model: state.opts.model_id.clone(),
    };
    if stream {
        Ok(stream_answer(head, rx, guard, include_usage))
    } else {
        whole_answer(head, rx, guard).await
    }
}

/// Prompt tokens of the conversation, images expanded (what `Pipeline::understand` will
/// feed the model); also checks the placeholder counts.
fn prompt_tokens(state: &AppState, conv: &Conversation) -> Result<usize> {
    let prepared = janus::processor::prepare_understanding(
        &state.facts.tokenizer,
        &conv.messages,
        conv.system.as_deref(),
        state.facts.image_tokens,
    )?;
    Ok(prepared.input_ids.len())
}

/// What every response of one request repeats.
struct Head {
    id: String,
    created: u64,
    model: String,
}

impl Head {
    fn chunk(
        &self,
        delta: Delta,
        finish: Option<&'static str>,
        usage: Option<Option<Usage>>,
    ) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                logprobs: None,
            }],
            usage,
        }
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Usage {
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    }
}

/// Waits for the whole answer. Dropping this future (the client left) drops `_guard`,
/// which cancels the job.
async fn whole_answer(
    head: Head,
    mut rx: mpsc::UnboundedReceiver<ChatEvent>,
    _guard: CancelOnDrop,
) -> Result<Response> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            ChatEvent::Text(t) => text.push_str(&t),
            ChatEvent::Failed(e) => return Err(e),
            ChatEvent::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                return Ok(Json(ChatCompletion {
                    id: head.id,
                    object: "chat.completion",
                    created: head.created,
                    model: head.model,
                    choices: vec![ChatChoice {
                        index: 0,
                        message: AssistantMessage {
                            role: "assistant",
                            content: text,
                        },
                        finish_reason: finish,
                        logprobs: None,
                    }],
                    usage: usage(prompt_tokens, completion_tokens),
                })
                .into_response())
            }
        }
    }
    // The model thread dropped the job without an answer: it is stopping.
    Err(ServerError::ShuttingDown)
}

/// Streams `chat.completion.chunk`s: the role, the text as it comes, the finish reason,
/// the usage when asked, then `[DONE]`. A failure after the stream started is sent as an
/// `{"error": ...}` event. Dropping the stream (the client left) cancels the job.
fn stream_answer(
    head: Head,
    mut rx: mpsc::UnboundedReceiver<ChatEvent>,
    guard: CancelOnDrop,
    include_usage: bool,
) -> Response {
    // With include_usage every chunk has "usage": null, and the last one the counts.
    let usage_field = include_usage.then_some(None);
    let events = async_stream::stream! {
        let _guard = guard;
        let first = Delta { role: Some("assistant"), content: Some(String::new()) };
        yield Ok::<_, Infallible>(json_event(&head.chunk(first, None, usage_field)));
        loop {
            match rx.recv().await {
                Some(ChatEvent::Text(t)) => {
                    let delta = Delta { role: None, content: Some(t) };
                    yield Ok(json_event(&head.chunk(delta, None, usage_field)));
                }
                Some(ChatEvent::Done { finish, prompt_tokens, completion_tokens }) => {
                    yield Ok(json_event(&head.chunk(Delta::default(), Some(finish), usage_field)));
                    if include_usage {
                        let mut last = head.chunk(Delta::default(), None, None);
                        last.choices.clear();
                        last.usage = Some(Some(usage(prompt_tokens, completion_tokens)));
                        yield Ok(json_event(&last));
                    }
                    break;
                }
                Some(ChatEvent::Failed(e)) => {
                    yield Ok(json_event(&e.body()));
                    break;
                }
                None => {
                    yield Ok(json_event(&ServerError::ShuttingDown.body()));
                    break;
                }
            }
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
