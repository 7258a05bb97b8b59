//! `--measure`: a few real steps of each planned stage on this machine, timed with the
//! trainer itself, and the stage's time here extrapolated from them.
//!
//! Each stage runs with its own trained parts (or LoRA adapters) and data ratio, at a
//! small batch that keeps the ratio exact (2:3:5 -> 10 samples), micro-batch 1, over the
//! user's manifest or a synthetic one (one checkerboard image, a caption, a short answer,
//! a paragraph of text). The steps run twice: untimed first (first use of every kernel, the
//! VQ codes of their images), then timed by the trainer's own step clock. Encoding one
//! text-to-image image to VQ codes is timed on its own: the trainer does it once per image
//! (then reads the codes from its cache), and on a CPU it can cost more than a training
//! sample. The stage's time here is then its samples x the measured seconds per sample,
//! plus the images it meets for the first time x the seconds per image: the samples timed
//! stand for the run's, so the extrapolation is as good as the data is representative
//! (the row length the estimate assumes does not enter).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::{Plan, StagePlan};
use crate::error::{Error, Result};
use crate::train::codes::CodeCache;
use crate::train::data::{Dataset, Kind, Record};
use crate::train::memory::{check_fits, PlanSettings};
use crate::train::recipe::TrainConfig;
use crate::train::trainer::{RunSpec, Trainer};
use crate::weights::lora::LoraSpec;

/// How to measure.
#[derive(Debug, Clone)]
pub struct MeasureOptions {
    /// The model to time (a local directory).
    pub model_dir: PathBuf,
    /// The data manifest (`None`: synthetic samples).
    pub data: Option<PathBuf>,
    /// Steps timed (each run once untimed before).
    pub steps: u64,
    /// Samples per timed step (`None`: the smallest batch that keeps the ratio exact).
    pub batch_size: Option<u64>,
    /// Compute dtype (`f32`, `bf16`).
    pub dtype: String,
    /// LoRA adapters instead of the stage's parts.
    pub lora: Option<LoraSpec>,
    /// Bytes a step may use (`None`: no check).
    pub memory_limit: Option<u64>,
}

/// What the timed steps of one stage gave, and the stage's time here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// Samples per timed step.
    pub batch_size: u64,
    /// Steps timed.
    pub steps_timed: u64,
    /// Mean seconds per timed step.
    pub seconds_per_step: f64,
    /// Seconds per sample.
    pub seconds_per_sample: f64,
    /// Positions per sample in the timed steps.
    pub positions_per_sample: f64,
    /// Positions per second.
    pub tokens_per_second: f64,
    /// Seconds to encode one text-to-image image to VQ codes (stages with such data).
    pub seconds_per_image: Option<f64>,
    /// Images the stage encodes (met for the first time).
    pub images_encoded: u64,
    /// The manifest timed, or `synthetic`.
    pub data: String,
    /// The stage's samples x seconds per sample + images encoded x seconds per image,
    /// in hours.
    pub hours: f64,
}

/// The smallest batch whose split by `ratio` is the ratio itself (2:3:5 -> 10).
pub fn ratio_unit(ratio: [u32; 3]) -> u64 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = ratio.iter().fold(0, |g, &r| gcd(g, r)).max(1);
    ratio.iter().map(|&r| u64::from(r / g)).sum::<u64>().max(1)
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("janus-plan-measure-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a manifest of one sample of each kind into `dir`: a 384x384 checkerboard of
/// four colours, a caption, a short answer, a paragraph of text.
fn synthetic_data(dir: &Path) -> Result<PathBuf> {
    let image = image::RgbImage::from_fn(384, 384, |x, y| {
        const COLOURS: [[u8; 3]; 4] = [[200, 40, 40], [40, 160, 60], [40, 70, 200], [230, 200, 60]];
        image::Rgb(COLOURS[((x / 48 + y / 48) % 4) as usize])
    });
    let path = dir.join("board.png");
    image
        .save(&path)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
    let answer = "A checkerboard of red, green, blue and yellow squares, eight squares on a side, \
                  each colour repeating along the diagonals from the top left corner to the \
                  bottom right corner of the picture.";
    let text = "Training a model means showing it many examples and nudging its weights so \
                that it predicts each next token a little better. "
        .repeat(4);
    let files = [
        (
            "und.jsonl",
            serde_json::json!({"images": ["board.png"], "conversation": [
                {"role": "user", "content": "<image_placeholder>\nDescribe this picture."},
                {"role": "assistant", "content": answer}]}),
        ),
        ("text.jsonl", serde_json::json!({ "text": text })),
        (
            "t2i.jsonl",
            serde_json::json!({"image": "board.png",
                "caption": "A checkerboard of red, green, blue and yellow squares."}),
        ),
    ];
    for (name, record) in files {
        let p = dir.join(name);
        std::fs::write(&p, format!("{record}\n")).map_err(|e| Error::io(&p, e))?;
    }
    let manifest = dir.join("data.json");
    let text = r#"{"understanding": ["und.jsonl"], "text": ["text.jsonl"], "t2i": ["t2i.jsonl"]}"#;
    std::fs::write(&manifest, text).map_err(|e| Error::io(&manifest, e))?;
    Ok(manifest)
}

/// Times `o.steps` steps (after running them once untimed) of a stage run with
/// `config`'s parts and ratio, and the encoding of one image to codes; extrapolates to
/// `samples` samples of which `images` bring an image not encoded yet.
pub fn measure_stage(
    config: &TrainConfig,
    samples: u64,
    images: u64,
    o: &MeasureOptions,
) -> Result<Measurement> {
    if o.steps == 0 {
        return Err(Error::InvalidInput(
            "--measure-steps must be at least 1".into(),
        ));
    }
    let tmp = TempDir::new()?;
    let (data, label) = match &o.data {
        Some(d) => (d.clone(), d.display().to_string()),
        None => (synthetic_data(&tmp.0)?, "synthetic".to_string()),
    };
    let image = Dataset::load(&data)?
        .of(Kind::T2i)
        .iter()
        .find_map(|r| match &r.record {
            Record::T2i { image, .. } => Some(image.clone()),
            _ => None,
        });
    let batch = o.batch_size.unwrap_or_else(|| ratio_unit(config.ratio));
    let mut timed = config.clone();
    timed.steps = o.steps;
    timed.batch_size = batch;
    timed.micro_batch_size = 1;
    timed.save_every = 0;
    timed.eval_every = 0;
    timed.validate()?;
    let spec = RunSpec {
        model: o.model_dir.clone(),
        data,
        eval: None,
        dtype: o.dtype.clone(),
        vq_cache: Some(tmp.0.join("codes")),
        config: timed,
        lora: o.lora.clone(),
        checkpoint_layers: false,
        quant: None,
    };
    if let Some(limit) = o.memory_limit {
        let (cfg, store) = crate::weights::load_model_dir(&o.model_dir)?;
        check_fits(&cfg, &store, &PlanSettings::for_run(&spec)?, limit)?;
    }
    let mut trainer = Trainer::create(&tmp.0.join("run"), spec, &Device::Cpu)?;
    // An untimed pass over the same steps first: every kernel used once, and the VQ codes
    // of the timed samples' images cached, as they are after a real run's first epoch.
    for _ in 0..o.steps {
        trainer.step()?;
    }
    trainer.state.step = 0;
    let (mut seconds, mut tokens, mut done) = (0f64, 0u64, 0u64);
    for _ in 0..o.steps {
        let m = trainer.step()?;
        seconds += m.seconds;
        tokens += m.tokens;
        done += m.samples;
    }
    if done == 0 {
        return Err(Error::InvalidInput(
            "no sample of the measured steps could be used".into(),
        ));
    }
    let per_image = match image.filter(|_| config.ratio[Kind::T2i.index()] > 0) {
        Some(path) => {
            // A fresh in-memory cache: the trainer's already holds this image's codes.
            let size = trainer.model.cfg.gen_image_size();
            let mut cache = CodeCache::new(None, "measure", size)?;
            let start = Instant::now();
            cache.codes(&trainer.model.model, &path)?;
            Some(start.elapsed().as_secs_f64())
        }
        None => None,
    };
    let images = if per_image.is_some() { images } else { 0 };
    let per_sample = seconds / done as f64;
    Ok(Measurement {
        batch_size: batch,
        steps_timed: o.steps,
        seconds_per_step: seconds / o.steps as f64,
        seconds_per_sample: per_sample,
        positions_per_sample: tokens as f64 / done as f64,
        tokens_per_second: tokens as f64 / seconds.max(1e-12),
        seconds_per_image: per_image,
        images_encoded: images,
        data: label,
        hours: (samples as f64 * per_sample + images as f64 * per_image.unwrap_or(0.0)) / 3600.0,
    })
}

/// Measures every stage of `plan` (`on_stage` is told each stage's name as it starts)
/// and records the results in it.
///
/// Images encoded: with a known dataset, its text-to-image records, once, in the first
/// stage that has such samples (the code cache serves the later ones); without one,
/// every text-to-image sample is taken as a new image (data seen once, as in the papers).
pub fn measure(plan: &mut Plan, o: &MeasureOptions, mut on_stage: impl FnMut(&str)) -> Result<()> {
    let mut unseen = plan.dataset.map(|d| d.t2i);
    for stage in &mut plan.stages {
        on_stage(&stage.recipe);
        let t2i = stage.cost.samples_by_kind.t2i;
        let images = match &mut unseen {
            Some(n) if t2i > 0 => std::mem::take(n),
            Some(_) => 0,
            None => t2i,
        };
        let m = measure_stage(&stage.config, stage.cost.samples, images, o)
            .map_err(|e| Error::InvalidInput(format!("measuring {}: {e}", stage.recipe)))?;
        stage.measured = Some(m);
    }
    plan.measured_hours = Some(measured_hours(&plan.stages));
    Ok(())
}

fn measured_hours(stages: &[StagePlan]) -> f64 {
    stages
        .iter()
        .filter_map(|s| s.measured.as_ref())
        .map(|m| m.hours)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_unit_keeps_the_ratio() {
        assert_eq!(ratio_unit([2, 3, 5]), 10);
        assert_eq!(ratio_unit([1, 0, 3]), 4);
        assert_eq!(ratio_unit([2, 2, 2]), 3);
        assert_eq!(ratio_unit([7, 3, 10]), 20);
        assert_eq!(ratio_unit([0, 0, 4]), 1);
    }
}
