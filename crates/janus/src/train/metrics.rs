//! `RUN_DIR/metrics.jsonl`: one line per step (and one per evaluation), appended as the
//! run goes and cut back to the checkpoint's step when a run resumes, so a resumed run's
//! file equals the uninterrupted run's (but for the wall-clock `seconds`).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The metrics file in a run directory.
pub const FILE: &str = "metrics.jsonl";

/// What one optimiser step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Steps done, this one included.
    pub step: u64,
    /// Mean cross-entropy over every supervised token of the step.
    pub loss: f64,
    /// Mean over the understanding samples' tokens (`None`: none in the step).
    pub loss_understanding: Option<f64>,
    /// Mean over the pure-text samples' tokens.
    pub loss_text: Option<f64>,
    /// Mean over the text-to-image samples' codes.
    pub loss_t2i: Option<f64>,
    /// Learning rate used by this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Positions fed to the LLM.
    pub tokens: u64,
    /// Samples used.
    pub samples: u64,
    /// Samples skipped as bad since the run began.
    pub bad_samples: u64,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
    /// Peak resident memory of the process during the step, in bytes (Linux; `None`
    /// where the kernel does not report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss: Option<u64>,
    /// Ranks of a data-parallel job (`None`: one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<u64>,
    /// Seconds rank 0 spent in the gradient sum, waiting for slower ranks included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_seconds: Option<f64>,
}

impl StepMetrics {
    /// The JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Always true (tells evaluation lines from step lines).
    pub eval: bool,
    /// Steps done when it ran.
    pub step: u64,
    /// Mean cross-entropy over every held-out target.
    pub loss: f64,
    /// Per kind, as in [`StepMetrics`].
    pub loss_understanding: Option<f64>,
    /// Pure text.
    pub loss_text: Option<f64>,
    /// Text-to-image.
    pub loss_t2i: Option<f64>,
    /// Share of held-out understanding answers reproduced exactly by greedy decoding.
    pub accuracy: Option<f64>,
    /// Share of held-out image codes predicted exactly (argmax, teacher-forced).
    pub t2i_code_accuracy: Option<f64>,
    /// Samples evaluated.
    pub samples: u64,
}

impl EvalMetrics {
    /// The JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Appends one line.
pub fn append(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

/// Drops the lines of steps after `step` (a resumed run rewrites them), atomically.
pub fn truncate_after(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    super::atomic::write_file(path, kept.as_bytes())
}

/// Starts a new peak-memory window: the process's peak resident set (`VmHWM`) is reset to
/// its current size. Linux only; elsewhere (or where refused) a no-op.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak resident set since start or the last [`reset_peak_rss`], in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}
