//! Sampling loops: understanding (text out) and text-to-image (codes out, then pixels).
//!
//! The loops take an explicit model and own their KV caches; nothing is global, so a
//! server can run several requests one after another on one model.

pub mod generate;
pub mod noise;
pub mod sampling;
pub mod speculative;
pub mod understand;
pub mod window;

pub use generate::{
    decode_codes, estimate_generate_bytes, estimate_generate_memory, generate_codes,
    generate_codes_batch, generate_codes_batch_with, to_rgb8, BatchItem, BatchProgress,
    GenerateOutput, GenerateParams, MemoryEstimate,
};
pub use sampling::{Sampler, SamplingParams};
pub use speculative::{Accept, DecodeStats, Speculative, Window};
pub use understand::{understand, Finish, UnderstandInput, UnderstandOutput, UnderstandParams};

/// Seconds spent per named stage, in the order the stages ran.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Timings(pub Vec<(String, f64)>);

impl Timings {
    /// Records (or adds to) a stage.
    pub fn push(&mut self, stage: &str, seconds: f64) {
        match self.0.iter_mut().find(|(s, _)| s == stage) {
            Some((_, t)) => *t += seconds,
            None => self.0.push((stage.to_string(), seconds)),
        }
    }

    /// Appends every stage of `other`.
    pub fn extend(&mut self, other: &Timings) {
        for (s, t) in &other.0 {
            self.push(s, *t);
        }
    }

    /// Seconds for a stage, if it ran.
    pub fn get(&self, stage: &str) -> Option<f64> {
        self.0.iter().find(|(s, _)| s == stage).map(|(_, t)| *t)
    }
}
