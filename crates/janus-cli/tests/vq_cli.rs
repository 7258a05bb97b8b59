//! `janus vq encode|decode` end to end: the CLI's codes and images are exactly what the
//! library gives in-process, and what `janus generate --json` prints decodes to its PNGs.
//!
//! With random tiny models re-encoding a decoded image does not give back the same codes
//! (the VQ is not trained), so the round trip is checked against the library instead:
//! image -> codes (CLI = `Pipeline::vq_encode`, = the PyTorch golden but for near-ties),
//! codes -> PNG (CLI = `Pipeline::vq_decode`, lossless through the PNG), PNG -> codes (CLI
//! = `Pipeline::vq_encode` of the decoded image).

mod support;

use std::path::Path;

use candle_core::{DType, Device};
use janus::pipeline::{DTypeChoice, Pipeline};
use serde_json::Value;
use support::*;

fn pipeline(name: &str) -> Pipeline {
    Pipeline::load(
        &model_dir(name),
        DTypeChoice::Fixed(DType::F32),
        &Device::Cpu,
    )
    .unwrap()
}

fn codes_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a list of codes")
        .iter()
        .map(|c| c.as_u64().unwrap() as u32)
        .collect()
}

/// The golden VQ-encode input image and codes with their top-2 margins.
fn golden_encode(model: &str) -> (String, Vec<u32>, Vec<f32>) {
    let path = fixtures().join("golden").join(model).join("vq.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let image = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("encode_image").cloned())
        .expect("encode_image metadata");
    let g = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let flat = |k: &str| g[k].flatten_all().unwrap();
    let codes = flat("encode_codes")
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let margin = flat("encode_margin").to_vec1().unwrap();
    (image, codes, margin)
}

fn vq(args: &[&str], model: &str) -> std::process::Output {
    let m = support::model(model);
    let mut all = vec!["-q", "vq"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--model", &m, "--dtype", "f32"]);
    janus(&all)
}

#[test]
fn encode_decode_round_trip_matches_the_library() {
    for model in ["tiny-pro", "tiny-janus"] {
        let pipe = pipeline(model);
        let dir = tempfile::tempdir().unwrap();
        let (image_name, golden, margin) = golden_encode(model);
        let img_path = image(&image_name);
        let codes_json = dir.path().join("codes.json");
        let codes_arg = codes_json.display().to_string();

        stdout_of(&vq(&["encode", &img_path, "--out", &codes_arg], model));
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&codes_json).unwrap()).unwrap();
        assert_eq!(v["grid"], serde_json::json!([24, 24]), "{model}");
        assert_eq!(v["codebook_size"], 128, "{model}");
        assert!(
            v["model"].as_str().unwrap().ends_with(model),
            "{}",
            v["model"]
        );
        let codes = codes_of(&v["codes"]);
        let img = janus::processor::load_image(&img_path).unwrap();
        assert_eq!(
            codes,
            pipe.vq_encode(&img).unwrap(),
            "{model}: CLI vs library"
        );
        for (i, (a, b)) in codes.iter().zip(&golden).enumerate() {
            assert!(
                a == b || margin[i] < 1e-5,
                "{model}: code {i} is {a}, reference {b}"
            );
        }

        // Without --out the same JSON goes to stdout.
        let printed: Value =
            serde_json::from_str(&stdout_of(&vq(&["encode", &img_path], model))).unwrap();
        assert_eq!(codes_of(&printed["codes"]), codes);

        let png = dir.path().join("decoded.png");
        let png_arg = png.display().to_string();
        let out = stdout_of(&vq(&["decode", &codes_arg, "--out", &png_arg], model));
        assert_eq!(out.trim(), png_arg);
        let decoded = image::open(&png).unwrap().to_rgb8();
        assert_eq!(decoded.dimensions(), (384, 384));
        assert_eq!(
            decoded,
            pipe.vq_decode(&codes).unwrap(),
            "{model}: decoded pixels"
        );

        // Re-encoding the PNG through the CLI = the library on the decoded image.
        let again: Value =
            serde_json::from_str(&stdout_of(&vq(&["encode", &png_arg], model))).unwrap();
        let again = codes_of(&again["codes"]);
        let want = pipe
            .vq_encode(&image::DynamicImage::ImageRgb8(decoded))
            .unwrap();
        assert_eq!(again, want, "{model}: re-encoded codes");

        // An existing output is not replaced without --force.
        let e = vq(&["decode", &codes_arg, "--out", &png_arg], model);
        assert_clean_error(&e, &["already exists"]);
        stdout_of(&vq(
            &["decode", &codes_arg, "--out", &png_arg, "--force"],
            model,
        ));
    }
}

#[test]
fn decode_reads_generate_json_and_bare_lists() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("gen");
    let m = model("tiny-pro");
    let gen = json_of(&janus(&[
        "-q",
        "generate",
        "--model",
        &m,
        "--dtype",
        "f32",
        "--prompt",
        "a red apple",
        "--parallel",
        "2",
        "--temperature",
        "1",
        "--seed",
        "5",
        "--out",
        &out_dir.display().to_string(),
        "--json",
    ]));
    let gen_json = dir.path().join("gen.json");
    std::fs::write(&gen_json, gen.to_string()).unwrap();
    let target = dir.path().join("img.png");
    let printed = stdout_of(&vq(
        &[
            "decode",
            &gen_json.display().to_string(),
            "--out",
            &target.display().to_string(),
        ],
        "tiny-pro",
    ));
    let paths: Vec<&str> = printed.lines().collect();
    assert_eq!(paths.len(), 2);
    for (i, p) in paths.iter().enumerate() {
        assert!(p.ends_with(&format!("img-{i}.png")), "{p}");
        let ours = image::open(p).unwrap().to_rgb8();
        let generated = image::open(gen["images"][i].as_str().unwrap())
            .unwrap()
            .to_rgb8();
        assert_eq!(ours, generated, "image {i}");
    }

    // A bare list of codes gives exactly the named file.
    let bare = dir.path().join("bare.json");
    std::fs::write(&bare, gen["image_tokens"][1].to_string()).unwrap();
    let single = dir.path().join("single.png");
    stdout_of(&vq(
        &[
            "decode",
            &bare.display().to_string(),
            "--out",
            &single.display().to_string(),
        ],
        "tiny-pro",
    ));
    assert_eq!(
        image::open(&single).unwrap().to_rgb8(),
        image::open(paths[1]).unwrap().to_rgb8()
    );
}

#[test]
fn bad_code_files_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let out = dir.path().join("out.png").display().to_string();
    let n576 = |c: u32| serde_json::to_string(&vec![c; 576]).unwrap();
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            write("broken.json", "{\"codes\": [1, 2"),
            vec!["broken.json", "invalid JSON"],
        ),
        (
            write("short.json", "[1, 2, 3]"),
            vec!["3 codes", "576", "24x24"],
        ),
        (
            write("range.json", &n576(128)),
            vec!["code 128", "outside the codebook of 128"],
        ),
        (
            write("nested.json", &format!("[{}, [1, 2]]", n576(0))),
            vec!["list 1", "2 codes"],
        ),
        (write("neg.json", "[1, -1]"), vec!["entry 1 (-1)"]),
        (
            write(
                "grid.json",
                &format!("{{\"grid\": [16, 16], \"codes\": {}}}", n576(0)),
            ),
            vec!["16x16", "24x24"],
        ),
        (
            write(
                "book.json",
                &format!("{{\"codebook_size\": 16384, \"codes\": {}}}", n576(0)),
            ),
            vec!["16384", "128"],
        ),
        (write("obj.json", "{\"foo\": 1}"), vec!["\"codes\""]),
        (
            dir.path().join("missing.json").display().to_string(),
            vec!["missing.json"],
        ),
    ];
    for (file, needles) in &cases {
        assert_clean_error(&vq(&["decode", file, "--out", &out], "tiny-pro"), needles);
        assert!(!Path::new(&out).exists(), "{file}: an output was written");
    }
    // Nothing but the inputs is left (no temporary files).
    assert!(listing(dir.path()).iter().all(|n| n.ends_with(".json")));

    // Encoding refuses what is not an image, before loading the model.
    let text = write("note.png", "just text");
    assert_clean_error(&vq(&["encode", &text], "tiny-pro"), &["note.png"]);
}
