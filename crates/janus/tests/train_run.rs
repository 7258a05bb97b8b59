//! Whole training runs on the tiny models: a run stopped and resumed equals the run never
//! stopped (bit for bit on CPU), frozen tensors stay bit-identical, and a checkpoint loads
//! back (in either layout) into a model that computes what the trained one does.

#[path = "support/train.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use janus::model::Janus;
use janus::train::{Part, RunEnd, RunSpec, Trainer};
use janus::weights::{checkpoint_source, load_model_dir, var_builder};
use serde_json::Value;

use support::root;

fn spec(model: &str, cache: &Path) -> RunSpec {
    support::run_spec(model, cache)
}

fn metrics_without_seconds(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("peak_rss"); // machine-dependent, like the time
            v
        })
        .collect()
}

fn tensors(file: &Path) -> Vec<(String, Tensor)> {
    let mut t: Vec<_> = candle_core::safetensors::load(file, &Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn never(_: &janus::train::EvalMetrics) {}

#[test]
fn a_stopped_and_resumed_run_equals_the_uninterrupted_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let stop = AtomicBool::new(false);

    let straight = tmp.path().join("straight");
    let mut t = Trainer::create(&straight, spec("tiny-pro", &cache), &Device::Cpu).unwrap();
    assert!(matches!(
        t.run(&stop, |_| {}, never).unwrap(),
        RunEnd::Finished(_)
    ));
    let trained: Vec<(String, Tensor)> = t
        .model
        .params
        .iter()
        .map(|p| (p.name.clone(), p.master().unwrap()))
        .collect();

    // Stopped (as by Ctrl-C) after step 2, then resumed by a new trainer.
    let split = tmp.path().join("split");
    let mut t = Trainer::create(&split, spec("tiny-pro", &cache), &Device::Cpu).unwrap();
    let end = t
        .run(
            &stop,
            |m| {
                if m.step == 2 {
                    stop.store(true, Ordering::SeqCst);
                }
            },
            never,
        )
        .unwrap();
    assert!(
        matches!(end, RunEnd::Stopped(ref d) if d.ends_with("step-2")),
        "{end:?}"
    );
    drop(t);
    stop.store(false, Ordering::SeqCst);
    // A crash while saving leaves a hidden temporary behind: resuming ignores it.
    std::fs::create_dir_all(split.join(".step-3.tmp-1/trainer")).unwrap();
    let mut t = Trainer::resume(&split, None, false, &Device::Cpu).unwrap();
    assert_eq!(t.state.step, 2);
    assert!(matches!(
        t.run(&stop, |_| {}, never).unwrap(),
        RunEnd::Finished(_)
    ));

    for file in ["model.safetensors", "trainer/optimizer.safetensors"] {
        let (a, b) = (
            tensors(&straight.join("step-4").join(file)),
            tensors(&split.join("step-4").join(file)),
        );
        assert_eq!(a.len(), b.len());
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert_eq!(bits(ta), bits(tb), "{file}: {na} differs after resuming");
        }
    }
    assert_eq!(
        metrics_without_seconds(&straight),
        metrics_without_seconds(&split)
    );
    let m = metrics_without_seconds(&straight);
    assert_eq!(m.len(), 4);
    // The run moved: the trained tensors are not the model's any more.
    let (_, store) = load_model_dir(&root().join("fixtures/models/tiny-pro")).unwrap();
    let moved = trained.iter().filter(|(name, value)| {
        let Some(src) = checkpoint_source(janus::config::Layout::Transformers, name) else {
            return false;
        };
        let n = src.names()[0].to_string();
        let orig = store.load(&n, &Device::Cpu).unwrap();
        orig.elem_count() == value.elem_count()
            && bits(&orig) != bits(&value.flatten_all().unwrap())
    });
    assert!(moved.count() > 20);
}

/// Trains stage 1 (aligners and gen_head only) on a model in `model`'s layout; checks the
/// checkpoint keeps every frozen tensor's bits and loads back into a model that computes
/// exactly what the trained one does.
fn checkpoint_round_trip(model: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = spec(model, &tmp.path().join("cache"));
    s.config.train = vec![Part::Aligner, Part::GenAligner, Part::GenHead];
    s.config.steps = 2;
    let run = tmp.path().join("run");
    let mut t = Trainer::create(&run, s, &Device::Cpu).unwrap();
    let stop = AtomicBool::new(false);
    let RunEnd::Finished(dir) = t.run(&stop, |_| {}, never).unwrap() else {
        panic!("run did not finish")
    };

    let (src_cfg, src) = load_model_dir(&root().join("fixtures/models").join(model)).unwrap();
    let (cfg, out) = load_model_dir(&dir).unwrap();
    assert_eq!(cfg.layout, src_cfg.layout);
    let trained: Vec<String> = t
        .model
        .params
        .iter()
        .flat_map(|p| {
            checkpoint_source(cfg.layout, &p.name)
                .unwrap()
                .names()
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let names: Vec<&str> = src.names().collect();
    assert_eq!(
        out.len(),
        names.len(),
        "every tensor of the input is in the checkpoint"
    );
    for name in names {
        let (a, b) = (
            src.load(name, &Device::Cpu).unwrap(),
            out.load(name, &Device::Cpu).unwrap(),
        );
        assert_eq!(a.dtype(), b.dtype(), "{name}");
        if trained.iter().any(|n| n == name) {
            assert_ne!(bits(&a), bits(&b), "{name} was trained but did not change");
        } else {
            assert_eq!(bits(&a), bits(&b), "frozen {name} changed");
        }
    }

    // The checkpoint, loaded as inference loads it, against the in-memory model.
    let loaded = Janus::new(
        &cfg,
        var_builder(&out, cfg.layout, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 200, 7, 42]], &Device::Cpu).unwrap();
    let codes = Tensor::new(&[[3u32, 1, 4, 1]], &Device::Cpu).unwrap();
    let logits = |m: &Janus| {
        let x = Tensor::cat(
            &[
                m.llm.embed(&ids).unwrap(),
                m.embed_image_codes(&codes).unwrap(),
            ],
            1,
        )
        .unwrap();
        let h = m.llm.forward_embeds(&x, None).unwrap();
        let text = m.llm.lm_head(&h).unwrap();
        let img = m.gen_head_logits(&h).unwrap();
        (bits(&text), bits(&img))
    };
    // A bf16 checkpoint stores the trained tensors rounded to bf16 (the f32 masters stay
    // in trainer/ for resuming): round the in-memory ones alike, then the logits agree.
    let stored = src.dtype(src.names().next().unwrap()).unwrap();
    for p in t.model.params.iter().filter(|_| stored != DType::F32) {
        let v = p
            .master()
            .unwrap()
            .to_dtype(stored)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        p.var.set(&v).unwrap();
    }
    assert_eq!(
        logits(&t.model.model),
        logits(&loaded),
        "{model}: the checkpoint computes other logits"
    );
}

#[test]
fn checkpoints_keep_frozen_tensors_and_load_back_transformers_layout() {
    checkpoint_round_trip("tiny-pro");
}

#[test]
fn checkpoints_keep_frozen_tensors_and_load_back_original_layout() {
    checkpoint_round_trip("tiny-janus");
}

#[test]
fn bf16_compute_keeps_f32_masters_that_take_updates_bf16_would_lose() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut s = spec("tiny-pro", &cache);
    s.dtype = "bf16".into();
    s.config.steps = 2;
    s.config.lr = 1e-5;
    s.config.cfg_drop = 0.0;
    let mut t = Trainer::create(&tmp.path().join("bf16"), s.clone(), &Device::Cpu).unwrap();
    let before: Vec<Tensor> = t.model.params.iter().map(|p| p.master().unwrap()).collect();
    for p in &t.model.params {
        assert_eq!(p.var.dtype(), DType::BF16, "{}", p.name);
        assert_eq!(
            p.master.as_ref().map(Tensor::dtype),
            Some(DType::F32),
            "{}",
            p.name
        );
    }
    let stop = AtomicBool::new(false);
    t.run(&stop, |_| {}, never).unwrap();
    // lr 1e-5 moves weights of magnitude ~0.02 by far less than bf16's step there.
    let (mut moved, mut lost_in_bf16) = (0, 0);
    for (p, b) in t.model.params.iter().zip(&before) {
        let m = p.master().unwrap();
        moved += usize::from(bits(&m) != bits(b));
        let rounded = |x: &Tensor| bits(&x.to_dtype(DType::BF16).unwrap());
        lost_in_bf16 += usize::from(rounded(&m) == rounded(b));
    }
    assert!(
        moved == t.model.params.len(),
        "{moved} of {} masters moved",
        t.model.params.len()
    );
    assert!(
        lost_in_bf16 > 0,
        "no update was below bf16 resolution: the test proves nothing"
    );

    // The bf16 loss tracks the f32 reference's.
    let mut f = s;
    f.dtype = "f32".into();
    let mut t32 = Trainer::create(&tmp.path().join("f32"), f, &Device::Cpu).unwrap();
    t32.run(&stop, |_| {}, never).unwrap();
    let (a, b) = (
        metrics_without_seconds(&tmp.path().join("bf16")),
        metrics_without_seconds(&tmp.path().join("f32")),
    );
    let (la, lb) = (
        a[0]["loss"].as_f64().unwrap(),
        b[0]["loss"].as_f64().unwrap(),
    );
    assert!((la - lb).abs() < 0.01 * lb, "bf16 loss {la} vs f32 {lb}");
}
