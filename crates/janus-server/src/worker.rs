//! The model thread and the bounded queue in front of it.
//!
//! One `std::thread` runs the model one job at a time. Requests reach it as [`Job`]s
//! through a [`Queue`] of at most `--max-queue` waiting jobs, and hear back through a
//! channel per job. When the thread picks an image job it also takes the image jobs
//! waiting behind it, up to [`MAX_BATCH_IMAGES`] images that fit in memory, and samples
//! them as one CFG batch; it then hands the codes to the decode stage ([`crate::decode`])
//! and goes back to the queue. Every callback checks whether the job's client is still
//! there (its channel is open and its cancel flag unset) and whether the server is
//! aborting, and stops the job when not.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use janus::engine::{BatchItem, BatchProgress, Finish};

use crate::decode::{fill_partial_grid, DecodeJob, DecodeQueue, Preview};
use crate::error::ServerError;
use crate::jobs::{
    catch_panic, CancelFlag, ChatEvent, ChatJob, ImageEvent, ImageJob, Job, MAX_BATCH_IMAGES,
};
use crate::metrics::{JobKind, JobOutcome, Metrics};
use crate::served_model::ServedModel;
use crate::stop::StopFilter;

/// Shortest interval between two progress events of one image job (at most 20 a second).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// The bounded queue of jobs waiting for the model thread.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    capacity: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    /// A queue holding at most `capacity` waiting jobs.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding the lock leaves the queue itself consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job, or refuses it when the queue is full or closed.
    pub fn push(&self, job: Job) -> Result<(), ServerError> {
        let mut s = self.lock();
        if s.closed {
            return Err(ServerError::ShuttingDown);
        }
        // Jobs whose clients left make room (the model thread skips and counts them).
        if s.jobs.iter().filter(|j| !j.is_abandoned()).count() >= self.capacity {
            return Err(ServerError::QueueFull { max: self.capacity });
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Jobs waiting whose clients are still there.
    pub fn len(&self) -> usize {
        self.lock()
            .jobs
            .iter()
            .filter(|j| !j.is_abandoned())
            .count()
    }

    /// Whether no job waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes no new jobs; the model thread ends once the waiting ones are done.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next job, waiting for one; `None` once the queue is closed and empty.
    fn next(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if let Some(job) = s.jobs.pop_front() {
                return Some(job);
            }
            if s.closed {
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Takes the waiting image jobs, in queue order, that `fits` accepts, up to the first
    /// waiting chat: jobs queued behind a chat stay behind it, so a batch never makes an
    /// earlier chat wait for later image requests. Other jobs stay in place.
    fn take_images(&self, mut fits: impl FnMut(&ImageJob) -> bool) -> Vec<ImageJob> {
        let mut s = self.lock();
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(s.jobs.len());
        let mut behind_chat = false;
        for job in s.jobs.drain(..) {
            match job {
                Job::Image(j) if !behind_chat && fits(&j) => taken.push(j),
                other => {
                    behind_chat |= matches!(other, Job::Chat(_)) && !other.is_abandoned();
                    kept.push_back(other)
                }
            }
        }
        s.jobs = kept;
        taken
    }
}

/// Runs jobs until the queue is closed and empty, handing sampled images to `decode`
/// (closed at the end, which lets the decode stage finish). `abort` stops the running job
/// and fails the waiting ones (the shutdown grace period is over).
pub fn run<B: ServedModel>(
    model: Arc<B>,
    queue: Arc<Queue>,
    decode: Arc<DecodeQueue>,
    metrics: Arc<Metrics>,
    abort: CancelFlag,
) {
    let w = Worker {
        model,
        queue,
        decode,
        metrics,
        abort,
    };
    while let Some(job) = w.queue.next() {
        if w.abort.load(Ordering::Relaxed) {
            w.metrics.job(job.kind(), JobOutcome::Cancelled);
            job.fail(ServerError::ShuttingDown);
            continue;
        }
        if job.is_abandoned() {
            w.metrics.job(job.kind(), JobOutcome::Cancelled);
            continue;
        }
        match job {
            Job::Chat(j) => w.chat(j),
            Job::Image(j) => {
                let batch = w.gather(j);
                w.images(batch);
            }
        }
    }
}

struct Worker<B> {
    model: Arc<B>,
    queue: Arc<Queue>,
    decode: Arc<DecodeQueue>,
    metrics: Arc<Metrics>,
    abort: CancelFlag,
}

impl<B: ServedModel> Worker<B> {
    fn aborting(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    fn chat(&self, job: ChatJob) {
        let mut filter = StopFilter::new(job.stop.clone());
        let mut cancelled = false;
        let result = catch_panic(|| {
            self.model
                .understand(&job.messages, &job.opts, &mut |piece| {
                    if filter.stopped() {
                        return ControlFlow::Break(());
                    }
                    if job.cancel.load(Ordering::Relaxed)
                        || job.events.is_closed()
                        || self.aborting()
                    {
                        cancelled = true;
                        return ControlFlow::Break(());
                    }
                    let text = filter.push(piece);
                    if !text.is_empty() {
                        let _ = job.events.send(ChatEvent::Text(text));
                    }
                    if filter.stopped() {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
        });
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                self.metrics.job(JobKind::Chat, JobOutcome::Failed);
                let _ = job.events.send(ChatEvent::Failed(e));
                return;
            }
        };
        let completion_tokens = r.token_ids.len();
        let decode_s = r.timings.get("decode_s").unwrap_or(0.0);
        self.metrics
            .text(r.prompt_tokens, completion_tokens, decode_s);
        if cancelled {
            self.metrics.job(JobKind::Chat, JobOutcome::Cancelled);
            if self.aborting() {
                let _ = job
                    .events
                    .send(ChatEvent::Failed(ServerError::ShuttingDown));
            }
            return;
        }
        if !filter.stopped() {
            let rest = filter.finish();
            if !rest.is_empty() {
                let _ = job.events.send(ChatEvent::Text(rest));
            }
        }
        let finish = if filter.stopped() || r.finish == Finish::Eos {
            "stop"
        } else {
            "length"
        };
        self.metrics.job(JobKind::Chat, JobOutcome::Completed);
        let _ = job.events.send(ChatEvent::Done {
            finish,
            prompt_tokens: r.prompt_tokens,
            completion_tokens,
        });
    }

    /// `first` and the waiting image jobs that join its batch.
    fn gather(&self, first: ImageJob) -> Vec<ImageJob> {
        let mut images = first.item.params.parallel;
        let mut longest = first.item.cond_ids.len();
        let mut batch = vec![first];
        let more = self.queue.take_images(|j| {
            let n = images + j.item.params.parallel;
            let len = longest.max(j.item.cond_ids.len());
            // One window per batch: a plain request would hold speculative ones back.
            if j.is_abandoned()
                || j.item.params.speculative != batch[0].item.params.speculative
                || n > MAX_BATCH_IMAGES
                || self.model.check_generate_memory(len, n).is_err()
            {
                return false;
            }
            images = n;
            longest = len;
            true
        });
        batch.extend(more);
        batch
    }

    fn images(&self, batch: Vec<ImageJob>) {
        let images: usize = batch.iter().map(|j| j.item.params.parallel).sum();
        let longest = batch.iter().map(|j| j.item.cond_ids.len()).max();
        if let Err(e) = self
            .model
            .check_generate_memory(longest.unwrap_or(0), images)
        {
            // Only a lone job gets here (a batch grows only while it fits).
            let msg = e.to_string();
            for j in batch {
                self.metrics.job(JobKind::Image, JobOutcome::Failed);
                let _ = j.events.send(ImageEvent::Failed(ServerError::Model(
                    janus::Error::InvalidInput(msg.clone()),
                )));
            }
            return;
        }
        let items: Vec<BatchItem> = batch.iter().map(|j| j.item.clone()).collect();
        let mut live = vec![true; batch.len()];
        let mut last_sent: Vec<Option<Instant>> = vec![None; batch.len()];
        // Per item, the next scheduled preview (sent or skipped).
        let mut next_preview = vec![0; batch.len()];
        let (mut steps, mut codes) = (0, 0);
        let t0 = Instant::now();
        let result = catch_panic(|| {
            self.model.generate_codes(&items, &mut |p: &BatchProgress| {
                let (done, total) = (p.done, p.total);
                // A speculative pass draws several codes per image.
                let drawn = done - steps;
                steps = done;
                let aborting = self.aborting();
                for (i, job) in batch.iter().enumerate() {
                    if !live[i] {
                        continue;
                    }
                    if aborting || job.is_abandoned() {
                        live[i] = false;
                        continue;
                    }
                    codes += job.item.params.parallel * drawn;
                    let due = last_sent[i].is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
                    if due || done == total {
                        let _ = job.events.send(ImageEvent::Progress { step: done, total });
                        last_sent[i] = Some(Instant::now());
                    }
                    let k = next_preview[i];
                    if k < job.partial_images && done >= preview_step(k, job.partial_images, total)
                    {
                        next_preview[i] += 1;
                        self.preview(job, p, i, t0.elapsed().as_secs_f64());
                    }
                }
                live.clone()
            })
        });
        self.metrics
            .image_batch(images, steps, codes, t0.elapsed().as_secs_f64());
        if let Ok(o) = &result {
            let checked = o.iter().map(|o| o.stats.slot_checked.iter().sum::<u64>());
            let accepted = o.iter().map(|o| o.stats.slot_accepted.iter().sum::<u64>());
            let passes = o.first().map_or(0, |o| o.stats.passes);
            self.metrics
                .image_passes(passes, checked.sum(), accepted.sum());
        }
        let outputs = match result {
            Ok(o) if o.len() == batch.len() => o,
            Ok(o) => {
                let e = ServerError::Internal(format!(
                    "the model returned {} results for a batch of {}",
                    o.len(),
                    batch.len()
                ));
                return self.fail_all(batch, &e);
            }
            Err(e) => return self.fail_all(batch, &e),
        };
        let mut sampled = Vec::with_capacity(batch.len());
        for ((job, out), live) in batch.into_iter().zip(outputs).zip(live) {
            if !live || out.finish == Finish::Cancelled {
                self.metrics.job(JobKind::Image, JobOutcome::Cancelled);
                if self.aborting() {
                    let _ = job
                        .events
                        .send(ImageEvent::Failed(ServerError::ShuttingDown));
                }
                continue;
            }
            self.metrics.decode_queue(out.codes.len() as i64);
            sampled.push(DecodeJob {
                job,
                codes: out.codes,
            });
        }
        if !sampled.is_empty() {
            // Waits while the decoder is DECODE_BACKLOG batches behind.
            self.decode.push_batch(sampled);
        }
    }

    /// Hands a preview of item `i` to the decoder, if it would arrive before the finished
    /// images ([`preview_worth_it`]).
    fn preview(&self, job: &ImageJob, p: &BatchProgress, i: usize, elapsed: f64) {
        let grid = (p.total as f64).sqrt().round() as usize;
        let drawn = &p.codes[i];
        if grid * grid != p.total || drawn.iter().any(|c| c.len() != p.done) {
            return;
        }
        let per_image = self.metrics.vq_seconds_per_image();
        let decode_s = per_image.map(|s| s * drawn.len() as f64);
        let remaining_s = elapsed / p.done as f64 * (p.total - p.done) as f64;
        if !preview_worth_it(decode_s, remaining_s) {
            return;
        }
        self.decode.push_preview(Preview {
            events: job.events.clone(),
            cancel: job.cancel.clone(),
            step: p.done,
            total: p.total,
            codes: drawn.iter().map(|c| fill_partial_grid(c, grid)).collect(),
        });
    }

    fn fail_all(&self, batch: Vec<ImageJob>, e: &ServerError) {
        for j in batch {
            self.metrics.job(JobKind::Image, JobOutcome::Failed);
            let _ = j
                .events
                .send(ImageEvent::Failed(ServerError::Internal(e.to_string())));
        }
    }
}

/// The step at which partial image `k` of `count` is taken: evenly spaced, the last one
/// before the end (3 of 576: steps 144, 288, 432).
pub fn preview_step(k: usize, count: usize, total: usize) -> usize {
    total * (k + 1) / (count + 1)
}

/// Whether a preview that takes `decode_s` seconds to decode (`None`: not measured yet)
/// is worth decoding when sampling needs `remaining_s` more: only if it arrives before
/// the finished images would. On a small model sampling is quick and the VQ decoder slow,
/// so previews would only delay the result; on a large one sampling takes minutes.
pub fn preview_worth_it(decode_s: Option<f64>, remaining_s: f64) -> bool {
    decode_s.is_none_or(|d| d < remaining_s)
}

#[cfg(test)]
mod queue_tests {
    use super::*;
    use janus::engine::GenerateParams;
    use janus::pipeline::UnderstandOptions;
    use tokio::sync::mpsc::unbounded_channel;

    fn image(tag: u32) -> (Job, tokio::sync::mpsc::UnboundedReceiver<ImageEvent>) {
        let (tx, rx) = unbounded_channel();
        let job = Job::Image(ImageJob {
            item: BatchItem {
                cond_ids: vec![tag],
                uncond_ids: vec![tag],
                params: GenerateParams::default(),
            },
            partial_images: 0,
            events: tx,
            cancel: CancelFlag::default(),
        });
        (job, rx)
    }

    fn chat() -> (Job, tokio::sync::mpsc::UnboundedReceiver<ChatEvent>) {
        let (tx, rx) = unbounded_channel();
        let job = Job::Chat(ChatJob {
            messages: Vec::new(),
            opts: UnderstandOptions::default(),
            stop: Vec::new(),
            events: tx,
            cancel: CancelFlag::default(),
        });
        (job, rx)
    }

    /// Image jobs waiting behind a chat are not pulled into a batch ahead of it.
    #[test]
    fn batches_do_not_overtake_waiting_chats() {
        let q = Queue::new(8);
        let (a, _ra) = image(1);
        let (b, _rb) = image(2);
        let (c, _rc) = chat();
        let (d, _rd) = image(3);
        for j in [a, b, c, d] {
            q.push(j).unwrap();
        }
        let taken: Vec<u32> = q
            .take_images(|_| true)
            .iter()
            .map(|j| j.item.cond_ids[0])
            .collect();
        assert_eq!(taken, vec![1, 2]);
        let left: Vec<JobKind> = q.lock().jobs.iter().map(Job::kind).collect();
        assert_eq!(left, vec![JobKind::Chat, JobKind::Image]);
    }

    #[test]
    fn previews_are_evenly_spaced_and_only_when_they_come_first() {
        let steps: Vec<usize> = (0..3).map(|k| preview_step(k, 3, 576)).collect();
        assert_eq!(steps, [144, 288, 432]);
        assert_eq!(preview_step(0, 1, 576), 288);
        assert!(preview_worth_it(None, 0.1));
        assert!(preview_worth_it(Some(2.0), 30.0));
        assert!(!preview_worth_it(Some(2.0), 0.5));
    }

    /// An abandoned chat does not hold the images behind it back.
    #[test]
    fn abandoned_chats_do_not_block_batching() {
        let q = Queue::new(8);
        let (c, rc) = chat();
        drop(rc);
        let (d, _rd) = image(3);
        q.push(c).unwrap();
        q.push(d).unwrap();
        assert_eq!(q.take_images(|_| true).len(), 1);
    }
}
