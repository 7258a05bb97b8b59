//! `janus bench` on the tiny fixture models: the JSON line's keys and values on both
//! layouts, a CFG batch of 2 images, the human table, and refused inputs.

mod support;

use serde_json::Value;
use support::*;

const KEYS: [&str; 7] = [
    "siglip_s",
    "prefill_tokens",
    "prefill_s",
    "decode_tok_s",
    "t2i_step_s",
    "vq_decode_s",
    "peak_rss_mb",
];

/// `janus -q bench --model <name> --json` plus `extra`, with 3 decode tokens and 3 t2i
/// steps unless `extra` sets them.
fn bench(name: &str, extra: &[&str]) -> std::process::Output {
    let m = model(name);
    let mut args = vec!["-q", "bench", "--model", &m, "--json"];
    for flag in ["--decode-tokens", "--t2i-steps"] {
        if !extra.contains(&flag) {
            args.extend([flag, "3"]);
        }
    }
    args.extend_from_slice(extra);
    janus(&args)
}

/// Parses the last stdout line and checks it has exactly the seven keys, all finite and
/// positive numbers, and the machine they ran on. Returns the object without the machine.
fn results(out: &std::process::Output) -> serde_json::Map<String, Value> {
    let stdout = stdout_of(out);
    let last = stdout.lines().last().expect("stdout is empty");
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    let mut obj = v.as_object().expect("a JSON object").clone();
    let machine = obj.remove("machine").expect("the machine object");
    assert!(
        !machine["cpu"].as_str().expect("cpu").is_empty(),
        "{machine}"
    );
    let kernels = machine["kernels"].as_str().expect("kernels");
    assert!(janus::kernels::Isa::available()
        .iter()
        .any(|i| i.name() == kernels));
    assert!(machine["threads"].as_u64().expect("threads") >= 1);
    let gb_s = machine["read_gb_s"].as_f64().expect("read_gb_s");
    assert!(gb_s.is_finite() && gb_s > 0.1, "{machine}");
    if !janus::device::CUDA_BUILT {
        assert_eq!(machine["device"], "cpu", "{machine}");
    }
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    let mut want = KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want);
    for (k, v) in &obj {
        let x = v
            .as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number: {v}"));
        assert!(x.is_finite() && x > 0.0, "{k} = {x}");
    }
    obj
}

/// Image tokens per image, as `janus info` reads them from the config.
fn image_tokens(name: &str) -> u64 {
    let info = json_of(&janus(&["info", "--model", &model(name), "--json"]));
    info["architecture"]["vision"]["image_tokens"]
        .as_u64()
        .expect("image_tokens in janus info")
}

// Each run decodes two VQ grids (warm-up and timed), the slow part on the tiny models, so
// the runs are few: one per layout (tiny-pro with a CFG batch of 2 images) and one table.
#[test]
fn json_results_on_both_layouts() {
    for (name, extra) in [("tiny-pro", &["--parallel", "2"][..]), ("tiny-janus", &[])] {
        let r = results(&bench(name, extra));
        assert_eq!(
            r["prefill_tokens"].as_u64(),
            Some(image_tokens(name) + 40),
            "{name}"
        );
    }
}

#[test]
fn human_table() {
    let m = model("tiny-pro");
    let out = janus(&[
        "-q",
        "bench",
        "--model",
        &m,
        "--decode-tokens",
        "2",
        "--t2i-steps",
        "2",
    ]);
    let stdout = stdout_of(&out);
    for row in [
        "siglip",
        "prefill",
        "decode",
        "t2i step",
        "vq decode",
        "peak rss",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "no {row} row: {stdout}"
        );
    }
    for key in ["cpu", "kernels", "memory", "dtype"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(key)),
            "no {key} line: {stdout}"
        );
    }
    assert!(
        stdout.contains("threads") && stdout.contains("GB/s read"),
        "{stdout}"
    );
    assert!(!stdout.contains('{'), "{stdout}");
}

#[test]
fn invalid_values_are_refused() {
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--t2i-steps", "0"], &["t2i steps", "at least 1"]),
        (&["--decode-tokens", "0"], &["decode tokens", "at least 1"]),
        (&["--parallel", "0"], &["parallel", "at least 1"]),
        // The fixture's grid has 576 codes; the first step is untimed.
        (&["--t2i-steps", "576"], &["575", "576"]),
        // 616 prefill tokens + 1500 exceed the fixture's context of 2048.
        (&["--decode-tokens", "1500"], &["context", "2048"]),
    ];
    for (extra, needles) in cases {
        assert_clean_error(&bench("tiny-pro", extra), needles);
    }
    let missing = janus(&["-q", "bench", "--model", "/nonexistent/janus-model"]);
    assert_clean_error(&missing, &["/nonexistent/janus-model", "does not exist"]);
    let absurd = bench("tiny-pro", &["--parallel", "100000000000"]);
    assert_clean_error(&absurd, &["memory"]);
}
