//! Helpers for the in-process router tests: the tiny fixture model loaded once, a backend
//! wrapper that can hold jobs back or slow them down, and request / response helpers.
#![allow(dead_code)] // each test binary uses a different subset

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use candle_core::{DType, Device};
use janus::engine::{BatchItem, BatchProgress, GenerateOutput};
use janus::pipeline::{DTypeChoice, Pipeline, UnderstandOptions, UnderstandResult};
use janus::processor::Message;
use janus_server::{ModelFacts, ServedModel, Server, ServerOptions};
use serde_json::Value;
use tower::ServiceExt;

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The tiny Janus-Pro fixture, loaded once per test binary.
pub fn pipe() -> Arc<Pipeline> {
    static PIPE: OnceLock<Arc<Pipeline>> = OnceLock::new();
    PIPE.get_or_init(|| {
        let dir = fixtures().join("models/tiny-pro");
        Arc::new(Pipeline::load(&dir, DTypeChoice::Fixed(DType::F32), &Device::Cpu).unwrap())
    })
    .clone()
}

/// Holds jobs back until opened. Waits give up after a minute, so a failing test cannot
/// hang on it.
#[derive(Debug, Default)]
pub struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    entered: AtomicUsize,
}

impl Gate {
    /// A closed gate.
    pub fn closed() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn wait(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !*open && Instant::now() < deadline {
            open = self
                .cv
                .wait_timeout(open, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    /// Lets every job through.
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    /// Jobs that reached the gate.
    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

/// The fixture pipeline, optionally behind gates and slowed down per token / step.
pub struct TestModel {
    pub pipe: Arc<Pipeline>,
    /// Holds chats and sampling back.
    pub gate: Option<Arc<Gate>>,
    /// Holds VQ decoding back.
    pub decode_gate: Option<Arc<Gate>>,
    pub delay: Duration,
}

impl TestModel {
    pub fn plain() -> Self {
        Self {
            pipe: pipe(),
            gate: None,
            decode_gate: None,
            delay: Duration::ZERO,
        }
    }
}

impl ServedModel for TestModel {
    fn facts(&self) -> ModelFacts {
        self.pipe.facts()
    }

    fn understand(
        &self,
        messages: &[Message],
        opts: &UnderstandOptions,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> janus::Result<UnderstandResult> {
        if let Some(g) = &self.gate {
            g.wait();
        }
        let delay = self.delay;
        self.pipe.understand(messages, opts, &mut |t: &str| {
            std::thread::sleep(delay);
            on_text(t)
        })
    }

    fn generate_codes(
        &self,
        items: &[BatchItem],
        on_step: &mut dyn FnMut(&BatchProgress) -> Vec<bool>,
    ) -> janus::Result<Vec<GenerateOutput>> {
        if let Some(g) = &self.gate {
            g.wait();
        }
        let delay = self.delay;
        self.pipe.generate_codes(items, &mut |p: &BatchProgress| {
            std::thread::sleep(delay);
            on_step(p)
        })
    }

    fn check_generate_memory(&self, prompt_len: usize, images: usize) -> janus::Result<()> {
        ServedModel::check_generate_memory(&*self.pipe, prompt_len, images)
    }

    fn decode_images(&self, codes: &[Vec<u32>]) -> janus::Result<Vec<image::RgbImage>> {
        if let Some(g) = &self.decode_gate {
            g.wait();
        }
        ServedModel::decode_images(&*self.pipe, codes)
    }
}

/// A server on the fixture model (kept alive by the caller) and its router.
pub fn server_with(model: TestModel, opts: ServerOptions) -> (Server, Router) {
    let server = Server::start(model, opts).unwrap();
    let router = server.router();
    (server, router)
}

/// A server with default options.
pub fn server() -> (Server, Router) {
    server_with(TestModel::plain(), ServerOptions::new("tiny-pro"))
}

/// A POST with a JSON body.
pub fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A GET.
pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

/// Sends a request and reads the whole response.
pub async fn send(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes)
}

/// Sends a request and parses the JSON answer.
pub async fn send_json(router: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let (status, _, bytes) = send(router, req).await;
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

/// The `data:` payloads of a server-sent event stream, in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .flat_map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A fixture image as a base64 `data:` URL.
pub fn data_url(name: &str) -> String {
    let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
    let mime = match name.rsplit('.').next() {
        Some("jpg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "image/png",
    };
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The value of one metric line (`name{labels}` exactly as exported), if present.
pub async fn metric(router: &Router, series: &str) -> Option<f64> {
    let (_, _, body) = send(router, get("/metrics")).await;
    let text = String::from_utf8_lossy(&body).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls a metric until `ok` accepts it (or fails after 60 s).
pub async fn wait_for_metric(router: &Router, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = metric(router, series).await.filter(|&v| ok(v)) {
            return v;
        }
        assert!(Instant::now() < deadline, "metric {series} never got there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Decodes a base64 PNG to RGB.
pub fn decode_b64_png(b64: &str) -> image::RgbImage {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}
