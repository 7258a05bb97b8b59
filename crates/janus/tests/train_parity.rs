//! Training against PyTorch (fixtures from scripts/fixtures/make_train_fixtures.py,
//! float32): the samples of a batch holding all three kinds of data, its loss, and the
//! gradient of every trainable tensor for each stage's freeze set, in both checkpoint
//! layouts; and 20 steps of AdamW + clipping + each schedule.
//!
//! Tolerances: loss within 1e-5 relative; each gradient `max|ours - torch| <= 1e-4 *
//! max|torch|` over the tensor; optimiser parameters within 1e-5 of the largest value.
//! On the CPU, or the GPU `JANUS_TEST_DEVICE` names (`support/device.rs`).

#[path = "support/train.rs"]
mod support;

use std::collections::BTreeSet;

use candle_core::{Device, Tensor};
use janus::train::optim::{clip_grad_norm, lr_at, AdamW};
use janus::train::{Part, Schedule};
use serde_json::Value;
use support::{batch, device, golden, max_abs, root, trainer};

fn gradient_parity(model: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (gold, gold_grads) = golden(model);
    for recipe in ["janus-pro/stage1", "janus-pro/stage2", "janus-pro/stage3"] {
        let mut t = trainer(model, recipe, tmp.path());
        let samples = batch(&mut t, &gold);
        let janus::train::trainer::Gradients {
            loss,
            by_kind,
            grads,
            ..
        } = t.gradients(&samples).unwrap();
        let want = gold["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() <= 1e-5 * want,
            "{model} {recipe}: loss {loss} vs {want}"
        );
        for (k, key) in [(0, "loss_understanding"), (1, "loss_text"), (2, "loss_t2i")] {
            let (s, n) = by_kind[k];
            let w = gold[key].as_f64().unwrap();
            assert!((s / n as f64 - w).abs() <= 1e-5 * w, "{model} {key}");
        }
        // Exactly the parts' tensors are trainable, and each gets a gradient.
        let parts: BTreeSet<Part> = t.config().train.iter().copied().collect();
        let expected: BTreeSet<&str> = gold_grads
            .keys()
            .filter(|n| Part::of(n).is_some_and(|p| parts.contains(&p)))
            .map(String::as_str)
            .collect();
        let names: BTreeSet<&str> = t.model.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, expected, "{model} {recipe}: trainable set");
        let mut worst = 0f32;
        for (p, g) in t.model.params.iter().zip(&grads) {
            let want = &gold_grads[&p.name];
            assert_eq!(g.dims(), want.dims(), "{}", p.name);
            let scale = max_abs(want);
            assert!(
                scale > 0.0 && max_abs(g) > 0.0,
                "{model} {recipe}: {} got no gradient",
                p.name
            );
            let err = max_abs(&(g.to_device(&Device::Cpu).unwrap() - want).unwrap()) / scale;
            worst = worst.max(err);
            assert!(
                err <= 1e-4,
                "{model} {recipe}: gradient of {} off by {err:.2e}",
                p.name
            );
        }
        eprintln!(
            "{model} {recipe}: {} tensors, worst gradient error {worst:.2e}",
            grads.len()
        );
    }
}

#[test]
fn gradients_match_pytorch_transformers_layout() {
    gradient_parity("tiny-pro");
}

#[test]
fn gradients_match_pytorch_original_layout() {
    gradient_parity("tiny-janus");
}

#[test]
fn adamw_clipping_and_schedules_match_pytorch_for_20_steps() {
    let dir = root().join("fixtures/golden/train");
    let g =
        candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu).unwrap();
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("optimizer.json")).unwrap())
            .unwrap();
    let names = ["w", "b", "e"];
    let decay = [true, false, true];
    for (run, schedule, warmup) in [
        ("constant_warmup5", Schedule::Constant, 5),
        ("cosine_warmup5", Schedule::Cosine, 5),
        ("constant_warmup0", Schedule::Constant, 0),
    ] {
        let mut params: Vec<Tensor> = names
            .iter()
            .map(|n| g[&format!("init.{n}")].to_device(device()).unwrap())
            .collect();
        let mut opt = AdamW::new(&params, 0.9, 0.95, 1e-8).unwrap();
        let lrs = &meta["schedules"][run]["lrs"];
        for step in 0..20u64 {
            let mut grads: Vec<Tensor> = names
                .iter()
                .map(|n| g[&format!("grad.{step}.{n}")].to_device(device()).unwrap())
                .collect();
            let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
            let want_norm = meta["grad_norms"][step as usize].as_f64().unwrap();
            assert!(
                (norm - want_norm).abs() <= 1e-6 * want_norm,
                "{run} step {step}: norm"
            );
            let lr = lr_at(0.01, schedule, warmup, 20, step);
            let want_lr = lrs[step as usize].as_f64().unwrap();
            assert!(
                (lr - want_lr).abs() <= 1e-12,
                "{run} step {step}: lr {lr} vs {want_lr}"
            );
            params = opt.step(&params, &grads, &decay, lr, 0.1).unwrap();
            for (n, p) in names.iter().zip(&params) {
                let want = &g[&format!("{run}.step{step}.{n}")];
                let p = p.to_device(&Device::Cpu).unwrap();
                let err = max_abs(&(p - want).unwrap()) / max_abs(want);
                assert!(err <= 1e-5, "{run} step {step} {n}: {err:.2e}");
            }
        }
    }
}
