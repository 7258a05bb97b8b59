//! Shared by the training tests: the fixture batch of `make_train_fixtures.py` built by
//! our code and checked against the golden, and trainers over the fixture data.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use janus::train::data::{Dataset, Kind};
use janus::train::recipe::{Overrides, Recipe, TrainConfig};
use janus::train::sample::{SampleDraws, TrainSample};
use janus::train::{RunSpec, Trainer};
use serde_json::Value;

#[path = "device.rs"]
mod device_under_test;
pub use device_under_test::device;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn golden(model: &str) -> (Value, HashMap<String, Tensor>) {
    let dir = root().join("fixtures/golden/train").join(model);
    let batch: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("batch.json")).unwrap()).unwrap();
    let grads =
        candle_core::safetensors::load(dir.join("grads.safetensors"), &Device::Cpu).unwrap();
    (batch, grads)
}

/// A trainer over the fixture data with `recipe`'s parts trainable.
pub fn trainer(model: &str, recipe: &str, tmp: &Path) -> Trainer {
    trainer_with(model, recipe, tmp, |_| {})
}

/// [`trainer`] with the run's settings changed by `edit` first.
pub fn trainer_with(
    model: &str,
    recipe: &str,
    tmp: &Path,
    edit: impl FnOnce(&mut RunSpec),
) -> Trainer {
    let recipe = Recipe::load(recipe).unwrap();
    let overrides = Overrides {
        batch_size: Some(6),
        micro_batch_size: Some(4),
        ..Default::default()
    };
    let config = TrainConfig::resolve(&recipe, &overrides, false).unwrap();
    let spec = RunSpec {
        model: root().join("fixtures/models").join(model),
        data: root().join("fixtures/train/data.json"),
        eval: None,
        dtype: "f32".into(),
        vq_cache: Some(tmp.join("cache")),
        config,
        lora: None,
        checkpoint_layers: false,
        quant: None,
    };
    let mut spec = spec;
    edit(&mut spec);
    let tag = if spec.lora.is_some() { "-lora" } else { "" };
    let tag = format!("{tag}{}", if spec.checkpoint_layers { "-ckpt" } else { "" });
    Trainer::create(
        &tmp.join(format!("run-{}{tag}", recipe.name.replace('/', "-"))),
        spec,
        device(),
    )
    .unwrap()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn pairs(v: &Value) -> Vec<(usize, u32)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_u64().unwrap() as usize,
                        p[1].as_u64().unwrap() as u32,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The fixture batch built by our code, checked sample by sample against the golden ids,
/// targets and codes (codes may differ only where the reference's nearest-code margin is a
/// float near-tie; the golden codes are then used so the gradients compare like with like).
pub fn batch(t: &mut Trainer, batch: &Value) -> Vec<TrainSample> {
    let data = Dataset::load(&root().join("fixtures/train/data.json")).unwrap();
    let records: Vec<_> = Kind::ALL
        .iter()
        .flat_map(|k| data.of(*k).iter().cloned())
        .collect();
    let samples = batch["samples"].as_array().unwrap();
    assert_eq!(records.len(), samples.len());
    let mut out = Vec::new();
    for (i, (rec, want)) in records.iter().zip(samples).enumerate() {
        let draws = SampleDraws {
            drop_caption: want["dropped"].as_bool().unwrap_or(false),
            first_sentence: false,
        };
        let mut s = t.build(&rec.record, draws).unwrap();
        assert_eq!(s.kind.key(), want["kind"].as_str().unwrap(), "sample {i}");
        assert_eq!(s.input_ids, ids(&want["input_ids"]), "sample {i} ids");
        assert_eq!(
            s.text_targets,
            pairs(&want["text_targets"]),
            "sample {i} text targets"
        );
        assert_eq!(
            s.len(),
            want["num_positions"].as_u64().unwrap() as usize,
            "sample {i}"
        );
        if s.kind == Kind::T2i {
            let codes = ids(&want["codes"]);
            let margins: Vec<f64> = want["vq_margins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_f64().unwrap())
                .collect();
            for (j, (a, b)) in s.codes.iter().zip(&codes).enumerate() {
                assert!(
                    a == b || margins[j] < 1e-4,
                    "sample {i} code {j}: {a} vs {b}"
                );
            }
            s.codes = codes.clone();
            for (t, c) in s.image_targets.iter_mut().zip(&codes) {
                t.1 = *c;
            }
            assert_eq!(s.image_targets, pairs(&want["image_targets"]), "sample {i}");
        }
        out.push(s);
    }
    out
}

pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A short mixed run: 3 samples per step (one of each kind), half the captions dropped,
/// cosine schedule with warm-up, every trainable part of stage 3.
pub fn run_spec(model: &str, cache: &Path) -> RunSpec {
    let recipe = Recipe::load("janus/stage3").unwrap();
    let o = Overrides {
        steps: Some(4),
        batch_size: Some(3),
        micro_batch_size: Some(2),
        ratio: Some([1, 1, 1]),
        lr: Some(1e-3),
        warmup_steps: Some(1),
        schedule: Some(janus::train::Schedule::Cosine),
        cfg_drop: Some(0.5),
        seed: Some(3),
        ..Default::default()
    };
    RunSpec {
        model: root().join("fixtures/models").join(model),
        data: root().join("fixtures/train/data.json"),
        eval: None,
        dtype: "f32".into(),
        vq_cache: Some(cache.to_path_buf()),
        config: TrainConfig::resolve(&recipe, &o, false).unwrap(),
        lora: None,
        checkpoint_layers: false,
        quant: None,
    }
}
