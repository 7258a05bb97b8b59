//! Prometheus metrics, written out by hand in the text exposition format (version 0.0.4).
//!
//! A dozen counters and gauges do not need a metrics library: atomics and one small map
//! keep the dependency tree small and the output exactly as documented here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// The two kinds of model work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Chat completions (understanding).
    Chat,
    /// Image generation.
    Image,
}

impl JobKind {
    fn label(self) -> &'static str {
        match self {
            JobKind::Chat => "chat",
            JobKind::Image => "image",
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// It ran to the end.
    Completed,
    /// Its client went away or the server stopped it.
    Cancelled,
    /// It failed.
    Failed,
}

impl JobOutcome {
    fn label(self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Cancelled => "cancelled",
            JobOutcome::Failed => "failed",
        }
    }
}

/// An f64 that only grows, updated without a lock.
#[derive(Debug, Default)]
struct F64Counter(AtomicU64);

impl F64Counter {
    fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Every metric the server exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (route, status) -> requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// (kind, outcome) -> jobs.
    jobs: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    decode_seconds: F64Counter,
    text_rate: F64Counter,
    image_steps: AtomicU64,
    image_tokens: AtomicU64,
    image_seconds: F64Counter,
    image_rate: F64Counter,
    image_batches: AtomicU64,
    images: AtomicU64,
    image_passes: AtomicU64,
    drafts_checked: AtomicU64,
    drafts_accepted: AtomicU64,
    decode_queue: AtomicI64,
    vq_images: AtomicU64,
    vq_seconds: F64Counter,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
    }

    /// Counts one finished job.
    pub fn job(&self, kind: JobKind, outcome: JobOutcome) {
        if let Ok(mut m) = self.jobs.lock() {
            *m.entry((kind.label(), outcome.label())).or_default() += 1;
        }
    }

    /// Records an understanding run: its prompt and generated tokens and the seconds its
    /// decoding loop took.
    pub fn text(&self, prompt_tokens: usize, completion_tokens: usize, decode_s: f64) {
        self.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion_tokens as u64, Ordering::Relaxed);
        self.decode_seconds.add(decode_s);
        if decode_s > 0.0 && completion_tokens > 0 {
            self.text_rate.set(completion_tokens as f64 / decode_s);
        }
    }

    /// Records a text-to-image batch: loop steps run, codes drawn (steps x images still
    /// going) and seconds of sampling.
    pub fn image_batch(&self, images: usize, steps: usize, codes: usize, seconds: f64) {
        self.image_batches.fetch_add(1, Ordering::Relaxed);
        self.images.fetch_add(images as u64, Ordering::Relaxed);
        self.image_steps.fetch_add(steps as u64, Ordering::Relaxed);
        self.image_tokens.fetch_add(codes as u64, Ordering::Relaxed);
        self.image_seconds.add(seconds);
        if seconds > 0.0 && steps > 0 {
            self.image_rate.set(steps as f64 / seconds);
        }
    }

    /// Records a text-to-image batch's forward passes (its prompt's included) and the
    /// speculative drafts it checked and accepted (none in plain decoding).
    pub fn image_passes(&self, passes: usize, checked: u64, accepted: u64) {
        self.image_passes
            .fetch_add(passes as u64, Ordering::Relaxed);
        self.drafts_checked.fetch_add(checked, Ordering::Relaxed);
        self.drafts_accepted.fetch_add(accepted, Ordering::Relaxed);
    }

    /// Adds `images` (negative: takes them away) to the images waiting for the VQ decoder.
    pub fn decode_queue(&self, images: i64) {
        self.decode_queue.fetch_add(images, Ordering::Relaxed);
    }

    /// Records one VQ decoder run: images decoded and its seconds.
    pub fn vq_decode(&self, images: usize, seconds: f64) {
        self.vq_images.fetch_add(images as u64, Ordering::Relaxed);
        self.vq_seconds.add(seconds);
    }

    /// Mean seconds the VQ decoder has taken per image; `None` before its first run.
    pub fn vq_seconds_per_image(&self) -> Option<f64> {
        let n = self.vq_images.load(Ordering::Relaxed);
        (n > 0).then(|| self.vq_seconds.get() / n as f64)
    }

    /// Generated text tokens so far.
    pub fn completion_tokens(&self) -> u64 {
        self.completion_tokens.load(Ordering::Relaxed)
    }

    /// The exposition text, with the queue depth read now.
    pub fn render(&self, queue_depth: usize, queue_capacity: usize) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "janus_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), v) in m.iter() {
                let route = escape(route);
                let _ = writeln!(
                    out,
                    "janus_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {v}"
                );
            }
        }
        header(
            &mut out,
            "janus_jobs_total",
            "counter",
            "Model jobs finished, by kind and outcome.",
        );
        if let Ok(m) = self.jobs.lock() {
            for ((kind, outcome), v) in m.iter() {
                let _ = writeln!(
                    out,
                    "janus_jobs_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {v}"
                );
            }
        }
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        for (name, kind, help, v) in [
            (
                "janus_queue_depth",
                "gauge",
                "Requests waiting for the model.",
                queue_depth.to_string(),
            ),
            (
                "janus_queue_capacity",
                "gauge",
                "Requests that may wait for the model (--max-queue).",
                queue_capacity.to_string(),
            ),
            (
                "janus_prompt_tokens_total",
                "counter",
                "Prompt tokens of chat completions (image tokens included).",
                load(&self.prompt_tokens),
            ),
            (
                "janus_completion_tokens_total",
                "counter",
                "Text tokens generated.",
                load(&self.completion_tokens),
            ),
            (
                "janus_text_decode_seconds_total",
                "counter",
                "Seconds spent generating text tokens (after the prompt).",
                self.decode_seconds.get().to_string(),
            ),
            (
                "janus_text_tokens_per_second",
                "gauge",
                "Text tokens per second of the last chat completion.",
                self.text_rate.get().to_string(),
            ),
            (
                "janus_image_batches_total",
                "counter",
                "Text-to-image batches run.",
                load(&self.image_batches),
            ),
            (
                "janus_images_total",
                "counter",
                "Images started in text-to-image batches.",
                load(&self.images),
            ),
            (
                "janus_image_steps_total",
                "counter",
                "Text-to-image sampling steps (each draws one code for every image of its batch).",
                load(&self.image_steps),
            ),
            (
                "janus_image_tokens_total",
                "counter",
                "Image codes drawn.",
                load(&self.image_tokens),
            ),
            (
                "janus_image_passes_total",
                "counter",
                "Forward passes of text-to-image batches (prefills included); with speculative decoding a pass draws several codes.",
                load(&self.image_passes),
            ),
            (
                "janus_image_drafts_checked_total",
                "counter",
                "Speculative drafts checked.",
                load(&self.drafts_checked),
            ),
            (
                "janus_image_drafts_accepted_total",
                "counter",
                "Speculative drafts accepted.",
                load(&self.drafts_accepted),
            ),
            (
                "janus_image_seconds_total",
                "counter",
                "Seconds spent sampling image codes.",
                self.image_seconds.get().to_string(),
            ),
            (
                "janus_image_steps_per_second",
                "gauge",
                "Sampling steps per second of the last text-to-image batch.",
                self.image_rate.get().to_string(),
            ),
            (
                "janus_decode_queue_images",
                "gauge",
                "Sampled images waiting for the VQ decoder.",
                self.decode_queue.load(Ordering::Relaxed).max(0).to_string(),
            ),
            (
                "janus_vq_decoded_images_total",
                "counter",
                "Images decoded from their codes by the VQ decoder.",
                load(&self.vq_images),
            ),
            (
                "janus_vq_decode_seconds_total",
                "counter",
                "Seconds spent in the VQ decoder.",
                self.vq_seconds.get().to_string(),
            ),
        ] {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families() {
        let m = Metrics::default();
        m.request("/v1/models", 200);
        m.request("/v1/models", 200);
        m.request("a\"b", 404);
        m.job(JobKind::Chat, JobOutcome::Cancelled);
        m.text(10, 4, 0.5);
        m.image_batch(2, 576, 1152, 2.0);
        m.image_passes(200, 900, 500);
        m.decode_queue(3);
        m.decode_queue(-1);
        assert_eq!(m.vq_seconds_per_image(), None);
        m.vq_decode(2, 0.5);
        assert_eq!(m.vq_seconds_per_image(), Some(0.25));
        let t = m.render(3, 16);
        assert!(t.contains("janus_http_requests_total{route=\"/v1/models\",status=\"200\"} 2\n"));
        assert!(t.contains("janus_http_requests_total{route=\"a\\\"b\",status=\"404\"} 1\n"));
        assert!(t.contains("janus_queue_depth 3\n"));
        assert!(t.contains("janus_jobs_total{kind=\"chat\",outcome=\"cancelled\"} 1\n"));
        assert!(t.contains("janus_text_tokens_per_second 8\n"));
        assert!(t.contains("janus_image_steps_per_second 288\n"));
        assert!(
            t.contains("# TYPE janus_image_tokens_total counter\njanus_image_tokens_total 1152\n")
        );
        assert!(t.contains("janus_image_passes_total 200\n"));
        assert!(t.contains("janus_image_drafts_checked_total 900\n"));
        assert!(t.contains("janus_image_drafts_accepted_total 500\n"));
        assert!(t.contains("janus_decode_queue_images 2\n"));
        assert!(t.contains("janus_vq_decoded_images_total 2\n"));
        assert!(t.contains("janus_vq_decode_seconds_total 0.5\n"));
    }
}
