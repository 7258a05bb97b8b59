//! `janus info` against config.json and a hand count, and `janus convert` checked by
//! loading the copy: same greedy understanding ids, same gen_head output.

mod support;

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use janus::pipeline::{DTypeChoice, Pipeline, UnderstandOptions};
use janus::processor::{ImageInput, Message};
use janus::weights::TensorStore;
use serde_json::Value;
use support::*;

fn info_json(dir: &str) -> Value {
    json_of(&janus(&["info", "--model", dir, "--json"]))
}

fn config(name: &str) -> Value {
    let text = std::fs::read_to_string(model_dir(name).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn part(info: &Value, name: &str) -> (u64, u64) {
    let p = info["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == name)
        .unwrap_or_else(|| panic!("no part {name}: {}", info["parts"]));
    (
        p["parameters"].as_u64().unwrap(),
        p["tensors"].as_u64().unwrap(),
    )
}

/// Parameters of the tiny models' parts, counted by hand from their sizes
/// (fixtures/golden/MANIFEST.md: D 64, FFN 128, 2 layers, vocab 640; SigLIP width 32,
/// 2 blocks, MLP 64, patch 16, 576 positions; 128 codes of dim 8).
fn hand_counted(part: &str) -> u64 {
    match part {
        // embed_tokens + lm_head + 2 x (q, k, v, o + gate, up, down + 2 norms) + norm
        "llm" => 2 * 640 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64,
        // patch conv (+bias) + pos_embed + 2 x (2 LN + qkv + proj + fc1 + fc2) + norm
        "vision" => {
            (32 * 3 * 16 * 16 + 32)
                + 576 * 32
                + 2 * (2 * 64 + (32 * 96 + 96) + (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32))
                + 64
        }
        "aligner" => (32 * 64 + 64) + (64 * 64 + 64),
        "gen_embed" => 128 * 8,
        "gen_aligner" => (8 * 64 + 64) + (64 * 64 + 64),
        "gen_head" => (64 * 64 + 64) + (64 * 128 + 128),
        "vq_codebook" => 128 * 8,
        other => panic!("no hand count for {other}"),
    }
}

fn elements(store: &TensorStore, keep: impl Fn(&str) -> bool) -> u64 {
    store
        .names()
        .filter(|n| keep(n))
        .map(|n| store.shape(n).unwrap().iter().product::<usize>() as u64)
        .sum()
}

#[test]
fn info_reports_the_config_and_a_hand_count() {
    for name in ["tiny-pro", "tiny-janus"] {
        let info = info_json(&model(name));
        let store = TensorStore::open(&model_dir(name)).unwrap();
        let cfg = config(name);
        let a = &info["architecture"];
        let (text, vision) = if name == "tiny-pro" {
            (&cfg["text_config"], &cfg["vision_config"])
        } else {
            (&cfg["language_config"], &cfg["vision_config"]["params"])
        };
        assert_eq!(a["llm"]["hidden_size"], text["hidden_size"], "{name}");
        assert_eq!(a["llm"]["layers"], text["num_hidden_layers"]);
        assert_eq!(a["llm"]["heads"], text["num_attention_heads"]);
        assert_eq!(a["llm"]["intermediate_size"], text["intermediate_size"]);
        assert_eq!(a["llm"]["vocab_size"], text["vocab_size"]);
        assert_eq!(a["llm"]["context"], text["max_position_embeddings"]);
        assert_eq!(a["llm"]["kv_heads"], 4);
        assert_eq!(a["llm"]["head_dim"], 16);
        if name == "tiny-pro" {
            assert_eq!(a["vision"]["width"], vision["hidden_size"]);
            assert_eq!(a["vision"]["layers"], vision["num_hidden_layers"]);
            assert_eq!(a["vq"]["codebook_size"], cfg["vq_config"]["num_embeddings"]);
            assert_eq!(a["vq"]["ch"], cfg["vq_config"]["base_channels"]);
        } else {
            assert_eq!(a["vision"]["width"], vision["width"]);
            assert_eq!(a["vision"]["layers"], vision["layers"]);
            let vq = &cfg["gen_vision_config"]["params"];
            assert_eq!(a["vq"]["codebook_size"], vq["codebook_size"]);
            assert_eq!(a["vq"]["ch"], vq["ch"]);
        }
        assert_eq!(a["vision"]["image_tokens"], 576);
        assert_eq!(a["vision"]["mlp"], 64);
        assert_eq!(
            a["aligner"],
            serde_json::json!({"input": 32, "output": 64, "depth": 2})
        );
        assert_eq!(a["gen_embed"], serde_json::json!([128, 8]));
        assert_eq!(
            a["gen_head"],
            serde_json::json!({"input": 64, "hidden": 64, "codes": 128})
        );
        assert_eq!(a["vq"]["grid"], 24);
        assert_eq!(a["vq"]["image_size"], 384);

        for p in [
            "llm",
            "vision",
            "aligner",
            "gen_embed",
            "gen_aligner",
            "gen_head",
            "vq_codebook",
        ] {
            assert_eq!(part(&info, p).0, hand_counted(p), "{name}: {p}");
        }
        // The VQ halves: every encoder / decoder tensor, named per layout.
        let (enc, dec, quant, post) = if name == "tiny-pro" {
            (
                "model.vqmodel.encoder.",
                "model.vqmodel.decoder.",
                "model.vqmodel.quant_conv.",
                "model.vqmodel.post_quant_conv.",
            )
        } else {
            (
                "gen_vision_model.encoder.",
                "gen_vision_model.decoder.",
                "gen_vision_model.quant_conv.",
                "gen_vision_model.post_quant_conv.",
            )
        };
        let starts = |n: &str, a: &str, b: &str| n.starts_with(a) || n.starts_with(b);
        assert_eq!(
            part(&info, "vq_encoder").0,
            elements(&store, |n| starts(n, enc, quant))
        );
        assert_eq!(
            part(&info, "vq_decoder").0,
            elements(&store, |n| starts(n, dec, post))
        );
        let total = elements(&store, |_| true);
        assert_eq!(info["parameters"], total);
        assert_eq!(info["tensors"], store.len());
        let parts_sum: u64 = info["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["parameters"].as_u64().unwrap())
            .sum();
        assert_eq!(parts_sum, total, "{name}: parts cover every tensor once");
        assert_eq!(
            info["tasks"],
            serde_json::json!({"understanding": true, "generation": true, "vq_encode": true})
        );
        assert_eq!(info["problems"], serde_json::json!([]));

        let dtypes = info["dtypes"].as_array().unwrap();
        assert_eq!(dtypes.len(), 1);
        let files = info["files"].as_array().unwrap();
        let config_file = files.iter().find(|f| f["name"] == "config.json").unwrap();
        assert_eq!(
            config_file["bytes"],
            std::fs::metadata(model_dir(name).join("config.json"))
                .unwrap()
                .len()
        );
        if name == "tiny-pro" {
            assert_eq!(info["layout"], "transformers");
            assert_eq!(info["format"], "safetensors");
            assert_eq!(dtypes[0]["dtype"], "f32");
            assert_eq!(dtypes[0]["bytes"], total * 4);
            let weights = files.iter().filter(|f| f["kind"] == "weights").count();
            assert_eq!(weights, 2);
        } else {
            assert_eq!(info["layout"], "original");
            assert_eq!(info["format"], "pytorch");
            assert_eq!(dtypes[0]["dtype"], "bf16");
            // attn_pool and codebook_used are stored but never read.
            let ignored = elements(&store, |n| {
                n.contains(".attn_pool.") || n.ends_with("codebook_used")
            });
            assert!(ignored > 65536, "{ignored}");
            assert_eq!(part(&info, "ignored").0, ignored);
        }
    }
}

#[test]
fn info_prints_a_readable_report() {
    let out = stdout_of(&janus(&["info", "--model", &model("tiny-janus")]));
    for needle in [
        "layout    original",
        "pytorch_model.bin",
        "D 64, 2 layers, 4 heads (4 kv, head_dim 16), FFN 128, vocab 640, context 2048",
        "width 32, 2 layers, 2 heads, MLP 64, image 384, patch 16 (576 tokens)",
        "codebook 128 x 8",
        "ignored (unused by the model)",
        "bf16",
        "understanding yes, generation yes, VQ encode yes",
        "problems  none",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
}

/// A copy of `name` with `edit` applied to its config.json.
fn edited_copy(name: &str, dst: &Path, edit: impl FnOnce(&mut Value)) -> String {
    copy_model(name, dst);
    let mut cfg = config(name);
    edit(&mut cfg);
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    dst.display().to_string()
}

#[test]
fn info_lists_problems_instead_of_failing() {
    let tmp = tempfile::tempdir().unwrap();
    // The LLM's FFN no longer matches: neither text task can load, VQ encode still can.
    let dir = edited_copy("tiny-pro", &tmp.path().join("ffn"), |c| {
        c["text_config"]["intermediate_size"] = 96.into();
    });
    let info = info_json(&dir);
    assert_eq!(
        info["tasks"],
        serde_json::json!({"understanding": false, "generation": false, "vq_encode": true})
    );
    let problems = info["problems"].as_array().unwrap();
    // gate, up, down in each of 2 layers.
    assert_eq!(problems.len(), 6, "{problems:?}");
    assert!(problems.iter().all(|p| p["part"] == "llm"));
    let msg = problems[0]["message"].as_str().unwrap();
    assert!(
        msg.contains("model.language_model.layers.0.mlp.") && msg.contains("[96, 64]"),
        "{msg}"
    );
    let human = stdout_of(&janus(&["info", "--model", &dir]));
    assert!(human.contains("problems  6"), "{human}");
    assert!(
        human.contains("understanding no, generation no, VQ encode yes"),
        "{human}"
    );

    // A tokenizer without the Janus special tokens breaks the text tasks only.
    let dir = tmp.path().join("tok");
    copy_model("tiny-janus", &dir);
    let tok = std::fs::read_to_string(dir.join("tokenizer.json")).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        tok.replace("<begin_of_image>", "<begin_of_imagX>"),
    )
    .unwrap();
    let info = info_json(&dir.display().to_string());
    assert_eq!(
        info["tasks"],
        serde_json::json!({"understanding": false, "generation": false, "vq_encode": true})
    );
    let msg = info["problems"][0]["message"].as_str().unwrap();
    assert!(msg.contains("<begin_of_image>"), "{msg}");
}

fn load(dir: &Path) -> Pipeline {
    Pipeline::load(dir, DTypeChoice::Fixed(DType::F32), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// Greedy understanding ids (text only and with an image) and a gen_head forward.
fn behaviour(p: &Pipeline) -> (Vec<Vec<u32>>, Vec<f32>) {
    let opts = UnderstandOptions {
        max_new_tokens: 12,
        ..Default::default()
    };
    let ids = [
        Message::user("Describe a cat."),
        Message::user("What is this?")
            .with_images([ImageInput::Path(fixtures().join("images/wide.png"))]),
    ]
    .into_iter()
    .map(|m| {
        p.understand(&[m], &opts, |_| ControlFlow::Continue(()))
            .unwrap()
            .token_ids
    })
    .collect();
    let d = p.config().text.hidden_size;
    let hidden = Tensor::arange(0f32, (2 * d) as f32, &Device::Cpu)
        .unwrap()
        .affine(0.01, -0.3)
        .unwrap()
        .reshape((2, d))
        .unwrap();
    let logits = p
        .model
        .gen_head_logits(&hidden)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    (ids, logits)
}

#[test]
fn convert_copies_a_checkpoint_that_behaves_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let src = model_dir("tiny-janus");
    let reference = behaviour(&load(&src));
    for (dtype, stored) in [("keep", "bf16"), ("f32", "f32")] {
        let out = tmp.path().join(format!("converted-{dtype}"));
        let printed = stdout_of(&janus(&[
            "-q",
            "convert",
            "--model",
            &model("tiny-janus"),
            "--out",
            &out.display().to_string(),
            "--dtype",
            dtype,
        ]));
        assert_eq!(printed.trim(), out.display().to_string());
        let mut names = listing(&out);
        names.retain(|n| n != "model.safetensors");
        let mut side: Vec<String> = listing(&src);
        side.retain(|n| n != "pytorch_model.bin");
        assert_eq!(
            names, side,
            "{dtype}: config, tokenizer and processor files copied"
        );
        // Same tensor names (original layout), shapes, and the requested dtype.
        let a = TensorStore::open(&src).unwrap();
        let b = TensorStore::open(&out).unwrap();
        assert_eq!(b.format(), janus::weights::Format::Safetensors);
        assert_eq!(a.names().collect::<Vec<_>>(), b.names().collect::<Vec<_>>());
        for n in a.names() {
            assert_eq!(a.shape(n), b.shape(n), "{n}");
            assert_eq!(b.dtype(n).unwrap().as_str(), stored, "{n}");
        }
        assert_eq!(behaviour(&load(&out)), reference, "{dtype}: outputs differ");
        let info = info_json(&out.display().to_string());
        assert_eq!(info["layout"], "original");
        assert_eq!(info["dtypes"][0]["dtype"], stored);
    }
    // Nothing but the two outputs next to them (no temporary directory left).
    assert_eq!(
        listing(tmp.path()),
        ["converted-f32".to_string(), "converted-keep".to_string()]
    );
}

#[test]
fn convert_refuses_to_overwrite_and_leaves_nothing_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), b"mine").unwrap();
    let e = janus(&[
        "convert",
        "--model",
        &model("tiny-pro"),
        "--out",
        &busy.display().to_string(),
    ]);
    assert_clean_error(&e, &["busy", "not empty"]);
    assert_eq!(listing(&busy), ["keep.txt"]);
    assert_eq!(std::fs::read(busy.join("keep.txt")).unwrap(), b"mine");

    // An existing empty directory is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    stdout_of(&janus(&[
        "-q",
        "convert",
        "--model",
        &model("tiny-pro"),
        "--out",
        &empty.display().to_string(),
    ]));
    assert!(empty.join("model.safetensors").is_file());

    // A source whose tensor data cannot be read (a storage record renamed inside the
    // PyTorch zip: the header opens, reading that tensor fails mid-conversion).
    let broken = tmp.path().join("broken");
    copy_model("tiny-janus", &broken);
    let bin = broken.join("pytorch_model.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let needle = b"/data/3";
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bytes.len() {
        let next_is_digit = bytes.get(i + needle.len()).is_some_and(u8::is_ascii_digit);
        if &bytes[i..i + needle.len()] == needle && !next_is_digit {
            // Same length, so the zip stays well-formed: `.../data/3` becomes `.../dxta/3`.
            bytes[i + 2] = b'x';
            hits += 1;
        }
        i += 1;
    }
    assert!(hits >= 2, "storage record 3 not found ({hits} hits)");
    std::fs::write(&bin, bytes).unwrap();
    let out = tmp.path().join("from-broken");
    let e = janus(&[
        "-q",
        "convert",
        "--model",
        &broken.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert_clean_error(&e, &["pytorch_model.bin"]);
    assert!(!out.exists(), "a failed conversion left {}", out.display());
    assert_eq!(
        listing(tmp.path()),
        ["broken", "busy", "empty"].map(String::from)
    );
}
