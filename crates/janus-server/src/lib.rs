//! `janus serve`: an OpenAI-compatible HTTP API and a web page for Janus / Janus-Pro.
//!
//! Architecture (after text-generation-inference):
//! - the model runs on its own thread ([`worker`]) that owns it behind the small
//!   [`ServedModel`] trait; requests reach it through a bounded [`worker::Queue`] and hear back
//!   through a channel per request;
//! - image requests waiting together are run as one CFG batch, and their codes are
//!   VQ-decoded on a second thread ([`decode`]) while the model thread goes on;
//! - a client that disconnects cancels its job (a flag set when the request future or its
//!   event stream is dropped, checked in every step callback);
//! - one error enum ([`ServerError`]) and one place that maps it to HTTP statuses;
//! - axum routes ([`routes`]) on tokio; in-process tests drive the [`Router`] directly.

pub mod api;
mod chat;
pub mod conversation;
pub mod decode;
pub mod error;
mod extract;
pub mod files;
mod images;
pub mod jobs;
pub mod metrics;
pub mod models;
mod routes;
pub mod served_model;
mod sse;
pub mod stop;
pub mod web;
pub mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;

pub use error::ServerError;
pub use served_model::{ModelFacts, ServedModel};

use decode::DecodeQueue;
use files::ImageFiles;
use metrics::Metrics;
use worker::Queue;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The model's id in `/v1/models` and in responses (the `--model` argument).
    pub model_id: String,
    /// The model as recorded in PNG metadata (a canonical path or `owner/name@revision`).
    pub model_record: String,
    /// Bearer token required on the API routes; `None` leaves them open.
    pub api_key: Option<String>,
    /// Requests that may wait for the model; more are refused with 429.
    pub max_queue: usize,
    /// Fetch http(s) image URLs in chat messages (off: only `data:` URLs).
    pub allow_remote_images: bool,
    /// Largest request body (and fetched image) in bytes.
    pub max_body_bytes: usize,
    /// After a shutdown signal, how long running work may take before it is cancelled.
    pub shutdown_grace: Duration,
    /// The server's public address (`https://janus.example.org`, optionally with a path)
    /// for the URLs of generated images; `None` takes it from each request's
    /// `X-Forwarded-Proto` / `X-Forwarded-Host` / `Host` headers.
    pub public_url: Option<String>,
    /// Speculative decoding for image requests that do not name theirs (`janus serve
    /// --speculative`); plain decoding by default.
    pub speculative: janus::engine::Speculative,
}

impl ServerOptions {
    /// Defaults for `model_id`: queue of 16, 32 MiB bodies, 30 s grace, no key, no remote
    /// images, image URLs from the request headers.
    pub fn new(model_id: impl Into<String>) -> Self {
        let model_id = model_id.into();
        Self {
            model_record: model_id.clone(),
            model_id,
            api_key: None,
            max_queue: 16,
            allow_remote_images: false,
            max_body_bytes: 32 << 20,
            shutdown_grace: Duration::from_secs(30),
            public_url: None,
            speculative: Default::default(),
        }
    }
}

/// What the request handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    opts: ServerOptions,
    facts: ModelFacts,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    files: ImageFiles,
    /// Unix time the server started (the model's `created`).
    started: u64,
}

/// A running model thread and the state the routes share; [`Server::router`] serves it.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    abort: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    decoder: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts the model and decode threads with `model` and creates the image directory.
    pub fn start(model: impl ServedModel, opts: ServerOptions) -> Result<Self, ServerError> {
        if opts.max_queue == 0 {
            return Err(ServerError::Internal(
                "--max-queue must be at least 1".into(),
            ));
        }
        let facts = model.facts();
        let queue = Arc::new(Queue::new(opts.max_queue));
        let metrics = Arc::new(Metrics::default());
        let files = ImageFiles::new().map_err(|e| {
            ServerError::Internal(format!("cannot create the image directory: {e}"))
        })?;
        let abort = Arc::new(AtomicBool::new(false));
        let model = Arc::new(model);
        let decode = Arc::new(DecodeQueue::new());
        let decoder = {
            let (model, decode) = (model.clone(), decode.clone());
            let (metrics, abort) = (metrics.clone(), abort.clone());
            std::thread::Builder::new()
                .name("janus-decode".into())
                .spawn(move || decode::run(model, decode, metrics, abort))
                .map_err(|e| {
                    ServerError::Internal(format!("cannot start the decode thread: {e}"))
                })?
        };
        let worker = {
            let (queue, metrics, abort) = (queue.clone(), metrics.clone(), abort.clone());
            std::thread::Builder::new()
                .name("janus-model".into())
                .spawn(move || {
                    // When the model thread ends nothing more will be sampled: the decoder
                    // ends once it is done.
                    let _close = decode::CloseOnDrop(decode.clone());
                    worker::run(model, queue, decode, metrics, abort);
                })
                .map_err(|e| ServerError::Internal(format!("cannot start the model thread: {e}")))?
        };
        let state = Arc::new(AppState {
            opts,
            facts,
            queue,
            metrics,
            files,
            started: unix_now(),
        });
        Ok(Self {
            state,
            abort,
            worker: Some(worker),
            decoder: Some(decoder),
        })
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        routes::router(self.state.clone())
    }

    /// The directory generated PNGs are served from (removed by [`Server::stop`]).
    pub fn image_dir(&self) -> &std::path::Path {
        self.state.files.path()
    }

    /// Serves on `listener` until `shutdown` completes, then stops taking requests, lets
    /// running work finish for up to the grace period (then cancels it), stops the model
    /// thread and removes the image directory.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let queue = self.state.queue.clone();
        let abort = self.abort.clone();
        let grace = self.state.opts.shutdown_grace;
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing running requests");
            queue.close();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                tracing::warn!("shutdown grace period over: cancelling running requests");
                abort.store(true, Ordering::Relaxed);
            });
        };
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(signal)
            .await;
        // Joining the model thread blocks until its current step ends.
        let _ = tokio::task::spawn_blocking(move || self.stop()).await;
        result
    }

    /// Cancels all work, stops the model and decode threads and removes the image
    /// directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        self.state.queue.close();
        // The model thread ends first, then closes the decode queue, which ends the decoder.
        for (name, thread) in [
            ("model", self.worker.take()),
            ("decode", self.decoder.take()),
        ] {
            if thread.is_some_and(|t| t.join().is_err()) {
                tracing::error!("the {name} thread panicked");
            }
        }
        self.state.files.remove();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
