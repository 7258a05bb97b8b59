//! The decode stage: VQ-decodes the code grids the model thread has sampled, on a thread
//! of its own, so the model thread goes on to the next batch (or chat) at once.
//!
//! The VQ decoder costs far more than sampling on small models (on the tiny fixture about
//! three times an image's sampling; see docs/benchmarks.md), so decoding on the model thread
//! made every request queued behind an image batch wait for all of its images to decode.
//! Here the model thread hands each finished batch over and returns to the queue; the
//! decoder sends each request its images as soon as they are decoded (one VQ batch per
//! request), and PNG encoding happens on the request's own blocking task.
//!
//! Both threads run their tensor code on the same global rayon pool (one thread per core),
//! so running them at once never puts more compute threads on the cores than there are
//! cores: cores left idle by sampling's many small steps go to the decoder instead.
//!
//! The hand-over is bounded ([`DECODE_BACKLOG`] batches): when the decoder falls that far
//! behind, the model thread waits, the queue fills and new requests get 429 rather than an
//! ever longer wait. Partial-image previews ([`Preview`]) wait in the same place with a
//! lower priority: they never hold the model thread, only the latest one per request is
//! kept, and they are dropped once the request's final codes arrive.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::error::ServerError;
use crate::jobs::{catch_panic, CancelFlag, ImageEvent, ImageJob};
use crate::metrics::{JobKind, JobOutcome, Metrics};
use crate::served_model::ServedModel;

/// Sampled batches that may wait for the decoder while it decodes another.
pub const DECODE_BACKLOG: usize = 1;

/// One request's sampled codes, waiting to be decoded.
#[derive(Debug)]
pub struct DecodeJob {
    /// The request.
    pub job: ImageJob,
    /// P code grids, row-major.
    pub codes: Vec<Vec<u32>>,
}

/// A partial image of a request still being sampled: its code grids so far, with the
/// codes not drawn yet filled in ([`fill_partial_grid`]).
#[derive(Debug)]
pub struct Preview {
    /// Where the preview goes (and whether anyone still listens).
    pub events: tokio::sync::mpsc::UnboundedSender<ImageEvent>,
    /// The request's cancel flag; also tells requests apart.
    pub cancel: CancelFlag,
    /// Steps drawn when it was taken.
    pub step: usize,
    /// Steps in all.
    pub total: usize,
    /// P complete code grids.
    pub codes: Vec<Vec<u32>>,
}

impl Preview {
    fn is_for(&self, cancel: &CancelFlag) -> bool {
        Arc::ptr_eq(&self.cancel, cancel)
    }

    fn is_abandoned(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

/// Work for the decode thread.
#[derive(Debug)]
enum Work {
    Batch(Vec<DecodeJob>),
    Preview(Preview),
}

/// Batches and previews waiting for the decode thread.
#[derive(Debug, Default)]
pub struct DecodeQueue {
    state: Mutex<DecodeState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct DecodeState {
    batches: VecDeque<Vec<DecodeJob>>,
    previews: VecDeque<Preview>,
    closed: bool,
}

impl DecodeQueue {
    /// An empty, open queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DecodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a sampled batch over, waiting while [`DECODE_BACKLOG`] batches already wait.
    /// Previews of its requests are dropped: the real images are coming.
    pub fn push_batch(&self, batch: Vec<DecodeJob>) {
        let mut s = self.lock();
        while s.batches.len() >= DECODE_BACKLOG && !s.closed {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.previews
            .retain(|p| !batch.iter().any(|d| p.is_for(&d.job.cancel)));
        s.batches.push_back(batch);
        drop(s);
        self.changed.notify_all();
    }

    /// Queues a preview without waiting; it replaces the request's earlier preview if that
    /// one has not started decoding.
    pub fn push_preview(&self, preview: Preview) {
        let mut s = self.lock();
        s.previews.retain(|p| !p.is_for(&preview.cancel));
        s.previews.push_back(preview);
        drop(s);
        self.changed.notify_all();
    }

    /// Whether neither batches nor previews wait (the decoder may still be busy).
    pub fn is_idle(&self) -> bool {
        let s = self.lock();
        s.batches.is_empty() && s.previews.is_empty()
    }

    /// No more work will come: the decode thread ends once what waits is done.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// The next work, batches first; `None` once closed and empty.
    fn next(&self) -> Option<Work> {
        let mut s = self.lock();
        loop {
            if let Some(b) = s.batches.pop_front() {
                drop(s);
                self.changed.notify_all();
                return Some(Work::Batch(b));
            }
            if let Some(p) = s.previews.pop_front() {
                return Some(Work::Preview(p));
            }
            if s.closed {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Closes the queue when dropped: held by the model thread, so that however it ends the
/// decode thread ends too.
#[derive(Debug)]
pub struct CloseOnDrop(pub Arc<DecodeQueue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Fills the codes not drawn yet in a partial `grid` x `grid` code grid (row-major), so
/// that it decodes to a whole image: the rest of the current row comes from the row above,
/// the rows below repeat the last row. The decoded preview shows the finished rows as they
/// will be (up to the decoder's receptive field) and smears them downwards.
pub fn fill_partial_grid(drawn: &[u32], grid: usize) -> Vec<u32> {
    let n = grid * grid;
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(&drawn[..drawn.len().min(n)]);
    if out.is_empty() {
        return out;
    }
    while out.len() < n {
        // Before the first row is complete there is no row above: repeat what is drawn.
        let from = if out.len() >= grid {
            out.len() - grid
        } else {
            out.len() % drawn.len()
        };
        out.push(out[from]);
    }
    out
}

/// Decodes until the queue is closed and empty. Requests whose clients left are skipped;
/// `abort` fails the rest with 503.
pub fn run<B: ServedModel>(
    model: Arc<B>,
    queue: Arc<DecodeQueue>,
    metrics: Arc<Metrics>,
    abort: CancelFlag,
) {
    while let Some(work) = queue.next() {
        match work {
            Work::Batch(batch) => {
                for job in batch {
                    decode_job(&*model, job, &metrics, &abort);
                }
            }
            Work::Preview(p) => {
                if abort.load(Ordering::Relaxed) || p.is_abandoned() {
                    continue;
                }
                let t0 = Instant::now();
                let result = catch_panic(|| model.decode_images(&p.codes));
                metrics.vq_decode(p.codes.len(), t0.elapsed().as_secs_f64());
                match result {
                    Ok(images) => {
                        let _ = p.events.send(ImageEvent::Partial {
                            step: p.step,
                            total: p.total,
                            images,
                        });
                    }
                    // The final decode will report the problem if there is one.
                    Err(e) => tracing::warn!("a preview failed to decode: {e}"),
                }
            }
        }
    }
}

fn decode_job<B: ServedModel>(model: &B, d: DecodeJob, metrics: &Metrics, abort: &CancelFlag) {
    let DecodeJob { job, codes } = d;
    metrics.decode_queue(-(codes.len() as i64));
    if abort.load(Ordering::Relaxed) {
        metrics.job(JobKind::Image, JobOutcome::Cancelled);
        let _ = job
            .events
            .send(ImageEvent::Failed(ServerError::ShuttingDown));
        return;
    }
    if job.is_abandoned() {
        metrics.job(JobKind::Image, JobOutcome::Cancelled);
        return;
    }
    let t0 = Instant::now();
    let result = catch_panic(|| model.decode_images(&codes));
    metrics.vq_decode(codes.len(), t0.elapsed().as_secs_f64());
    match result {
        Ok(images) => {
            metrics.job(JobKind::Image, JobOutcome::Completed);
            let _ = job.events.send(ImageEvent::Done(images));
        }
        Err(e) => {
            metrics.job(JobKind::Image, JobOutcome::Failed);
            let _ = job.events.send(ImageEvent::Failed(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus::engine::{BatchItem, GenerateParams};
    use tokio::sync::mpsc::unbounded_channel;

    #[test]
    fn partial_grids_are_filled_from_above() {
        // 3x3 grid, 4 codes drawn: row 0 done, row 1 has one code.
        let got = fill_partial_grid(&[1, 2, 3, 4], 3);
        assert_eq!(got, [1, 2, 3, 4, 2, 3, 4, 2, 3]);
        assert_eq!(fill_partial_grid(&[5, 6], 3), [5, 6, 5, 5, 6, 5, 5, 6, 5]);
        let full: Vec<u32> = (0..9).collect();
        assert_eq!(fill_partial_grid(&full, 3), full);
        assert!(fill_partial_grid(&[], 3).is_empty());
    }

    fn job(cancel: &CancelFlag) -> DecodeJob {
        let (tx, _rx) = unbounded_channel();
        DecodeJob {
            job: ImageJob {
                item: BatchItem {
                    cond_ids: vec![1],
                    uncond_ids: vec![1],
                    params: GenerateParams::default(),
                },
                partial_images: 0,
                events: tx,
                cancel: cancel.clone(),
            },
            codes: vec![vec![0]],
        }
    }

    fn preview(cancel: &CancelFlag, step: usize) -> Preview {
        let (events, _rx) = unbounded_channel();
        Preview {
            events,
            cancel: cancel.clone(),
            step,
            total: 2,
            codes: vec![vec![0]],
        }
    }

    /// Batches go before previews; a newer preview replaces a waiting one of the same
    /// request; a request's final batch drops its waiting preview.
    #[test]
    fn batches_first_and_stale_previews_dropped() {
        let q = DecodeQueue::new();
        let (a, b) = (CancelFlag::default(), CancelFlag::default());
        q.push_preview(preview(&a, 0));
        q.push_preview(preview(&b, 0));
        q.push_preview(preview(&a, 1));
        q.push_batch(vec![job(&b)]);
        assert!(matches!(q.next(), Some(Work::Batch(_))));
        match q.next() {
            Some(Work::Preview(p)) => assert!(p.is_for(&a) && p.step == 1),
            other => panic!("{other:?}"),
        }
        assert!(q.is_idle());
        q.close();
        assert!(q.next().is_none());
    }

    /// The hand-over holds the model thread only while DECODE_BACKLOG batches wait.
    #[test]
    fn backlog_is_bounded() {
        let q = Arc::new(DecodeQueue::new());
        let c = CancelFlag::default();
        for _ in 0..DECODE_BACKLOG {
            q.push_batch(vec![job(&c)]);
        }
        let pusher = {
            let (q, c) = (q.clone(), c.clone());
            std::thread::spawn(move || q.push_batch(vec![job(&c)]))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!pusher.is_finished(), "pushed past the backlog");
        assert!(matches!(q.next(), Some(Work::Batch(_))));
        pusher.join().unwrap();
        assert_eq!(q.lock().batches.len(), DECODE_BACKLOG);
    }
}
