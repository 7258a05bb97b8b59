//! LoRA training and activation checkpointing against PyTorch + peft (fixtures from
//! scripts/fixtures/make_lora_fixtures.py, float32), and against our own plain path.
//!
//! Tolerances: loss within 1e-5 relative; each adapter gradient `max|ours - torch| <= 1e-4
//! * max|torch|`; recomputed (checkpointed) gradients within 1e-5 of the plain ones.

#[path = "support/train.rs"]
mod support;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use janus::config::Layout;
use janus::pipeline::{DTypeChoice, LoadOptions, Pipeline};
use janus::train::loss::{micro_batch_backward, micro_batch_loss};
use janus::train::Trainer;
use janus::weights::lora::{self, Adapters, LoraSpec, Target};
use serde_json::Value;
use support::{batch, golden, max_abs, root, trainer_with};

const RECIPE: &str = "janus-pro/stage3";

fn adapter_dir() -> std::path::PathBuf {
    root().join("fixtures/golden/lora/adapter")
}

fn all_targets() -> LoraSpec {
    LoraSpec {
        rank: 4,
        alpha: 8.0,
        targets: Target::ALL.to_vec(),
    }
}

/// A LoRA trainer on tiny-pro whose adapters hold the golden's values.
fn lora_trainer(tmp: &std::path::Path, checkpoint_layers: bool) -> Trainer {
    let mut t = trainer_with("tiny-pro", RECIPE, tmp, |s| {
        s.lora = Some(all_targets());
        s.checkpoint_layers = checkpoint_layers;
    });
    let adapters = Adapters::load(&adapter_dir(), &t.model.cfg).unwrap();
    assert_eq!(adapters.spec, all_targets());
    assert_eq!(adapters.tensors.len(), t.model.params.len());
    for p in &mut t.model.params {
        p.set_master(adapters.tensors[&p.name].clone()).unwrap();
    }
    t
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn adapter_gradients_match_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let gold: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/golden/lora/loss.json")).unwrap(),
    )
    .unwrap();
    let grads_gold = candle_core::safetensors::load(
        root().join("fixtures/golden/lora/grads.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut t = lora_trainer(tmp.path(), false);
    // Only adapters train: 2 per adapted layer.
    let layers = lora::modules(&t.model.cfg, &Target::ALL).len();
    assert_eq!(t.model.params.len(), 2 * layers);
    assert!(t.model.params.iter().all(|p| p.name.contains(".lora_")));
    let samples = batch(&mut t, &golden("tiny-pro").0);
    let before = janus::model::backward_calls();
    let g = t.gradients(&samples).unwrap();
    // The step ran through the ops with their own backward (model/ops/): every
    // frozen product, norm, SwiGLU, RoPE and attention of the two decoder layers.
    let after = janus::model::backward_calls();
    assert!(
        after.frozen_linear >= before.frozen_linear + 14,
        "{before:?} -> {after:?}"
    );
    assert!(after.rms_norm >= before.rms_norm + 4, "{after:?}");
    assert!(after.silu_mul >= before.silu_mul + 2, "{after:?}");
    assert!(after.rope >= before.rope + 4, "{after:?}");
    assert!(after.attention >= before.attention + 2, "{after:?}");
    let want = gold["loss"].as_f64().unwrap();
    assert!(rel(g.loss, want) <= 1e-5, "loss {} vs {want}", g.loss);
    let mut worst = 0f32;
    for (p, ours) in t.model.params.iter().zip(&g.grads) {
        let name = lora::peft_name(Layout::Transformers, &p.name).unwrap();
        let theirs = &grads_gold[&name];
        assert_eq!(ours.dims(), theirs.dims(), "{name}");
        let scale = max_abs(theirs);
        assert!(scale > 0.0, "{name}: zero golden gradient");
        let err = max_abs(&(ours - theirs).unwrap()) / scale;
        worst = worst.max(err);
        assert!(err <= 1e-4, "gradient of {name} off by {err:.2e}");
    }
    eprintln!(
        "{} adapter tensors, worst gradient error {worst:.2e}",
        g.grads.len()
    );
}

fn max_diff(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs(&(x - y).unwrap()) / max_abs(y).max(1e-30))
        .fold(0.0, f32::max)
}

#[test]
fn recomputed_layers_give_the_same_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    let gold = golden("tiny-janus").0;
    // Full fine-tuning of stage 3 (original layout) and LoRA (transformers layout).
    for lora in [false, true] {
        let (plain, ckpt) = if lora {
            (
                lora_trainer(tmp.path(), false),
                lora_trainer(tmp.path(), true),
            )
        } else {
            let t = |c| {
                trainer_with("tiny-janus", RECIPE, tmp.path(), |s| {
                    s.checkpoint_layers = c
                })
            };
            (t(false), t(true))
        };
        let (mut plain, mut ckpt) = (plain, ckpt);
        let gold = if lora {
            golden("tiny-pro").0
        } else {
            gold.clone()
        };
        let samples = batch(&mut plain, &gold);
        let _ = batch(&mut ckpt, &gold);
        // The recomputing backward really runs segment by segment: one gradient store
        // for the heads, one per decoder layer (and one for the inputs when they train).
        let refs: Vec<_> = samples.iter().collect();
        let stores = |recompute: bool| {
            let mut n = 0;
            let model = &plain.model.model;
            micro_batch_backward(model, &refs, 1.0, recompute, &mut |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
            n
        };
        let layers = plain.model.model.llm.num_layers();
        assert_eq!(stores(false), 1);
        let segments = stores(true);
        assert!(
            segments == layers + 1 || segments == layers + 2,
            "{segments} stores for {layers} layers"
        );
        let a = plain.gradients(&samples).unwrap();
        let b = ckpt.gradients(&samples).unwrap();
        assert_eq!(a.loss, b.loss, "lora {lora}: the forward is the same");
        assert_eq!(a.grads.len(), b.grads.len());
        let d = max_diff(&b.grads, &a.grads);
        assert!(
            d <= 1e-5,
            "lora {lora}: recomputed gradients off by {d:.2e}"
        );
        eprintln!("lora {lora}: recomputed gradients within {d:.2e}");
    }
}

/// Base + adapters (training's forward), the merged checkpoint, and adapters applied at
/// inference load all give the same loss on the fixture batch, which no-adapter differs from.
#[test]
fn merged_and_load_time_adapters_equal_base_plus_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = lora_trainer(tmp.path(), false);
    let samples = batch(&mut t, &golden("tiny-pro").0);
    let refs: Vec<_> = samples.iter().collect();
    let loss = |m: &janus::model::Janus| {
        let ml = micro_batch_loss(m, &refs).unwrap();
        ml.sum.to_scalar::<f32>().unwrap() as f64
    };
    let with_adapters = loss(&t.model.model);

    let base = root().join("fixtures/models/tiny-pro");
    let merged = tmp.path().join("merged");
    janus::train::checkpoint::merge_adapters(&adapter_dir(), &base, &merged).unwrap();
    assert!(janus::train::checkpoint::merge_adapters(&adapter_dir(), &base, &merged).is_err());
    let f32 = DTypeChoice::Fixed(DType::F32);
    let m = Pipeline::load(&merged, f32, &Device::Cpu).unwrap();
    let opts = LoadOptions {
        lora: Some(adapter_dir()),
        ..LoadOptions::new(f32, Device::Cpu)
    };
    let at_load = Pipeline::load_with(&base, &opts).unwrap();
    let plain = Pipeline::load(&base, f32, &Device::Cpu).unwrap();
    let (lm, ll, lp) = (loss(&m.model), loss(&at_load.model), loss(&plain.model));
    eprintln!("loss sums: adapters {with_adapters}, merged {lm}, at load {ll}, base {lp}");
    assert!(
        rel(lm, with_adapters) <= 1e-5,
        "merged {lm} vs {with_adapters}"
    );
    assert_eq!(lm, ll, "merging at load is what merge writes");
    assert!(
        rel(lp, with_adapters) > 1e-3,
        "the adapters change nothing?"
    );
}

#[test]
fn lora_runs_save_peft_adapters_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = |steps: u64| {
        let mut s = support::run_spec("tiny-pro", &tmp.path().join("cache"));
        s.config.steps = steps;
        s.lora = Some(LoraSpec {
            rank: 2,
            alpha: 4.0,
            targets: vec![Target::Q, Target::V, Target::GenHead],
        });
        s
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let full = tmp.path().join("full");
    let mut t = Trainer::create(&full, spec(3), &Device::Cpu).unwrap();
    t.run(&stop, |_| {}, |_| {}).unwrap();
    let ck = full.join("step-3");
    assert!(ck.join(lora::CONFIG_FILE).is_file() && ck.join(lora::WEIGHTS_FILE).is_file());
    assert!(!ck.join("model.safetensors").exists(), "adapters only");
    let saved = candle_core::safetensors::load(ck.join(lora::WEIGHTS_FILE), &Device::Cpu).unwrap();
    assert!(saved
        .keys()
        .all(|k| k.starts_with("base_model.model.model.") && k.contains(".lora_")));
    // B started at zero and moved.
    let b: Vec<&Tensor> = saved
        .iter()
        .filter(|(k, _)| k.ends_with("lora_B.weight"))
        .map(|(_, v)| v)
        .collect();
    assert!(!b.is_empty() && b.iter().all(|v| max_abs(v) > 0.0));

    let part = tmp.path().join("part");
    let mut t = Trainer::create(&part, spec(2), &Device::Cpu).unwrap();
    t.run(&stop, |_| {}, |_| {}).unwrap();
    let mut t = Trainer::resume(&part, Some(3), false, &Device::Cpu).unwrap();
    t.run(&stop, |_| {}, |_| {}).unwrap();
    let again =
        candle_core::safetensors::load(part.join("step-3").join(lora::WEIGHTS_FILE), &Device::Cpu)
            .unwrap();
    let sorted = |m: &HashMap<String, Tensor>| {
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sorted(&saved),
        sorted(&again),
        "resumed run equals the uninterrupted one"
    );
}

/// The loss curves of one run in f32, in f32 with recomputed layers and in bf16 (f32
/// masters): recomputation changes nothing; bf16 stays within 2% of f32 at every step.
#[test]
fn bf16_and_recomputed_runs_follow_the_f32_loss_curve() {
    let tmp = tempfile::tempdir().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let curve = |name: &str, edit: &dyn Fn(&mut janus::train::RunSpec)| {
        let mut s = support::run_spec("tiny-janus", &tmp.path().join("cache"));
        s.config.steps = 6;
        edit(&mut s);
        let mut losses = Vec::new();
        let mut t = Trainer::create(&tmp.path().join(name), s, &Device::Cpu).unwrap();
        t.run(&stop, |m| losses.push(m.loss), |_| {}).unwrap();
        losses
    };
    let f32 = curve("f32", &|_| {});
    let ckpt = curve("ckpt", &|s| s.checkpoint_layers = true);
    let bf16 = curve("bf16", &|s| s.dtype = "bf16".into());
    eprintln!("f32 {f32:?}\nbf16 {bf16:?}");
    assert_eq!(f32, ckpt);
    assert!(f32.last() < f32.first(), "the run learns: {f32:?}");
    for (i, (a, b)) in f32.iter().zip(&bf16).enumerate() {
        assert!(rel(*b, *a) <= 0.02, "step {}: bf16 {b} vs f32 {a}", i + 1);
    }
}
