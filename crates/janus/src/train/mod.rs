//! Training: the three-stage recipes of Janus and Janus-Pro (`janus train`).
//!
//! - [`recipe`]: the papers' hyperparameters per stage, as data, and overrides;
//! - [`parts`]: the trainable parts and which tensors belong to each;
//! - [`data`]: the manifest and its JSONL records; [`check`]: `janus data check`;
//! - [`sample`]: records to token ids, image positions and supervised targets;
//! - [`codes`]: VQ codes of text-to-image images, cached on disk;
//! - [`params`]: the model with its trainable tensors as variables (f32 masters);
//! - [`loss`]: the forward of a mixed micro-batch, its cross-entropy and its backward
//!   (optionally recomputing each decoder layer);
//! - [`memory`]: what a run will need, estimated before it starts;
//! - [`optim`]: AdamW, gradient clipping and the learning-rate schedules;
//! - [`checkpoint`]: atomic checkpoints in the input's layout, and resuming;
//! - [`trainer`]: the loop; [`eval`]: held-out evaluation; [`metrics`]: `metrics.jsonl`;
//! - [`plot`]: loss curves to PNG;
//! - [`plan`]: what a run costs (samples, FLOPs, GPU-hours, price), before it runs.

mod atomic;
pub mod check;
pub mod checkpoint;
pub mod codes;
pub mod data;
pub mod eval;
mod font;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod params;
pub mod parts;
pub mod plan;
pub mod plot;
pub mod recipe;
pub mod sample;
pub mod trainer;

pub use data::{Dataset, Kind, Record};
pub use metrics::{EvalMetrics, StepMetrics};
pub use parts::Part;
pub use recipe::{Overrides, Recipe, Schedule, TrainConfig};
pub use trainer::{RunEnd, RunSpec, Trainer};
