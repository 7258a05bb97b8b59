//! The `janus` command end to end on the tiny fixture models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

fn janus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running janus")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "janus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let last = stdout.lines().last().expect("no output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn golden(model: &str, file: &str) -> Value {
    let p = fixtures().join("golden").join(model).join(file);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn understand_json_matches_the_reference() {
    let cases = golden("tiny-pro", "understand.json");
    let case = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["messages"].as_array().unwrap().len() == 1
                && c["messages"][0]["images"].as_array().unwrap().len() == 1
        })
        .expect("a one-image single-turn case");
    let msg = &case["messages"][0];
    let image = fixtures()
        .join("images")
        .join(msg["images"][0].as_str().unwrap());
    let max_new = case["max_new_tokens"].as_u64().unwrap().to_string();
    let out = janus(&[
        "understand",
        "--dtype",
        "f32",
        "--model",
        &model("tiny-pro"),
        "--prompt",
        msg["content"].as_str().unwrap(),
        "--image",
        &image.display().to_string(),
        "--max-new-tokens",
        &max_new,
        "--json",
    ]);
    let v = json_of(&out);
    assert_eq!(ids(&v["token_ids"]), ids(&case["greedy_ids"]));
    assert!(v["text"].is_string());
    assert!(v["timings"]["prefill_s"].as_f64().unwrap() >= 0.0);
}

#[test]
fn understand_streams_plain_text() {
    let out = janus(&[
        "understand",
        "--model",
        &model("tiny-janus"),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0.7",
        "--top-p",
        "0.9",
        "--seed",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}

#[test]
fn generate_writes_pngs_with_reference_codes() {
    let cases = golden("tiny-pro", "t2i.json");
    let case = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["parallel"] == 2)
        .expect("a P=2 case");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("imgs");
    let cfg = case["cfg_weight"].as_f64().unwrap().to_string();
    // The goldens are float32 (`--dtype auto` is bf16 on CPUs with the bf16 kernels).
    let out = janus(&[
        "generate",
        "--dtype",
        "f32",
        "--model",
        &model("tiny-pro"),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--parallel",
        "2",
        "--cfg-weight",
        &cfg,
        "--temperature",
        "0",
        "--seed",
        "1",
        "--out",
        &out_dir.display().to_string(),
        "--json",
    ]);
    let v = json_of(&out);
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    let tokens = v["image_tokens"].as_array().unwrap();
    for (i, want) in case["codes"].as_array().unwrap().iter().enumerate() {
        let got = ids(&tokens[i]);
        assert_eq!(got.len(), 576);
        // Greedy codes equal the reference's (the fixture's near-ties are far from this case).
        assert_eq!(got, ids(want), "image {i}");
    }
    for p in images {
        let img = image::open(p.as_str().unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (384, 384));
    }
    // Running again never overwrites.
    let v2 = json_of(&janus(&[
        "generate",
        "--model",
        &model("tiny-pro"),
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--temperature",
        "0",
        "--seed",
        "1",
        "--out",
        &out_dir.display().to_string(),
        "--json",
    ]));
    assert_ne!(v2["images"][0], v["images"][0]);
}

/// Fails with exit status != 0, one `error:` line naming `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("stack backtrace"), "backtrace: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains(needle),
        "error {line:?} does not mention {needle:?}"
    );
}

#[test]
fn bad_inputs_give_one_clear_error() {
    let m = model("tiny-pro");
    let img = fixtures().join("images/wide.png").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();

    assert_clean_error(
        &janus(&[
            "understand",
            "--model",
            "/nonexistent/model",
            "--prompt",
            "hi",
        ]),
        "/nonexistent/model",
    );
    assert_clean_error(
        &janus(&[
            "understand",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--image",
            "/nonexistent.png",
        ]),
        "/nonexistent.png",
    );
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image at all").unwrap();
    assert_clean_error(
        &janus(&[
            "understand",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--image",
            &garbage.display().to_string(),
        ]),
        "garbage.png",
    );
    assert_clean_error(
        &janus(&[
            "understand",
            "--model",
            &m,
            "--prompt",
            "<image_placeholder> and <image_placeholder>",
            "--image",
            &img,
        ]),
        "2",
    );
    assert_clean_error(
        &janus(&[
            "understand",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--temperature",
            "-1",
        ]),
        "temperature",
    );
    assert_clean_error(
        &janus(&[
            "understand",
            "--model",
            &m,
            "--prompt",
            "hi",
            "--dtype",
            "f64",
        ]),
        "f64",
    );
    assert_clean_error(
        &janus(&[
            "generate",
            "--model",
            &m,
            "--prompt",
            "x",
            "--parallel",
            "0",
            "--out",
            &out,
        ]),
        "parallel",
    );
    assert_clean_error(
        &janus(&[
            "generate",
            "--model",
            &m,
            "--prompt",
            "x",
            "--cfg-weight",
            "-2",
            "--out",
            &out,
        ]),
        "cfg weight",
    );
    assert_clean_error(
        &janus(&[
            "generate",
            "--model",
            &m,
            "--prompt",
            "x",
            "--cfg-weight",
            "NaN",
            "--out",
            &out,
        ]),
        "cfg weight",
    );
    // An output path that is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    assert_clean_error(
        &janus(&[
            "generate",
            "--model",
            &m,
            "--prompt",
            "x",
            "--out",
            &file.display().to_string(),
        ]),
        "a-file",
    );
    // A model directory without config.json.
    assert_clean_error(
        &janus(&["understand", "--model", &out, "--prompt", "hi"]),
        "config.json",
    );
}

#[test]
fn prompt_longer_than_the_context_is_refused() {
    // The tiny models hold 2048 positions; 3000 words overflow it.
    let long = "word ".repeat(3000);
    assert_clean_error(
        &janus(&[
            "understand",
            "--model",
            &model("tiny-pro"),
            "--prompt",
            &long,
        ]),
        "context",
    );
}
