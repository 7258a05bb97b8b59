//! `janus serve`: the OpenAI-compatible HTTP API and the web page.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use janus_server::{Server, ServerOptions};

use crate::args::{DeviceArgs, ModelArgs, SpeculativeArgs};
use crate::progress::Progress;

/// Arguments of `janus serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (the first line on stdout names it).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on the API routes (or set JANUS_API_KEY, which
    /// keeps the key out of the process list).
    #[arg(long, env = "JANUS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests that may wait for the model; more are answered with 429.
    #[arg(long, default_value_t = 16)]
    max_queue: usize,
    /// Fetch http(s) image URLs in chat messages (default: only data: URLs).
    #[arg(long)]
    allow_remote_images: bool,
    /// Largest request body in MiB.
    #[arg(long, default_value_t = 32)]
    max_body_mib: usize,
    /// Seconds running requests may take to finish after SIGTERM / SIGINT before they are
    /// cancelled.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// The server's address as clients see it (`https://janus.example.org`, optionally with
    /// a path), for the URLs of generated images; default: from each request's
    /// X-Forwarded-Proto / X-Forwarded-Host / Host headers.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Defaults of image requests that do not set `speculative` / `accept`.
    #[command(flatten)]
    speculative: SpeculativeArgs,
}

/// Runs `janus serve` until SIGTERM or SIGINT.
pub fn run(a: ServeArgs, progress: &Progress) -> Result<()> {
    if a.max_queue == 0 {
        anyhow::bail!("--max-queue must be at least 1");
    }
    if let Some(url) = &a.public_url {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || r.contains(['?', '#'])) {
            anyhow::bail!(
                "--public-url must be an http:// or https:// URL with a host (and no query), got {url:?}"
            );
        }
    }
    let pipe = a.model.load(progress, &a.device)?;
    let opts = ServerOptions {
        model_id: a.model.model.clone(),
        model_record: a.model.model_id(),
        api_key: a.api_key,
        max_queue: a.max_queue,
        allow_remote_images: a.allow_remote_images,
        max_body_bytes: a.max_body_mib.saturating_mul(1 << 20),
        shutdown_grace: Duration::from_secs(a.shutdown_grace),
        public_url: a.public_url,
        speculative: a.speculative.get(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("janus-http")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        let server = Server::start(pipe, opts)?;
        // The first stdout line names the address (tests and scripts read it).
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
        drop(out);
        server.serve(listener, shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    if !progress.is_quiet() {
        eprintln!("stopped");
    }
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
