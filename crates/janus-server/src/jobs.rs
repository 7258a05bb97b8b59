//! What travels between the HTTP handlers, the model thread and the decode stage: jobs,
//! their events, cancel flags.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use janus::engine::BatchItem;
use janus::pipeline::UnderstandOptions;
use janus::processor::Message;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ServerError;
use crate::metrics::JobKind;

/// Most images in one text-to-image batch (2 rows each in the CFG batch).
pub const MAX_BATCH_IMAGES: usize = 16;

/// Set when the job's client has gone (the request future or its stream was dropped).
pub type CancelFlag = Arc<AtomicBool>;

/// Sets its flag when dropped: held by whatever serves the job's client, so a client that
/// disconnects cancels the job.
#[derive(Debug)]
pub struct CancelOnDrop(pub CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A chat completion for the model thread.
#[derive(Debug)]
pub struct ChatJob {
    /// The conversation, images decoded.
    pub messages: Vec<Message>,
    /// Sampling, token budget and system prompt.
    pub opts: UnderstandOptions,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Where the answer goes.
    pub events: UnboundedSender<ChatEvent>,
    /// Set when the client has gone.
    pub cancel: CancelFlag,
}

/// What the model thread reports about a chat job.
#[derive(Debug)]
pub enum ChatEvent {
    /// More answer text.
    Text(String),
    /// The answer is complete.
    Done {
        /// `stop` or `length`.
        finish: &'static str,
        /// Prompt tokens, images included.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
    /// The job failed.
    Failed(ServerError),
}

/// A text-to-image request for the model thread.
#[derive(Debug)]
pub struct ImageJob {
    /// Prompt rows and parameters.
    pub item: BatchItem,
    /// Partial images to send while sampling (0: none), at evenly spaced steps, each only
    /// when it would arrive before the finished images ([`preview_worth_it`]).
    pub partial_images: usize,
    /// Where progress and the images go.
    pub events: UnboundedSender<ImageEvent>,
    /// Set when the client has gone.
    pub cancel: CancelFlag,
}

/// What the model thread reports about an image job.
#[derive(Debug)]
pub enum ImageEvent {
    /// `step` of `total` codes drawn.
    Progress {
        /// Steps done.
        step: usize,
        /// Steps in all.
        total: usize,
    },
    /// A preview: the request's images decoded from the codes drawn by `step`, the rest
    /// filled in.
    Partial {
        /// Steps done when it was taken.
        step: usize,
        /// Steps in all.
        total: usize,
        /// One image per image of the request.
        images: Vec<image::RgbImage>,
    },
    /// The decoded images.
    Done(Vec<image::RgbImage>),
    /// The job failed.
    Failed(ServerError),
}

/// Work for the model thread.
#[derive(Debug)]
pub enum Job {
    /// A chat completion.
    Chat(ChatJob),
    /// A text-to-image request.
    Image(ImageJob),
}

impl Job {
    pub(crate) fn kind(&self) -> JobKind {
        match self {
            Job::Chat(_) => JobKind::Chat,
            Job::Image(_) => JobKind::Image,
        }
    }

    /// Whether nobody waits for the result any more.
    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            Job::Chat(j) => j.cancel.load(Ordering::Relaxed) || j.events.is_closed(),
            Job::Image(j) => j.is_abandoned(),
        }
    }

    pub(crate) fn fail(self, e: ServerError) {
        // A client that has gone does not need to hear it.
        let _ = match self {
            Job::Chat(j) => j.events.send(ChatEvent::Failed(e)).is_ok(),
            Job::Image(j) => j.events.send(ImageEvent::Failed(e)).is_ok(),
        };
    }
}

impl ImageJob {
    /// Whether nobody waits for the images any more.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

/// Runs model code, turning its errors and panics into [`ServerError`]s so one bad job
/// cannot take the model (or decode) thread down.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> janus::Result<T>) -> Result<T, ServerError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(ServerError::from),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(ServerError::Internal(format!("the model panicked: {msg}")))
        }
    }
}
