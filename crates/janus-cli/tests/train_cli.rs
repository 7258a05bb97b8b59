//! `janus train`, `janus train plot` and `janus data` from the command line: a run whose
//! checkpoint the inference commands load, bad samples skipped and counted, bad
//! invocations refused with one `error:` line, Ctrl-C saving a checkpoint to resume from.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn data() -> String {
    fixtures().join("train/data.json").display().to_string()
}

/// `janus -q train` on tiny-pro over `manifest`, 3 samples a step, into `out`.
fn train(manifest: &str, out: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    let (o, c, m) = (
        out.display().to_string(),
        cache.display().to_string(),
        model("tiny-pro"),
    );
    let mut args = vec![
        "-q",
        "train",
        "--recipe",
        "janus-pro/stage2",
        "--model",
        &m,
        "--data",
        manifest,
        "--out",
        &o,
        "--vq-cache",
        &c,
        "--batch-size",
        "3",
        "--ratio",
        "1:1:1",
    ];
    args.extend_from_slice(extra);
    janus(&args)
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_run_checks_its_data_trains_plots_and_its_checkpoint_serves_inference() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let c = cache.display().to_string();
    let out = janus(&["data", "check", &data(), "--model", &model("tiny-pro")]);
    let text = stdout_of(&out);
    assert!(
        text.contains("understanding") && text.contains("0 problem(s)"),
        "{text}"
    );
    let report = json_of(&janus(&[
        "data",
        "check",
        &data(),
        "--model",
        &model("tiny-pro"),
        "--json",
    ]));
    assert_eq!(report["kinds"][2]["samples"], 2);
    assert_eq!(report["kinds"][2]["targets"], 2 * 576);

    let encode = || {
        stdout_of(&janus(&[
            "-q",
            "data",
            "encode",
            &data(),
            "--model",
            &model("tiny-pro"),
            "--vq-cache",
            &c,
        ]))
    };
    let enc = encode();
    assert!(enc.contains("2 images: 2 encoded"), "{enc}");
    let again = encode();
    assert!(again.contains("0 encoded, 2 already cached"), "{again}");

    let run = tmp.path().join("run");
    let out = train(
        &data(),
        &run,
        &cache,
        &[
            "--steps",
            "2",
            "--save-every",
            "1",
            "--lr",
            "1e-3",
            "--warmup-steps",
            "0",
            "--eval",
            &data(),
            "--eval-every",
            "2",
        ],
    );
    let last = stdout_of(&out);
    assert!(last.trim().ends_with("step-2"), "{last}");
    assert!(run.join("step-1/model.safetensors").is_file());
    let m = metrics(&run);
    assert_eq!(m.len(), 3, "two steps and one evaluation");
    let eval = &m[2];
    assert_eq!(
        (eval["eval"].as_bool(), eval["step"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(eval["samples"], 6);
    let acc = eval["accuracy"].as_f64().unwrap();
    let codes = eval["t2i_code_accuracy"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&acc) && (0.0..=1.0).contains(&codes),
        "{eval}"
    );
    for key in [
        "loss",
        "loss_understanding",
        "loss_text",
        "loss_t2i",
        "lr",
        "grad_norm",
        "tokens",
        "seconds",
    ] {
        assert!(m[1][key].is_number(), "{key} in {}", m[1]);
    }
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(spec["config"]["lr"], 1e-3);
    assert_eq!(spec["config"]["ratio"], serde_json::json!([1, 1, 1]));

    let png = stdout_of(&janus(&["train", "plot", &run.display().to_string()]));
    let img = image::open(png.trim()).unwrap();
    assert_eq!(img.width(), 1000);

    let ckpt = run.join("step-2").display().to_string();
    let ans = json_of(&janus(&[
        "-q",
        "understand",
        "--model",
        &ckpt,
        "--image",
        &image("wide.png"),
        "--prompt",
        "What?",
        "--max-new-tokens",
        "3",
        "--json",
    ]));
    assert!(ans["token_ids"].as_array().unwrap().len() <= 3, "{ans}");
    assert!(ans["finish_reason"].is_string(), "{ans}");
    let gen_dir = tmp.path().join("gen").display().to_string();
    let gen = json_of(&janus(&[
        "-q",
        "generate",
        "--model",
        &ckpt,
        "--prompt",
        "A red apple.",
        "--seed",
        "1",
        "--out",
        &gen_dir,
        "--json",
    ]));
    assert_eq!(gen["image_tokens"][0].as_array().unwrap().len(), 576);
}

#[test]
fn bad_samples_are_skipped_with_a_warning_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let img = image("wide.png");
    std::fs::write(d.join("broken.png"), b"not an image").unwrap();
    let long = "word ".repeat(3000);
    std::fs::write(
        d.join("und.jsonl"),
        format!(
            "{{\"images\": [\"{img}\"], \"conversation\": [{{\"role\": \"user\", \"content\": \"What?\"}}, {{\"role\": \"assistant\", \"content\": \"Stripes.\"}}]}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("text.jsonl"),
        format!(
            "{{\"text\": \"{long}\"}}\n{{\"text\": \"unfinished\n{{\"text\": \"A short line.\"}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("t2i.jsonl"),
        format!("{{\"image\": \"broken.png\", \"caption\": \"x\"}}\n{{\"image\": \"{img}\", \"caption\": \"Stripes.\"}}\n"),
    )
    .unwrap();
    let manifest = d.join("data.json");
    std::fs::write(
        &manifest,
        r#"{"understanding": ["und.jsonl"], "text": ["text.jsonl"], "t2i": ["t2i.jsonl"]}"#,
    )
    .unwrap();
    let manifest = manifest.display().to_string();

    let check = janus(&[
        "-q",
        "data",
        "check",
        &manifest,
        "--model",
        &model("tiny-pro"),
    ]);
    let problems = String::from_utf8_lossy(&check.stdout).to_string();
    assert_clean_error(&check, &["3 bad sample(s)"]);
    assert!(
        problems.contains("text.jsonl:2: malformed JSON"),
        "{problems}"
    );
    assert!(problems.contains("context is 2048"), "{problems}");
    assert!(problems.contains("broken.png"), "{problems}");

    // Step 1 takes line 1 of each file in order: the long text and the broken image.
    let run = d.join("run");
    let out = train(
        &manifest,
        &run,
        &d.join("cache"),
        &["--steps", "2", "--no-shuffle"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipped bad sample") && stderr.contains("text.jsonl:2"),
        "{stderr}"
    );
    assert!(stderr.contains("2 bad samples skipped"), "{stderr}");
    let m = metrics(&run);
    assert_eq!(m[0]["samples"], 1);
    assert_eq!(m[0]["bad_samples"], 2);
    assert_eq!(m[1]["samples"], 3);
    assert!(!stderr.contains("panicked"));
}

#[test]
fn bad_invocations_fail_with_one_error_line_and_leave_the_run_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cache = d.join("cache");
    let run = d.join("run");
    stdout_of(&train(&data(), &run, &cache, &["--steps", "1"]));
    let before = listing(&run);
    let model_file = run.join("step-1/model.safetensors");
    let bytes = std::fs::read(&model_file).unwrap();
    let fresh = d.join("fresh");

    let missing = d.join("nope.json").display().to_string();
    assert_clean_error(&train(&missing, &fresh, &cache, &[]), &["nope.json"]);
    std::fs::write(d.join("m.json"), r#"{"text": ["gone.jsonl"]}"#).unwrap();
    let m = d.join("m.json").display().to_string();
    assert_clean_error(&train(&m, &fresh, &cache, &[]), &["gone.jsonl"]);
    std::fs::write(d.join("t.jsonl"), "{\"text\": \"hi\"}\n").unwrap();
    std::fs::write(d.join("only_text.json"), r#"{"text": ["t.jsonl"]}"#).unwrap();
    let only_text = d.join("only_text.json").display().to_string();
    assert_clean_error(
        &train(&only_text, &fresh, &cache, &[]),
        &["no usable understanding data"],
    );
    assert_clean_error(
        &train(&data(), &fresh, &cache, &["--train", "llm,decoder"]),
        &["unknown part \"decoder\""],
    );
    assert_clean_error(
        &train(&data(), &fresh, &cache, &["--train", "vq"]),
        &["always frozen"],
    );
    assert_clean_error(
        &train(&data(), &fresh, &cache, &["--lr", "5"]),
        &["learning rate 5", "out of range"],
    );
    assert_clean_error(
        &train(&data(), &fresh, &cache, &["--cfg-drop", "2"]),
        &["cfg drop", "out of range"],
    );
    assert_clean_error(
        &train(&data(), &fresh, &cache, &["--ratio", "1:1"]),
        &["ratio"],
    );
    let r = janus(&[
        "-q",
        "train",
        "--recipe",
        "janus-pro/stage9",
        "--model",
        &model("tiny-pro"),
        "--data",
        &data(),
        "--out",
        "x",
    ]);
    assert_clean_error(&r, &["unknown recipe", "janus-pro/stage3"]);
    assert!(!fresh.exists(), "a refused run left {}", fresh.display());

    let r = run.display().to_string();
    assert_clean_error(
        &train(&data(), &run, &cache, &["--steps", "2"]),
        &["already holds a training run"],
    );
    assert_clean_error(
        &janus(&["-q", "train", "--resume", &d.display().to_string()]),
        &["not a training run directory"],
    );
    assert_clean_error(
        &janus(&[
            "-q",
            "train",
            "--resume",
            &r,
            "--model",
            &model("tiny-janus"),
        ]),
        &["was trained from", "tiny-janus"],
    );
    assert_clean_error(
        &janus(&["-q", "train", "--resume", &r, "--lr", "1"]),
        &["only --steps"],
    );
    assert_clean_error(
        &janus(&["-q", "train", "plot", &d.display().to_string()]),
        &["metrics.jsonl"],
    );
    assert_eq!(listing(&run), before, "a refused command touched the run");
    assert_eq!(std::fs::read(&model_file).unwrap(), bytes);
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_that_resume_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let (o, c, m, dt) = (
        run.display().to_string(),
        cache.display().to_string(),
        model("tiny-pro"),
        data(),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args([
            "-q",
            "train",
            "--recipe",
            "janus-pro/stage1",
            "--model",
            &m,
            "--data",
            &dt,
            "--out",
            &o,
            "--vq-cache",
            &c,
            "--batch-size",
            "2",
            "--steps",
            "1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while metrics(&run).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no step finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped at step"), "{stderr}");
    let saved: Vec<PathBuf> = listing(&run)
        .into_iter()
        .filter(|n| n.starts_with("step-"))
        .map(|n| run.join(n))
        .collect();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let step: u64 = saved[0].file_name().unwrap().to_string_lossy()[5..]
        .parse()
        .unwrap();
    let total = (step + 1).to_string();
    let out = janus(&["-q", "train", "--resume", &o, "--steps", &total]);
    let last = stdout_of(&out);
    assert!(last.trim().ends_with(&format!("step-{total}")), "{last}");
    assert_eq!(metrics(&run).len() as u64, step + 1);
}

/// `--lora` with recomputed layers and a q8 base: adapter-only checkpoints, a merged model,
/// and `--lora` at inference giving the merged model's tokens; a run that cannot fit the
/// memory limit is refused with the estimate before anything is written.
#[test]
fn lora_runs_merge_and_apply_at_inference() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = tmp.path().join("lora");
    let out = train(
        &data(),
        &run,
        &cache,
        &[
            "--steps",
            "2",
            "--lr",
            "1e-2",
            "--lora",
            "4",
            "--lora-targets",
            "q,v,down,gen_head,lm_head",
            "--checkpoint-layers",
            "--quant",
            "q8",
        ],
    );
    assert!(stdout_of(&out).trim().ends_with("step-2"));
    let ckpt = run.join("step-2");
    assert!(ckpt.join("adapter_config.json").is_file());
    assert!(!ckpt.join("model.safetensors").exists());
    let m = metrics(&run);
    assert!(m[1]["peak_rss"].as_u64().unwrap_or(0) > 0 || !cfg!(target_os = "linux"));

    let merged = tmp.path().join("merged");
    let (r, mg) = (run.display().to_string(), merged.display().to_string());
    assert_eq!(
        stdout_of(&janus(&["-q", "train", "merge", &r, "--out", &mg])).trim(),
        mg
    );
    let again = janus(&["-q", "train", "merge", &r, "--out", &mg]);
    assert_clean_error(&again, &["exists"]);

    let ask = |model: &str, lora: Option<&Path>| {
        let mut args = vec![
            "-q".to_string(),
            "understand".into(),
            "--model".into(),
            model.into(),
            "--dtype".into(),
            "f32".into(),
            "--image".into(),
            image("wide.png"),
            "--prompt".into(),
            "What?".into(),
            "--max-new-tokens".into(),
            "6".into(),
            "--json".into(),
        ];
        if let Some(l) = lora {
            args.extend(["--lora".into(), l.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        json_of(&janus(&args))["token_ids"].clone()
    };
    assert_eq!(ask(&mg, None), ask(&model("tiny-pro"), Some(&ckpt)));

    let refused = tmp.path().join("refused");
    let out = train(
        &data(),
        &refused,
        &cache,
        &["--steps", "1", "--memory-limit", "0.01"],
    );
    assert_clean_error(&out, &["needs about", "GiB", "--memory-limit"]);
    assert!(!refused.exists(), "nothing written for a refused run");
    // A run directory is not an adapter directory.
    let bad = janus(&[
        "-q",
        "understand",
        "--model",
        &model("tiny-pro"),
        "--lora",
        &r,
        "--image",
        &image("wide.png"),
        "--prompt",
        "What?",
    ]);
    assert_clean_error(&bad, &["adapter"]);
    // Commands that read the checkpoint as it is refuse --lora instead of ignoring it.
    let info = janus(&[
        "info",
        "--model",
        &model("tiny-pro"),
        "--lora",
        &ckpt.display().to_string(),
    ]);
    assert_clean_error(&info, &["--lora", "janus train merge"]);
}
