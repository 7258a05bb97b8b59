//! PNGs from `janus generate` record how they were made (tEXt / iTXt chunks) and are
//! byte-for-byte reproducible for a given seed and settings.

mod support;

use std::collections::HashMap;
use std::path::Path;

use support::*;

/// Every text chunk of a PNG: keyword -> (text, whether it was iTXt).
fn text_chunks(path: &Path) -> HashMap<String, (String, bool)> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    let info = reader.info();
    let mut out = HashMap::new();
    for c in &info.uncompressed_latin1_text {
        out.insert(c.keyword.clone(), (c.text.clone(), false));
    }
    for c in &info.utf8_text {
        out.insert(c.keyword.clone(), (c.get_text().unwrap(), true));
    }
    out
}

fn generate(out: &Path, prompt: &str, seed: &str, temperature: &str) -> serde_json::Value {
    json_of(&janus(&[
        "-q",
        "generate",
        "--model",
        &model("tiny-pro"),
        "--dtype",
        "f32",
        "--prompt",
        prompt,
        "--parallel",
        "2",
        "--cfg-weight",
        "4.5",
        "--temperature",
        temperature,
        "--seed",
        seed,
        "--out",
        &out.display().to_string(),
        "--json",
    ]))
}

#[test]
fn pngs_carry_the_generation_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = "Un chat roux « sous la neige », 雪の中の猫";
    let v = generate(dir.path(), prompt, "11", "0.75");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(v["version"], version);
    let model_id = v["model"].as_str().unwrap();
    assert!(model_id.ends_with("tiny-pro"), "{model_id}");
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (i, p) in images.iter().enumerate() {
        let path = Path::new(p.as_str().unwrap());
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("un-chat-roux-sous-la-neige-s11-"),
            "{}",
            path.display()
        );
        let t = text_chunks(path);
        let get = |k: &str| {
            t.get(k)
                .unwrap_or_else(|| panic!("no {k} in {t:?}"))
                .0
                .as_str()
        };
        assert_eq!(get("Software"), format!("janus {version}"));
        assert_eq!(get("janus:prompt"), prompt);
        assert!(t["janus:prompt"].1, "a non-ASCII prompt goes in iTXt");
        assert_eq!(get("janus:seed"), "11");
        assert_eq!(get("janus:cfg_weight"), "4.5");
        assert_eq!(get("janus:temperature"), "0.75");
        assert_eq!(get("janus:parallel"), "2");
        assert_eq!(get("janus:index"), i.to_string());
        assert_eq!(get("janus:model"), model_id);
        assert!(!t["janus:seed"].1, "ASCII values go in tEXt");
        let img = image::open(path).unwrap();
        assert_eq!((img.width(), img.height()), (384, 384));
    }
}

#[test]
fn same_seed_gives_identical_files() {
    for temperature in ["0", "1"] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let va = generate(a.path(), "a lighthouse at dusk", "3", temperature);
        let vb = generate(b.path(), "a lighthouse at dusk", "3", temperature);
        assert_eq!(va["image_tokens"], vb["image_tokens"]);
        for i in 0..2 {
            let pa = va["images"][i].as_str().unwrap();
            let pb = vb["images"][i].as_str().unwrap();
            assert_eq!(
                Path::new(pa).file_name(),
                Path::new(pb).file_name(),
                "same names"
            );
            assert!(
                std::fs::read(pa).unwrap() == std::fs::read(pb).unwrap(),
                "temperature {temperature}: {pa} and {pb} differ"
            );
        }
        if temperature == "1" {
            // Sampling draws different codes for the two images of a batch.
            assert_ne!(va["image_tokens"][0], va["image_tokens"][1]);
        }
    }
}
