//! Every bad input gets one clear `error:` line on stderr and a non-zero exit status,
//! never a panic or a backtrace, and leaves nothing half-written behind.
//!
//! Complements `cli.rs` (which covers a missing model, a missing or garbage image, two
//! placeholders for one image, a negative understanding temperature, an unknown dtype,
//! `--parallel 0`, a negative or NaN cfg weight, an output path that is a file, a directory
//! without config.json for `understand`, and an overlong understanding prompt) with the
//! other commands and the remaining inputs.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

/// `generate` on tiny-pro with `extra` arguments, writing to `out`.
fn generate(out: &Path, extra: &[&str]) -> std::process::Output {
    generate_with(&model("tiny-pro"), out, extra)
}

/// `generate` on `model_arg` with `extra` arguments, writing to `out`.
fn generate_with(model_arg: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let o = out.display().to_string();
    let mut args = vec!["-q", "generate", "--model", model_arg, "--out", &o];
    args.extend_from_slice(extra);
    janus(&args)
}

/// `understand` on `model_arg` with `extra` arguments.
fn understand(model_arg: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "-q",
        "understand",
        "--model",
        model_arg,
        "--max-new-tokens",
        "2",
    ];
    args.extend_from_slice(extra);
    janus(&args)
}

/// No PNG and no temporary file in `dir` (which may not exist).
fn assert_nothing_written(dir: &Path) {
    let left = listing(dir);
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn bad_images() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-pro");
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let png = std::fs::read(fixtures().join("images/wide.png")).unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        // A PNG cut short: the format is recognised, decoding fails.
        (
            write("cut.png", &png[..png.len() / 3]),
            vec!["cut.png", "cannot decode"],
        ),
        // Text renamed .png, and an SVG: not a supported format.
        (
            write("notes.png", b"shopping list: eggs, milk\n"),
            vec!["notes.png", "unrecognised image format"],
        ),
        (
            write(
                "drawing.svg",
                br#"<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>"#,
            ),
            vec!["drawing.svg", "unrecognised image format"],
        ),
        (write("empty.png", b""), vec!["empty.png"]),
    ];
    for (path, needles) in &cases {
        assert_clean_error(
            &understand(&m, &["--prompt", "what is it?", "--image", path]),
            needles,
        );
        assert_clean_error(
            &janus(&["-q", "vq", "encode", path, "--model", &m]),
            needles,
        );
    }
    // A missing image for vq encode (understand's case is in cli.rs).
    let missing = tmp.path().join("nope.png").display().to_string();
    assert_clean_error(
        &janus(&["-q", "vq", "encode", &missing, "--model", &m]),
        &["nope.png", "not found"],
    );

    // An unreadable image. Tests usually run as root in CI containers, where permission
    // bits do not block reads: detect that and skip this sub-case rather than fail.
    let locked = write("locked.png", &png);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read(&locked).is_err() {
            assert_clean_error(
                &understand(&m, &["--prompt", "hi", "--image", &locked]),
                &["locked.png", "cannot read"],
            );
        } else {
            eprintln!("skipping the unreadable-image case: permissions do not apply (root)");
        }
    }
}

#[test]
fn wrong_placeholder_counts() {
    let m = model("tiny-janus");
    let img = image("wide.png");
    assert_clean_error(
        &understand(&m, &["--prompt", "<image_placeholder> what is this?"]),
        &["1", "0"],
    );
    assert_clean_error(
        &understand(
            &m,
            &[
                "--prompt",
                "<image_placeholder> compare",
                "--image",
                &img,
                "--image",
                &img,
            ],
        ),
        &["1", "2"],
    );
}

/// A copy of a fixture model with one file replaced by a prefix of itself.
fn truncated_copy(name: &str, file: &str, dst: &Path) -> String {
    copy_model(name, dst);
    let bytes = std::fs::read(model_dir(name).join(file)).unwrap();
    std::fs::write(dst.join(file), &bytes[..bytes.len() / 2]).unwrap();
    dst.display().to_string()
}

#[test]
fn broken_model_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let out_s = out.display().to_string();
    let img = image("wide.png");

    // Every command names the missing config.json.
    let bare = tmp.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let bare_s = bare.display().to_string();
    let codes = tmp.path().join("codes.json");
    std::fs::write(&codes, "[1, 2]").unwrap();
    let codes_s = codes.display().to_string();
    for args in [
        vec!["info", "--model", &bare_s],
        vec!["convert", "--model", &bare_s, "--out", &out_s],
        vec!["vq", "encode", &img, "--model", &bare_s],
        vec![
            "vq", "decode", &codes_s, "--model", &bare_s, "--out", &out_s,
        ],
        vec![
            "generate", "--model", &bare_s, "--prompt", "x", "--out", &out_s,
        ],
    ] {
        assert_clean_error(&janus(&args), &["config.json"]);
    }
    assert_nothing_written(&out);

    // A truncated safetensors shard and a truncated PyTorch .bin: named, for every command.
    let shard = "model-00001-of-00002.safetensors";
    let st = truncated_copy("tiny-pro", shard, &tmp.path().join("cut-st"));
    let bin = truncated_copy(
        "tiny-janus",
        "pytorch_model.bin",
        &tmp.path().join("cut-bin"),
    );
    for (dir, file) in [(&st, shard), (&bin, "pytorch_model.bin")] {
        assert_clean_error(&understand(dir, &["--prompt", "hi"]), &[file]);
        assert_clean_error(&janus(&["info", "--model", dir]), &[file]);
        assert_clean_error(
            &janus(&["convert", "--model", dir, "--out", &out_s]),
            &[file],
        );
        assert_clean_error(&generate_with(dir, &out, &["--prompt", "x"]), &[file]);
        assert_clean_error(&janus(&["vq", "encode", &img, "--model", dir]), &[file]);
    }
    assert_nothing_written(&out);

    // An unparsable config.json.
    let bad_cfg = tmp.path().join("bad-config");
    copy_model("tiny-pro", &bad_cfg);
    std::fs::write(bad_cfg.join("config.json"), "{\"model_type\": \"janus\",").unwrap();
    assert_clean_error(
        &janus(&["info", "--model", &bad_cfg.display().to_string()]),
        &["config.json", "invalid JSON"],
    );

    // A tokenizer without the Janus special tokens.
    let tok = tmp.path().join("no-boi");
    copy_model("tiny-pro", &tok);
    let text = std::fs::read_to_string(tok.join("tokenizer.json")).unwrap();
    assert!(text.contains("<begin_of_image>"));
    std::fs::write(
        tok.join("tokenizer.json"),
        text.replace("<begin_of_image>", "<start_of_picture>"),
    )
    .unwrap();
    let tok_s = tok.display().to_string();
    assert_clean_error(
        &understand(&tok_s, &["--prompt", "hi"]),
        &["<begin_of_image>", "missing"],
    );
    assert_clean_error(
        &generate_with(&tok_s, &out, &["--prompt", "x"]),
        &["<begin_of_image>"],
    );
    assert_nothing_written(&out);
}

#[test]
fn bad_generation_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    for (args, needles) in [
        (vec!["--cfg-weight", "inf"], vec!["cfg weight", "inf"]),
        (vec!["--temperature", "-0.5"], vec!["temperature", "-0.5"]),
        (vec!["--temperature", "NaN"], vec!["temperature", "NaN"]),
        (vec!["--temperature", "inf"], vec!["temperature", "inf"]),
        (vec!["--quant", "q5"], vec!["--quant", "q5"]),
    ] {
        let mut all = vec!["--prompt", "x"];
        all.extend_from_slice(&args);
        assert_clean_error(&generate(&out, &all), &needles);
    }
    assert_clean_error(
        &understand(
            &model("tiny-pro"),
            &["--prompt", "hi", "--temperature", "NaN"],
        ),
        &["temperature"],
    );
    // Validation happens before the output directory is created.
    assert!(!out.exists());

    // A prompt longer than the context, for generation (understanding's is in cli.rs).
    let long = "word ".repeat(3000);
    assert_clean_error(
        &generate(&out, &["--prompt", &long]),
        &["tokens", "2048 positions"],
    );
    assert_nothing_written(&out);
}

#[test]
fn parallel_too_large_for_memory_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let t0 = Instant::now();
    let line = assert_clean_error(
        &generate(&out, &["--prompt", "x", "--parallel", "100000"]),
        &["100000", "available", "smaller parallel"],
    );
    // The tiny model loads in well under a second; no KV cache or decode was attempted.
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        line.contains("KV cache") && line.contains("VQ decode"),
        "{line}"
    );
    assert_nothing_written(&out);
}

#[test]
fn unwritable_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    // A path under a regular file can be neither created nor written.
    let under: PathBuf = file.join("sub");
    let under_s = under.display().to_string();
    assert_clean_error(&generate(&under, &["--prompt", "x"]), &["plain-file/sub"]);
    let m = model("tiny-pro");
    let codes = tmp.path().join("codes.json");
    std::fs::write(&codes, serde_json::to_string(&vec![0u32; 576]).unwrap()).unwrap();
    let png = under.join("img.png").display().to_string();
    assert_clean_error(
        &janus(&[
            "-q",
            "vq",
            "decode",
            &codes.display().to_string(),
            "--model",
            &m,
            "--out",
            &png,
        ]),
        &["plain-file/sub/img.png"],
    );
    let json_out = under.join("codes.json").display().to_string();
    assert_clean_error(
        &janus(&[
            "-q",
            "vq",
            "encode",
            &image("wide.png"),
            "--model",
            &m,
            "--out",
            &json_out,
        ]),
        &["plain-file/sub/codes.json"],
    );
    assert_clean_error(
        &janus(&["-q", "convert", "--model", &m, "--out", &under_s]),
        &["plain-file"],
    );
    // Only the two inputs are there: no temporary files or directories.
    assert_eq!(listing(tmp.path()), ["codes.json", "plain-file"]);
}

#[test]
fn devices_are_chosen_or_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model("tiny-pro");
    // The CPU by name and `auto` (the CPU in a build without CUDA) draw the same codes.
    let codes = |device: &str| {
        let dir = tmp.path().join(device);
        let args = [
            "--prompt", "a cat", "--seed", "3", "--json", "--device", device,
        ];
        json_of(&generate(&dir, &args))["image_tokens"].clone()
    };
    assert_clean_error(
        &understand(&m, &["--prompt", "hi", "--device", "tpu"]),
        &["tpu", "cpu, cuda, cuda:N or auto"],
    );
    if janus::device::CUDA_BUILT {
        return;
    }
    let cpu = codes("cpu");
    assert!(cpu[0].as_array().is_some_and(|c| !c.is_empty()), "{cpu}");
    assert_eq!(cpu, codes("auto"));
    let out = tmp.path().join("out");
    assert_clean_error(
        &generate(&out, &["--prompt", "x", "--device", "cuda"]),
        &["--device cuda:0", "built without CUDA", "--features cuda"],
    );
    assert_nothing_written(&out);
    assert_clean_error(
        &understand(&m, &["--prompt", "hi", "--device", "cuda:1"]),
        &["--device cuda:1", "built without CUDA"],
    );
    let data = fixtures().join("train/data.json").display().to_string();
    let cache = tmp.path().join("cache");
    let cache_s = cache.display().to_string();
    assert_clean_error(
        &janus(&[
            "-q",
            "data",
            "encode",
            &data,
            "--model",
            &m,
            "--vq-cache",
            &cache_s,
            "--device",
            "cuda",
        ]),
        &["built without CUDA"],
    );
    assert!(!cache.exists(), "a code cache was created");
    let run = tmp.path().join("run");
    let run_s = run.display().to_string();
    assert_clean_error(
        &janus(&[
            "-q",
            "train",
            "--recipe",
            "janus-pro/stage1",
            "--model",
            &m,
            "--data",
            &data,
            "--out",
            &run_s,
            "--device",
            "cuda",
        ]),
        &["built without CUDA"],
    );
    assert!(!run.exists(), "a run directory was created");
}
