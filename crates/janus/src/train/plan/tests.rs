//! The acceptance numbers of `janus train plan`: the papers' reported GPU-hours and cost,
//! stage 2's share of Janus-Pro-7B's samples, and bad input refused.

use super::*;

fn request(recipe: &str, size: ModelSize) -> PlanRequest {
    let gpu = gpus::find("a100-40gb").unwrap();
    PlanRequest {
        recipe: recipe.into(),
        model: ModelChoice::Size(size),
        stages: None,
        steps: Vec::new(),
        overrides: Overrides::default(),
        dataset: None,
        epochs: 1.0,
        lora: None,
        rows: RowShape::uniform(DEFAULT_TOKENS_PER_SAMPLE),
        hardware: Hardware {
            price: gpu.price_per_hour,
            gpu,
            gpus: 8,
            mfu: DEFAULT_MFU,
        },
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn reported_mode_gives_the_papers_gpu_hours_and_the_350k_figure() {
    let hours = |recipe, size| {
        let p = plan(&request(recipe, size)).unwrap();
        p.reported.unwrap().gpu_hours
    };
    assert_eq!(hours("janus", ModelSize::B1_3), 21_504);
    assert_eq!(hours("janus-pro", ModelSize::B1), 27_648);
    assert_eq!(hours("janus-pro", ModelSize::B7), 86_016);

    let mut r = request("janus-pro", ModelSize::B7);
    r.hardware.price = 4.1;
    let rep = plan(&r).unwrap().reported.unwrap();
    assert_eq!(rep.gpus, 256);
    assert!(close(rep.cost, 352_665.6, 0.01), "{}", rep.cost);
    // The paper's run is priced at the A100 price even when the plan is for an H100.
    let mut r = request("janus-pro", ModelSize::B7);
    r.hardware.gpu = gpus::find("h100").unwrap();
    r.hardware.price = 2.0;
    let rep = plan(&r).unwrap().reported.unwrap();
    assert!(close(rep.price, 4.10, 1e-9) && rep.gpu == "a100-40gb");
    // A part of a run has no reported figure.
    let mut r = request("janus-pro", ModelSize::B7);
    r.stages = Some(vec![2]);
    assert!(plan(&r).unwrap().reported.is_none());
}

#[test]
fn stage_two_is_95_percent_of_janus_pro_7b_samples_planned_and_93_run() {
    let p = plan(&request("janus-pro", ModelSize::B7)).unwrap();
    let steps: Vec<u64> = p.stages.iter().map(|s| s.steps).collect();
    assert_eq!(steps, [20_000, 360_000, 40_000]);
    let samples: Vec<u64> = p.stages.iter().map(|s| s.cost.samples).collect();
    assert_eq!(samples, [5_120_000, 184_320_000, 5_120_000]);
    // 184.32M / 194.56M.
    assert!(close(p.stages[1].share.samples, 0.947_368, 1e-6));
    assert_eq!(format!("{:.0}", 100.0 * p.stages[1].share.samples), "95");
    assert!(p.stages[1].notes[0].contains("stopped at 270,000 (--steps 2=270000)"));
    assert!(p.stages[2].notes[0].contains("40,000 steps for the 7B"));
    assert_eq!(p.stages[2].steps_from, "recipe (steps_7b)");

    let mut r = request("janus-pro", ModelSize::B7);
    r.steps = vec![(Some(2), 270_000)];
    let p = plan(&r).unwrap();
    assert_eq!(p.stages[1].steps, 270_000);
    assert_eq!(p.stages[1].steps_from, "--steps");
    // 138.24M / 148.48M.
    assert!(close(p.stages[1].share.samples, 0.931_034, 1e-6));
    assert_eq!(format!("{:.0}", 100.0 * p.stages[1].share.samples), "93");
    assert!(p.stages[1].notes.is_empty());

    // The 1B keeps the recipe's 80k stage-3 steps.
    let p = plan(&request("janus-pro", ModelSize::B1)).unwrap();
    assert_eq!(p.stages[2].steps, 80_000);
}

#[test]
fn stages_split_samples_by_kind_and_shares_add_up() {
    let p = plan(&request("janus-pro", ModelSize::B7)).unwrap();
    let s2 = &p.stages[1].cost.samples_by_kind;
    assert_eq!(
        (s2.understanding, s2.text, s2.t2i),
        (360_000 * 102, 360_000 * 154, 360_000 * 256)
    );
    assert_eq!(p.total.samples, 194_560_000);
    assert_eq!(p.total.tokens, 194_560_000 * 4096);
    for f in [
        |s: &StagePlan| s.share.samples,
        |s: &StagePlan| s.share.flops,
        |s: &StagePlan| s.share.cost,
    ] {
        assert!(close(p.stages.iter().map(f).sum::<f64>(), 1.0, 1e-9));
    }
    // GPU-hours, wall time and cost follow the FLOPs.
    let t = &p.total;
    assert!(close(
        t.gpu_hours,
        t.flops / (312e12 * DEFAULT_MFU * 3600.0),
        1e-6
    ));
    assert!(close(t.wall_hours, t.gpu_hours / 8.0, 1e-6));
    assert!(close(t.cost, t.gpu_hours * 4.10, 1e-6));
    // Stage 1 trains the aligners and the head only, yet the gradient crosses the LLM.
    let s1 = &p.stages[0];
    assert!(s1.trained_parameters < 200_000_000);
    assert!(s1.cost.flops / s1.cost.tokens as f64 > 4.0 * 6.0e9);
}

#[test]
fn implied_mfu_of_the_three_published_runs() {
    let mfu = |recipe, size, steps: Vec<(Option<u8>, u64)>| {
        let mut r = request(recipe, size);
        r.steps = steps;
        plan(&r).unwrap().reported.unwrap().implied_mfu
    };
    let janus = mfu("janus", ModelSize::B1_3, vec![]);
    let pro1 = mfu("janus-pro", ModelSize::B1, vec![]);
    let pro7 = mfu("janus-pro", ModelSize::B7, vec![]);
    let pro7_run = mfu("janus-pro", ModelSize::B7, vec![(Some(2), 270_000)]);
    let pro1_run = mfu("janus-pro", ModelSize::B1, vec![(Some(2), 270_000)]);
    // Pinned to the values docs/training.md discusses (rows of 4096 positions).
    assert!(close(janus, 0.1571, 5e-4), "{janus}");
    assert!(close(pro1, 0.2420, 5e-4), "{pro1}");
    assert!(close(pro1_run, 0.1859, 5e-4), "{pro1_run}");
    assert!(close(pro7, 0.3326, 5e-4), "{pro7}");
    assert!(close(pro7_run, 0.2532, 5e-4), "{pro7_run}");
}

#[test]
fn user_datasets_lora_and_single_recipes() {
    let mut r = request("janus-pro", ModelSize::B1);
    r.stages = Some(vec![1]);
    r.dataset = Some([1_000, 0, 3_000]);
    r.epochs = 2.0;
    // 64 understanding and 192 t2i per step: 2 x 1,000 / 64 -> 32 steps.
    let p = plan(&r).unwrap();
    assert_eq!(p.stages[0].steps, 32);
    assert_eq!(p.stages[0].steps_from, "dataset, 2 epoch(s)");
    r.dataset = Some([1_000, 0, 0]);
    let e = plan(&r).unwrap_err().to_string();
    assert!(e.contains("192 t2i samples per step"), "{e}");
    // --steps wins over the dataset's count; the dataset is still recorded.
    r.steps = vec![(Some(1), 5)];
    let p = plan(&r).unwrap();
    assert_eq!(
        (p.stages[0].steps, p.dataset.unwrap().understanding),
        (5, 1_000)
    );

    let mut r = request("janus-pro/stage3", ModelSize::B1);
    r.lora = Some(LoraSpec {
        rank: 16,
        alpha: 16.0,
        targets: lora::Target::DEFAULT.to_vec(),
    });
    r.steps = vec![(None, 100)];
    r.overrides.batch_size = Some(8);
    let p = plan(&r).unwrap();
    // The count peft reports for Janus-Pro-1B (docs/training.md).
    assert_eq!(p.stages[0].trained_parameters, 15_138_816);
    assert_eq!(p.stages[0].cost.samples, 800);
    assert!(p.stages[0].trained[0].starts_with("LoRA rank 16"));
    assert!(p.reported.is_none());
}

/// A change to a good request, and a piece of the error it must give.
type BadCase = (Box<dyn Fn(&mut PlanRequest)>, &'static str);

#[test]
fn bad_input_is_refused_with_the_value() {
    let cases: Vec<BadCase> = vec![
        (Box::new(|r| r.hardware.gpus = 0), "--gpus"),
        (Box::new(|r| r.hardware.price = -1.0), "not -1"),
        (
            Box::new(|r| r.hardware.mfu = 0.0),
            "--mfu 0 is out of range",
        ),
        (Box::new(|r| r.hardware.mfu = 1.5), "--mfu 1.5"),
        (Box::new(|r| r.hardware.mfu = f64::NAN), "--mfu NaN"),
        (
            Box::new(|r| r.rows = RowShape::uniform(0)),
            "--tokens-per-sample",
        ),
        (
            Box::new(|r| r.recipe = "janus-max".into()),
            "unknown recipe \"janus-max\"",
        ),
        (Box::new(|r| r.stages = Some(vec![4])), "unknown stage 4"),
        (
            Box::new(|r| r.steps = vec![(Some(3), 0)]),
            "steps must be at least 1",
        ),
        (
            Box::new(|r| {
                r.stages = Some(vec![1]);
                r.steps = vec![(Some(2), 5)];
            }),
            "--steps names stage 2",
        ),
        (
            Box::new(|r| {
                r.recipe = "janus/stage1".into();
                r.stages = Some(vec![1]);
            }),
            "--stages",
        ),
        (Box::new(|r| r.epochs = 0.0), "--epochs"),
        (
            Box::new(|r| {
                r.lora = Some(LoraSpec {
                    rank: 0,
                    alpha: 1.0,
                    targets: lora::Target::DEFAULT.to_vec(),
                })
            }),
            "rank must be at least 1",
        ),
        (
            Box::new(|r| {
                r.lora = Some(LoraSpec {
                    rank: 4,
                    alpha: 4.0,
                    targets: lora::Target::DEFAULT.to_vec(),
                });
                r.overrides.train = Some("llm".into());
            }),
            "only the adapters train",
        ),
    ];
    for (change, needle) in cases {
        let mut r = request("janus-pro", ModelSize::B7);
        change(&mut r);
        let e = plan(&r).unwrap_err().to_string();
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    }
}

#[test]
fn the_report_prints_the_assumed_steps_and_both_columns() {
    let p = plan(&request("janus-pro", ModelSize::B7)).unwrap();
    let text = report::render(&p);
    for needle in [
        "Janus-Pro-7B (published sizes)",
        "janus-pro/stage2  360,000",
        "94.7%",
        "86,016 a100-40gb",
        "14 days on 256 GPUs",
        "(implied)",
        "stopped at 270,000",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["stages"][1]["steps"], 360_000);
    assert_eq!(json["stages"][1]["samples_by_kind"]["t2i"], 92_160_000);
    assert_eq!(json["reported"]["gpu_hours"], 86_016);
}
