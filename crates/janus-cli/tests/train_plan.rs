//! `janus train plan` from the command line: the papers' reported compute reproduced,
//! stage 2's share of Janus-Pro-7B with the steps it assumes, a model directory and
//! `--measure` on the tiny model, and bad input refused with one `error:` line.

mod support;

use serde_json::Value;
use support::*;

fn plan(args: &[&str]) -> Value {
    let mut all = vec!["-q", "train", "plan", "--json"];
    all.extend_from_slice(args);
    json_of(&janus(&all))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn reported_mode_reproduces_the_papers_gpu_hours_and_cost() {
    let p = plan(&[
        "--recipe",
        "janus-pro",
        "--model-size",
        "7b",
        "--price",
        "4.1",
    ]);
    assert_eq!(p["reported"]["gpu_hours"], 86_016);
    assert_eq!(p["reported"]["gpus"], 256);
    assert!((f(&p["reported"]["cost"]) - 352_665.6).abs() < 0.01);
    let implied = f(&p["reported"]["implied_mfu"]);
    assert!((implied - 0.3326).abs() < 5e-4, "{implied}");
    let steps: Vec<u64> = (0..3)
        .map(|i| p["stages"][i]["steps"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [20_000, 360_000, 40_000]);
    let share = f(&p["stages"][1]["share"]["samples"]);
    assert!((share - 0.947_368).abs() < 1e-6, "{share}");
    assert_eq!(p["stages"][1]["samples_by_kind"]["t2i"], 92_160_000);
    assert_eq!(p["total"]["samples"], 194_560_000);

    let p = plan(&[
        "--recipe",
        "janus-pro",
        "--model-size",
        "7b",
        "--steps",
        "2=270000",
    ]);
    let share = f(&p["stages"][1]["share"]["samples"]);
    assert!((share - 0.931_034).abs() < 1e-6, "{share}");
    assert_eq!(p["stages"][1]["steps"], 270_000);

    // Janus defaults to its 1.3B; Janus-Pro-1B by name.
    assert_eq!(
        plan(&["--recipe", "janus"])["reported"]["gpu_hours"],
        21_504
    );
    let p = plan(&["--recipe", "janus-pro", "--model-size", "1b"]);
    assert_eq!(p["reported"]["gpu_hours"], 27_648);
    assert_eq!(p["stages"][2]["steps"], 80_000);
}

#[test]
fn the_table_prints_the_assumed_steps_and_what_ifs_change_it() {
    let out = janus(&[
        "train",
        "plan",
        "--recipe",
        "janus-pro",
        "--model-size",
        "7b",
    ]);
    let text = stdout_of(&out);
    for needle in [
        "janus-pro/stage2  360,000",
        "94.7%",
        "86,016 a100-40gb",
        "$352,666 at $4.10/h",
        "(implied)",
        "stopped at 270,000 (--steps 2=270000)",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
    // Another GPU, price and GPU count: the estimate follows, the paper's figure stays.
    let a100 = plan(&["--model-size", "7b"]);
    let h100 = plan(&[
        "--model-size",
        "7b",
        "--gpu",
        "h100",
        "--price",
        "2",
        "--gpus",
        "64",
    ]);
    let ratio = f(&a100["total"]["gpu_hours"]) / f(&h100["total"]["gpu_hours"]);
    assert!((ratio - 989.0 / 312.0).abs() < 1e-9, "{ratio}");
    assert!((f(&h100["total"]["cost"]) - 2.0 * f(&h100["total"]["gpu_hours"])).abs() < 1e-3);
    assert!((f(&h100["total"]["wall_hours"]) * 64.0 - f(&h100["total"]["gpu_hours"])).abs() < 1e-6);
    assert_eq!(h100["reported"]["gpu_hours"], 86_016);
    let gpus = json_of(&janus(&["train", "plan", "--list-gpus", "--json"]));
    assert!(gpus.as_array().unwrap().len() >= 4);
}

#[test]
fn a_model_directory_and_measure_on_the_tiny_model() {
    let data = fixtures().join("train/data.json").display().to_string();
    let p = plan(&[
        "--recipe",
        "janus-pro/stage3",
        "--model",
        &model("tiny-pro"),
        "--data",
        &data,
        "--batch-size",
        "6",
        "--ratio",
        "2:2:2",
        "--measure",
        "--measure-steps",
        "1",
    ]);
    // Two records of each kind, two of each per step: one epoch is one step.
    assert_eq!(p["stages"][0]["steps"], 1);
    assert!(p["reported"].is_null());
    assert!(p["model"]["parameters"].as_u64().unwrap() > 0);
    let m = &p["stages"][0]["measured"];
    assert_eq!(m["batch_size"], 3);
    assert!(f(&m["seconds_per_sample"]) > 0.0);
    assert!(f(&m["positions_per_sample"]) > 100.0);
    // Both text-to-image records are met for the first time: two images encoded.
    assert_eq!(m["images_encoded"], 2);
    assert!(f(&m["seconds_per_image"]) > 0.0);
    let want = (6.0 * f(&m["seconds_per_sample"]) + 2.0 * f(&m["seconds_per_image"])) / 3600.0;
    assert!((f(&m["hours"]) - want).abs() < 1e-12);
    assert!((f(&p["measured_hours"]) - want).abs() < 1e-12);
}

#[test]
fn bad_input_gives_one_error_line() {
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{\"model_type\": ").unwrap();
    let broken = broken.display().to_string();
    let cases: [(&[&str], &[&str]); 11] = [
        (
            &["--recipe", "janus-ultra"],
            &["unknown recipe", "janus-ultra"],
        ),
        (&["--gpu", "tpu-v5"], &["unknown GPU", "tpu-v5", "h100"]),
        (&["--gpus", "0"], &["--gpus"]),
        (&["--price", "-1"], &["--price", "-1"]),
        (&["--mfu", "0"], &["--mfu 0"]),
        (&["--mfu", "1.2"], &["--mfu 1.2"]),
        (&["--stages", "1,4"], &["unknown stage 4"]),
        (&["--steps", "0"], &["steps must be at least 1"]),
        (&["--model-size", "3b"], &["unknown model size"]),
        (&["--model", &broken], &["config.json", "invalid JSON"]),
        (&["--measure"], &["--measure needs --model"]),
    ];
    for (args, needles) in cases {
        let mut all = vec!["train", "plan"];
        all.extend_from_slice(args);
        assert_clean_error(&janus(&all), needles);
    }
}
