//! What a plan gives: per stage and in total the samples, tokens, FLOPs, hours and cost,
//! each stage's shares, and the paper's figure beside the estimate.

use serde::Serialize;

use super::flops::RowShape;
use super::measure::Measurement;
use super::reported::Reported;
use super::sizes::PartParams;
use crate::train::recipe::TrainConfig;

/// Samples per kind of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ByKind {
    /// Understanding samples.
    pub understanding: u64,
    /// Pure-text samples.
    pub text: u64,
    /// Text-to-image samples.
    pub t2i: u64,
}

impl ByKind {
    pub(super) fn from(a: [u64; 3]) -> Self {
        ByKind {
            understanding: a[0],
            text: a[1],
            t2i: a[2],
        }
    }

    pub(super) fn add(&mut self, o: &ByKind) {
        self.understanding += o.understanding;
        self.text += o.text;
        self.t2i += o.t2i;
    }
}

/// A stage's part of the run, as fractions of the total.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Shares {
    /// By samples.
    pub samples: f64,
    /// By training FLOPs.
    pub flops: f64,
    /// By estimated cost.
    pub cost: f64,
}

/// What a stage (or the whole run) needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Cost {
    /// Samples (batch rows).
    pub samples: u64,
    /// Samples per kind.
    pub samples_by_kind: ByKind,
    /// Positions through the LLM.
    pub tokens: u64,
    /// Training FLOPs.
    pub flops: f64,
    /// GPU-hours at the assumed peak and MFU.
    pub gpu_hours: f64,
    /// Hours on the assumed number of GPUs.
    pub wall_hours: f64,
    /// USD at the assumed price.
    pub cost: f64,
}

impl Cost {
    pub(super) fn add(&mut self, o: &Cost) {
        self.samples += o.samples;
        self.samples_by_kind.add(&o.samples_by_kind);
        self.tokens += o.tokens;
        self.flops += o.flops;
        self.gpu_hours += o.gpu_hours;
        self.wall_hours += o.wall_hours;
        self.cost += o.cost;
    }
}

/// One stage of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagePlan {
    /// The recipe's name (`janus-pro/stage2`).
    pub recipe: String,
    /// Optimiser steps assumed.
    pub steps: u64,
    /// Where the step count comes from.
    pub steps_from: String,
    /// Samples per step.
    pub batch_size: u64,
    /// Understanding : text : text-to-image.
    pub ratio: [u32; 3],
    /// What trains (part names, or the LoRA adapters).
    pub trained: Vec<String>,
    /// Parameters that train.
    pub trained_parameters: u64,
    /// Samples, tokens, FLOPs, hours and cost.
    #[serde(flatten)]
    pub cost: Cost,
    /// This stage's part of the whole run.
    pub share: Shares,
    /// Remarks on the assumptions (the papers' runs, 7B step counts).
    pub notes: Vec<String>,
    /// Time on this machine, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measurement>,
    /// The values in force, for `--measure`.
    #[serde(skip)]
    pub config: TrainConfig,
}

/// The paper's figure beside the estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The paper's figure.
    #[serde(flatten)]
    pub reported: Reported,
    /// GPUs of the reported run.
    pub gpus: u64,
    /// days x nodes x 8 x 24.
    pub gpu_hours: u64,
    /// The reported run's GPU (A100-40GB).
    pub gpu: String,
    /// USD per A100-hour applied to it.
    pub price: f64,
    /// gpu_hours x price.
    pub cost: f64,
    /// The plan's FLOPs over the reported GPU-hours at the A100's peak.
    pub implied_mfu: f64,
}

/// The model as the plan counts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSummary {
    /// What the model is.
    pub label: String,
    /// Every parameter but the VQ model's.
    pub parameters: u64,
    /// Per part.
    pub parts: Vec<PartParams>,
}

/// The hardware as the plan assumes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HardwareSummary {
    /// The GPU's table name.
    pub gpu: String,
    /// Its full name.
    pub label: String,
    /// Peak dense bf16 TFLOP/s.
    pub peak_bf16_tflops: f64,
    /// GPUs.
    pub gpus: u64,
    /// USD per GPU-hour.
    pub price_per_hour: f64,
    /// MFU assumed.
    pub mfu: f64,
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The recipe asked for.
    pub recipe: String,
    /// The model.
    pub model: ModelSummary,
    /// Positions per batch row.
    pub tokens_per_sample: RowShape,
    /// The hardware.
    pub hardware: HardwareSummary,
    /// Per stage.
    pub stages: Vec<StagePlan>,
    /// All stages together.
    pub total: Cost,
    /// The paper's figure, when it reports this run (whole runs only).
    pub reported: Option<Comparison>,
    /// The user's dataset, records per kind, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset: Option<ByKind>,
    /// Hours on this machine, all stages, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measured_hours: Option<f64>,
}
