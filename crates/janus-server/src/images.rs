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
use janus::engine::{Accept, BatchItem, GenerateParams, Speculative, Window};
use janus::png::{encode_png, GenerationMeta};
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{ImageData, ImageRequest, ImagesResponse};
use crate::error::{Result, ServerError};
use crate::extract::ApiJson;
use crate::jobs::{CancelOnDrop, ImageEvent, ImageJob, Job, MAX_BATCH_IMAGES};
use crate::sse::json_event;
use crate::{unix_now, AppState};

/// Most partial images a streamed request may ask for (OpenAI's limit).
pub const MAX_PARTIAL_IMAGES: usize = 3;

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
    /// The server's address as the client sees it ([`public_base`]), for file URLs.
    base_url: String,
    created: u64,
}

/// The request's speculative decoding, over the server's default.
fn speculative(req: &ImageRequest, default: Speculative) -> Result<Speculative> {
    let window = match &req.speculative {
        None => default.window,
        Some(v) => {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                other => other.to_string(),
            };
            text.parse::<Window>()
                .map_err(|e| ServerError::invalid("speculative", e.to_string()))?
        }
    };
    let accept = match req.accept.as_deref() {
        None => default.accept,
        Some(a) => a
            .parse::<Accept>()
            .map_err(|e| ServerError::invalid("accept", e.to_string()))?,
    };
    Ok(Speculative { window, accept })
}

/// The handler.
pub(crate) async fn generations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ImageRequest>,
) -> Result<Response> {
    let created = unix_now();
    state.check_model(req.model.as_deref())?;
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
    let stream = req.stream.unwrap_or(false);
    let partial_images = match req.partial_images.unwrap_or(0) {
        0 => 0,
        k if k > MAX_PARTIAL_IMAGES as u64 => {
            return Err(ServerError::invalid(
                "partial_images",
                format!("partial_images must be between 0 and {MAX_PARTIAL_IMAGES}, got {k}"),
            ))
        }
        _ if !stream => {
            return Err(ServerError::invalid(
                "partial_images",
                "partial_images needs \"stream\": true (previews arrive as events)",
            ))
        }
        k => k as usize,
    };
    let params = GenerateParams {
        parallel: n as usize,
        cfg_weight,
        temperature,
        seed: req.seed.unwrap_or_else(random_seed),
        speculative: speculative(&req, state.opts.speculative)?,
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
        partial_images,
        events: tx,
        cancel: cancel.clone(),
    }))?;
    let guard = CancelOnDrop(cancel);
    let base_url = public_base(state.opts.public_url.as_deref(), &headers);
    let out = Output {
        prompt: req.prompt,
        params,
        format,
        base_url,
        created,
    };
    if stream {
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
            ImageEvent::Progress { .. } | ImageEvent::Partial { .. } => {}
            ImageEvent::Failed(e) => return Err(e),
            ImageEvent::Done(images) => {
                let (created, seed) = (out.created, out.params.seed);
                let data = encode(state, out, images).await?;
                return Ok(Json(ImagesResponse {
                    created,
                    data,
                    seed,
                })
                .into_response());
            }
        }
    }
    Err(ServerError::ShuttingDown)
}

/// Streams `{"type":"progress","step","total"}` events (at most 20 a second) and any
/// `{"type":"partial_image","partial_image_index","step","total","data"}` previews, then
/// `{"type":"result","created","data","seed"}` (or `{"type":"error","error"}`), then
/// `[DONE]`.
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
        // Partial images are numbered as sent (a skipped or superseded one leaves no gap).
        let mut partials = 0;
        loop {
            let failed = match rx.recv().await {
                Some(ImageEvent::Progress { step, total }) => {
                    yield Ok::<_, Infallible>(json_event(&json!({"type": "progress", "step": step, "total": total})));
                    continue;
                }
                Some(ImageEvent::Partial { step, total, images }) => {
                    // A preview that cannot be encoded is skipped: the result still comes.
                    if let Ok(data) = encode_previews(images).await {
                        yield Ok(json_event(&json!({
                            "type": "partial_image", "partial_image_index": partials,
                            "step": step, "total": total, "data": data,
                        })));
                        partials += 1;
                    }
                    continue;
                }
                Some(ImageEvent::Done(images)) => {
                    let Some(out) = out.take() else { break };
                    let (created, seed) = (out.created, out.params.seed);
                    match encode(state.clone(), out, images).await {
                        Ok(data) => {
                            yield Ok(json_event(&json!({"type": "result", "created": created, "data": data, "seed": seed})));
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
            speculative: GenerationMeta::speculative_record(
                out.params.speculative.accept,
                &match out.params.speculative.window {
                    Window::Fixed(w) => w.to_string(),
                    Window::Auto => "auto".to_string(),
                },
            ),
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

/// Previews as plain base64 PNGs (no metadata: they are not the result).
async fn encode_previews(images: Vec<image::RgbImage>) -> Result<Vec<ImageData>> {
    tokio::task::spawn_blocking(move || {
        images
            .iter()
            .map(|img| {
                Ok(ImageData {
                    b64_json: Some(
                        base64::engine::general_purpose::STANDARD.encode(encode_png(img, &[])?),
                    ),
                    url: None,
                })
            })
            .collect()
    })
    .await
    .map_err(|e| ServerError::Internal(format!("encoding task failed: {e}")))?
}

/// The server's address as the client sees it, for absolute file URLs: `--public-url`
/// when set; else the scheme and host a reverse proxy reports in `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the first of several values), each falling back to `http` and the
/// `Host` header; empty (relative URLs) without a host. Forwarded values that are not a
/// plain scheme or host are ignored. A client can only point its own URLs elsewhere with
/// these headers, so they need no trust list.
fn public_base(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_string();
    }
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let scheme = first("x-forwarded-proto")
        .map(str::to_ascii_lowercase)
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let plain_host = |h: &&str| {
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
    };
    match first("x-forwarded-host")
        .filter(plain_host)
        .or_else(|| first(header::HOST.as_str()).filter(plain_host))
    {
        Some(host) => format!("{scheme}://{host}"),
        None => String::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn public_base_url() {
        let direct = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(public_base(None, &direct), "http://127.0.0.1:8080");
        assert_eq!(public_base(None, &HeaderMap::new()), "");
        let proxied = headers(&[
            ("host", "127.0.0.1:8080"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "janus.example.org, proxy.internal"),
        ]);
        assert_eq!(public_base(None, &proxied), "https://janus.example.org");
        // TLS terminated in front, Host passed through.
        let tls = headers(&[
            ("host", "janus.example.org"),
            ("x-forwarded-proto", "HTTPS"),
        ]);
        assert_eq!(public_base(None, &tls), "https://janus.example.org");
        // Nonsense is ignored.
        let odd = headers(&[
            ("host", "h:1"),
            ("x-forwarded-proto", "javascript"),
            ("x-forwarded-host", "evil/path"),
        ]);
        assert_eq!(public_base(None, &odd), "http://h:1");
        let set = Some("https://example.org/janus/");
        assert_eq!(public_base(set, &proxied), "https://example.org/janus");
    }
}
