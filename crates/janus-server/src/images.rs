//! `POST /v1/images/generations` (text to image, whole or with streamed progress) and
//! `GET /v1/files/images/{name}` (the PNGs of `response_format: "url"`).

use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use janus::engine::sampling::random_seed;
use janus::engine::{BatchItem, GenerateParams};
use janus::png::{encode_png, GenerationMeta};
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{ImageData, ImageRequest, ImagesResponse};
use crate::chat::json_event;
use crate::error::{Result, ServerError};
use crate::routes::ApiJson;
use crate::worker::{CancelOnDrop, ImageEvent, ImageJob, Job, MAX_BATCH_IMAGES};
use crate::{unix_now, AppState};

/// How the images are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    B64Json,
    Url,
}

/// What the PNGs record and how they are returned.
struct Output {
    prompt: String,
    params: GenerateParams,
    format: Format,
    /// `http://host` from the request, for absolute file URLs.
    base_url: String,
    created: u64,
}

/// The handler.
pub(crate) async fn generations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ImageRequest>,
) -> Result<Response> {
    let created = unix_now();
    let n = req.n.unwrap_or(1);
    if !(1..=MAX_BATCH_IMAGES as u64).contains(&n) {
        return Err(ServerError::invalid(
            "n",
            format!("n must be between 1 and {MAX_BATCH_IMAGES}, got {n}"),
        ));
    }
    let side = state.facts.gen_image_size;
    let size = format!("{side}x{side}");
    if let Some(s) = req.size.as_deref().filter(|s| *s != size && *s != "auto") {
        return Err(ServerError::invalid(
            "size",
            format!("size {s:?} is not supported: this model draws {size} images (pass \"{size}\" or omit size)"),
        ));
    }
    let format = match req.response_format.as_deref() {
        None | Some("b64_json") => Format::B64Json,
        Some("url") => Format::Url,
        Some(other) => {
            return Err(ServerError::invalid(
                "response_format",
                format!("response_format {other:?} is not supported (use \"b64_json\" or \"url\")"),
            ))
        }
    };
    let cfg_weight = req.cfg_weight.unwrap_or(5.0);
    if !cfg_weight.is_finite() || cfg_weight < 0.0 {
        return Err(ServerError::invalid(
            "cfg_weight",
            format!("cfg_weight must be a number >= 0, got {cfg_weight}"),
        ));
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !temperature.is_finite() || temperature < 0.0 {
        return Err(ServerError::invalid(
            "temperature",
            format!("temperature must be a number >= 0, got {temperature}"),
        ));
    }
    if req.prompt.trim().is_empty() {
        return Err(ServerError::invalid("prompt", "prompt must not be empty"));
    }
    let params = GenerateParams {
        parallel: n as usize,
        cfg_weight,
        temperature,
        seed: req.seed.unwrap_or_else(random_seed),
    };
    params.validate()?;

    // Tokenising a long prompt is blocking work.
    let st = state.clone();
    let prompt = req.prompt.clone();
    let (cond_ids, uncond_ids) = tokio::task::spawn_blocking(move || {
        let facts = &st.facts;
        let (cond, uncond) = janus::processor::prepare_generation(&facts.tokenizer, &prompt)?;
        if cond.len() + facts.gen_image_tokens > facts.max_positions {
            return Err(ServerError::InvalidRequest {
                message: format!(
                    "the prompt is {} tokens long; with the {} image tokens that exceeds the \
                     model's context of {}",
                    cond.len(),
                    facts.gen_image_tokens,
                    facts.max_positions
                ),
                param: Some("prompt".into()),
                code: Some("context_length_exceeded"),
            });
        }
        Ok((cond, uncond))
    })
    .await
    .map_err(|e| ServerError::Internal(format!("request task failed: {e}")))??;

    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    state.queue.push(Job::Image(ImageJob {
        item: BatchItem {
            cond_ids,
            uncond_ids,
            params: params.clone(),
        },
        events: tx,
        cancel: cancel.clone(),
    }))?;
    let guard = CancelOnDrop(cancel);
    let base_url = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let out = Output {
        prompt: req.prompt,
        params,
        format,
        base_url,
        created,
    };
    if req.stream.unwrap_or(false) {
        Ok(stream_images(state, out, rx, guard))
    } else {
        whole_images(state, out, rx, guard).await
    }
}

/// Waits for the images. Dropping this future (the client left) cancels the job.
async fn whole_images(
    state: Arc<AppState>,
    out: Output,
    mut rx: mpsc::UnboundedReceiver<ImageEvent>,
    _guard: CancelOnDrop,
) -> Result<Response> {
    while let Some(ev) = rx.recv().await {
        match ev {
            ImageEvent::Progress { .. } => {}
            ImageEvent::Failed(e) => return Err(e),
            ImageEvent::Done(images) => {
                let created = out.created;
                let data = encode(state, out, images).await?;
                return Ok(Json(ImagesResponse { created, data }).into_response());
            }
        }
    }
    Err(ServerError::ShuttingDown)
}

/// Streams `{"type":"progress","step","total"}` events (at most 20 a second), then
/// `{"type":"result","created","data"}` (or `{"type":"error","error"}`), then `[DONE]`.
/// Dropping the stream (the client left) cancels the job.
fn stream_images(
    state: Arc<AppState>,
    out: Output,
    mut rx: mpsc::UnboundedReceiver<ImageEvent>,
    guard: CancelOnDrop,
) -> Response {
    let events = async_stream::stream! {
        let _guard = guard;
        let mut out = Some(out);
        loop {
            let failed = match rx.recv().await {
                Some(ImageEvent::Progress { step, total }) => {
                    yield Ok::<_, Infallible>(json_event(&json!({"type": "progress", "step": step, "total": total})));
                    continue;
                }
                Some(ImageEvent::Done(images)) => {
                    let Some(out) = out.take() else { break };
                    let created = out.created;
                    match encode(state.clone(), out, images).await {
                        Ok(data) => {
                            yield Ok(json_event(&json!({"type": "result", "created": created, "data": data})));
                            break;
                        }
                        Err(e) => e,
                    }
                }
                Some(ImageEvent::Failed(e)) => e,
                None => ServerError::ShuttingDown,
            };
            let mut body = failed.body();
            body["type"] = json!("error");
            yield Ok(json_event(&body));
            break;
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// PNG-encodes the images with the request's parameters in their text chunks, as
/// `janus generate` writes them, and returns them base64-encoded or as file URLs.
async fn encode(
    state: Arc<AppState>,
    out: Output,
    images: Vec<image::RgbImage>,
) -> Result<Vec<ImageData>> {
    tokio::task::spawn_blocking(move || {
        let meta = GenerationMeta {
            prompt: &out.prompt,
            seed: out.params.seed,
            cfg_weight: out.params.cfg_weight,
            temperature: out.params.temperature,
            parallel: out.params.parallel,
            model: &state.opts.model_record,
        };
        images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let png = encode_png(img, &meta.png_text(i))?;
                Ok(match out.format {
                    Format::B64Json => ImageData {
                        b64_json: Some(base64::engine::general_purpose::STANDARD.encode(&png)),
                        url: None,
                    },
                    Format::Url => {
                        let name = state.files.save(&png)?;
                        ImageData {
                            b64_json: None,
                            url: Some(format!("{}/v1/files/images/{name}", out.base_url)),
                        }
                    }
                })
            })
            .collect()
    })
    .await
    .map_err(|e| ServerError::Internal(format!("encoding task failed: {e}")))?
}

/// `GET /v1/files/images/{name}`.
pub(crate) async fn file(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response> {
    match state.files.get(&name) {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response()),
        None => Err(ServerError::NotFound(format!("no image {name:?}"))),
    }
}
