//! Held-out evaluation: the loss over every held-out sample (captions kept, no cuts),
//! the share of image codes the model predicts exactly (teacher-forced argmax), and for
//! understanding the share of answers that greedy decoding reproduces exactly.

use std::ops::ControlFlow;

use super::data::{Dataset, Kind, Record};
use super::loss::micro_batch_loss;
use super::metrics::EvalMetrics;
use super::sample::TrainSample;
use super::sample::{understanding_ids, SampleDraws};
use crate::engine::{understand, SamplingParams, UnderstandInput, UnderstandParams};
use crate::error::Result;
use crate::model::Janus;
use crate::processor::{load_image, to_tensor, ImageProcessorConfig, JanusTokenizer};

/// What evaluation needs from a run (the trainer implements it).
pub trait EvalModel {
    /// The model being trained.
    fn model(&self) -> &Janus;
    /// The run's tokenizer.
    fn tokenizer(&self) -> &JanusTokenizer;
    /// The understanding images' preprocessing.
    fn image_processor(&self) -> &ImageProcessorConfig;
    /// `rec` as a sample, the way training builds it.
    fn sample(&mut self, rec: &Record, draws: SampleDraws) -> Result<TrainSample>;
}

/// Evaluates `run`'s model on `data` after step `step`; bad samples are skipped with a
/// warning.
pub fn evaluate(run: &mut impl EvalModel, data: &Dataset, step: u64) -> Result<EvalMetrics> {
    let keep = SampleDraws {
        drop_caption: false,
        first_sentence: false,
    };
    let mut by_kind = [(0f64, 0usize); 3];
    let mut correct = [0usize; 3];
    let mut samples = 0u64;
    let (mut answers, mut right) = (0usize, 0usize);
    for kind in Kind::ALL {
        for rec in data.of(kind) {
            let sample = match run.sample(&rec.record, keep) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("skipping held-out sample {}: {e}", rec.origin());
                    continue;
                }
            };
            let ml = micro_batch_loss(run.model(), &[&sample])?;
            for i in 0..3 {
                by_kind[i].0 += ml.by_kind[i].0;
                by_kind[i].1 += ml.by_kind[i].1;
                correct[i] += ml.correct[i];
            }
            samples += 1;
            if let Record::Understanding { images, messages } = &rec.record {
                answers += 1;
                right += usize::from(greedy_matches(run, images, messages)?);
            }
        }
    }
    let n: usize = by_kind.iter().map(|k| k.1).sum();
    let mean = |k: Kind| {
        let (s, c) = by_kind[k.index()];
        (c > 0).then(|| s / c as f64)
    };
    let t2i = by_kind[Kind::T2i.index()].1;
    Ok(EvalMetrics {
        eval: true,
        step,
        loss: by_kind.iter().map(|k| k.0).sum::<f64>() / n.max(1) as f64,
        loss_understanding: mean(Kind::Understanding),
        loss_text: mean(Kind::Text),
        loss_t2i: mean(Kind::T2i),
        accuracy: (answers > 0).then(|| right as f64 / answers as f64),
        t2i_code_accuracy: (t2i > 0).then(|| correct[Kind::T2i.index()] as f64 / t2i as f64),
        samples,
    })
}

/// Whether greedy decoding of the conversation's last answer reproduces it exactly
/// (compared after trimming whitespace).
fn greedy_matches(
    run: &impl EvalModel,
    images: &[std::path::PathBuf],
    messages: &[(crate::processor::Role, String)],
) -> Result<bool> {
    let model = run.model();
    let tok = run.tokenizer();
    let n = model.config().vision.num_image_tokens();
    let prompt = understanding_ids(tok, messages, images.len(), n, true)?;
    let proc = run.image_processor();
    let pixel_values = if images.is_empty() {
        None
    } else {
        let side = proc.image_size as usize;
        let px = images
            .iter()
            .map(|p| to_tensor(&proc.preprocess(&load_image(p)?)?, side, model.device()))
            .collect::<Result<Vec<_>>>()?;
        Some(candle_core::Tensor::stack(&px, 0)?)
    };
    let want = messages
        .last()
        .map(|m| m.1.trim().to_string())
        .unwrap_or_default();
    let want_len = tok.encode(&want)?.len();
    let params = UnderstandParams {
        sampling: SamplingParams::default(),
        max_new_tokens: want_len + 4,
        eos_token_id: tok.special().eos,
    };
    let input = UnderstandInput {
        input_ids: prompt.ids,
        image_spans: prompt.spans,
        pixel_values,
    };
    let out = understand(model, &input, &params, |_| ControlFlow::Continue(()))?;
    let got = tok.decode(&out.token_ids, true)?;
    Ok(got.trim() == want)
}
