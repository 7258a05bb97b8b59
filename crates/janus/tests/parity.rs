//! Parity with the PyTorch reference on the tiny fixture models (float32).
//!
//! Goldens come from `scripts/fixtures/make_fixtures.py` (transformers 4.57 +
//! torch); see `fixtures/golden/MANIFEST.md`. Tolerances: numerical outputs within 1e-4
//! relative error (max |ours - ref| / max |ref|), greedy token ids identical, decoded
//! PNGs within 1 per channel.
//!
//! Two models cover both layouts: `tiny-pro` (transformers layout, sharded f32
//! safetensors, Janus-Pro roles) and `tiny-janus` (original layout, bf16
//! `pytorch_model.bin`, Janus-1.3B roles; its goldens were computed in f32 from the
//! bf16-rounded weights).
//!
//! The suite runs on the CPU, or on the GPU `JANUS_TEST_DEVICE` names
//! ([`support_device`]), with the same tolerances.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use janus::engine::{self, GenerateParams, SamplingParams};
use janus::pipeline::{DTypeChoice, Pipeline, UnderstandOptions};
use janus::processor::{ImageInput, Message};
use serde::Deserialize;

#[path = "support/device.rs"]
mod support_device;
use support_device::device;

const MODELS: [&str; 2] = ["tiny-pro", "tiny-janus"];
const REL_TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn golden(model: &str) -> PathBuf {
    fixtures().join("golden").join(model)
}

/// Loads each model once per test binary (tests run in parallel threads).
fn pipeline(model: &str) -> &'static Pipeline {
    static PIPES: OnceLock<HashMap<&'static str, Pipeline>> = OnceLock::new();
    let pipes = PIPES.get_or_init(|| {
        MODELS
            .iter()
            .map(|&m| {
                let dir = fixtures().join("models").join(m);
                let p = Pipeline::load(&dir, DTypeChoice::Fixed(DType::F32), device())
                    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
                (m, p)
            })
            .collect()
    });
    &pipes[model]
}

fn load_st(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// max |a - b| / max |b|, with shapes required to agree.
fn rel_err(what: &str, ours: &Tensor, reference: &Tensor) -> f32 {
    assert_eq!(ours.dims(), reference.dims(), "{what}: shapes differ");
    // Both on the CPU: either may come from the device under test.
    let flat_f32 = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all())
            .unwrap()
    };
    let (a, b) = (flat_f32(ours), flat_f32(reference));
    let diff = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = b
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1e-12);
    diff / scale
}

fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let e = rel_err(what, ours, reference);
    assert!(
        e <= REL_TOL,
        "{what}: relative error {e:e} exceeds {REL_TOL:e}"
    );
    eprintln!("{what}: relative error {e:.2e}");
}

/// The reference's pixel values for a fixture image: its u8 canvas (stored as a PNG)
/// mapped through the reference's own u8 -> f32 table.
fn reference_pixels(image: &str) -> Tensor {
    #[derive(Deserialize)]
    struct Pre {
        u8_to_f32: Vec<f32>,
    }
    let pre: Pre = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("golden/preprocess.json")).unwrap(),
    )
    .unwrap();
    let canvas = image::open(fixtures().join(format!("golden/preprocess/{image}.png")))
        .unwrap()
        .to_rgb8();
    let (w, h) = canvas.dimensions();
    let mut chw = vec![0f32; 3 * (w * h) as usize];
    for (x, y, p) in canvas.enumerate_pixels() {
        for c in 0..3 {
            chw[c * (w * h) as usize + (y * w + x) as usize] = pre.u8_to_f32[p[c] as usize];
        }
    }
    Tensor::from_vec(chw, (1, 3, h as usize, w as usize), device()).unwrap()
}

fn meta(path: &Path, key: &str) -> String {
    let bytes = std::fs::read(path).unwrap();
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    m.metadata()
        .as_ref()
        .and_then(|m| m.get(key).cloned())
        .unwrap_or_else(|| panic!("{}: no metadata {key}", path.display()))
}

#[derive(Debug, Deserialize)]
struct GoldenMessage {
    role: String,
    content: String,
    images: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct UnderstandCase {
    name: String,
    messages: Vec<GoldenMessage>,
    prompt: String,
    input_ids: Vec<u32>,
    max_new_tokens: usize,
    greedy_ids: Vec<u32>,
    stopped_at_eos: bool,
}

fn understand_cases(model: &str) -> Vec<UnderstandCase> {
    let p = golden(model).join("understand.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[derive(Debug, Deserialize)]
struct T2iCase {
    prompt: String,
    parallel: usize,
    cfg_weight: f64,
    cond_ids: Vec<u32>,
    uncond_ids: Vec<u32>,
    codes: Vec<Vec<u32>>,
    margins: Vec<Vec<f32>>,
    pngs: Vec<String>,
}

fn t2i_cases(model: &str) -> Vec<T2iCase> {
    let p = golden(model).join("t2i.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn image_spans(pipe: &Pipeline, ids: &[u32]) -> Vec<usize> {
    let boi = pipe.tokenizer.special().begin_of_image;
    ids.iter()
        .enumerate()
        .filter(|(_, &t)| t == boi)
        .map(|(i, _)| i + 1)
        .collect()
}

#[test]
fn vision_features_and_aligner() {
    for m in MODELS {
        let pipe = pipeline(m);
        let path = golden(m).join("vision.safetensors");
        let g = load_st(&path);
        let px = reference_pixels(&meta(&path, "image"));
        let feats = pipe.model.vision.forward(&px).unwrap();
        assert_close(
            &format!("{m} SigLIP features"),
            &feats,
            &g["vision_features"],
        );
        let aligned = pipe.model.encode_images(&px).unwrap();
        assert_close(&format!("{m} aligner output"), &aligned, &g["aligned"]);
    }
}

#[test]
fn prefill_logits_with_an_image() {
    for m in MODELS {
        let pipe = pipeline(m);
        let path = golden(m).join("prefill.safetensors");
        let g = load_st(&path);
        let case_name = meta(&path, "case");
        let case = understand_cases(m)
            .into_iter()
            .find(|c| c.name == case_name)
            .unwrap();
        let ids: Vec<u32> = g["input_ids"]
            .to_dtype(DType::U32)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            ids, case.input_ids,
            "{m}: prefill ids differ from the understand case"
        );
        let images: Vec<Tensor> = case
            .messages
            .iter()
            .flat_map(|msg| msg.images.iter())
            .map(|name| reference_pixels(name))
            .collect();
        let px = Tensor::cat(&images, 0).unwrap();
        let model = &pipe.model;
        let embeds = model.encode_images(&px).unwrap();
        let ids_t = Tensor::new(ids.as_slice(), device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let x = model
            .embed_with_images(&ids_t, &image_spans(pipe, &ids), Some(&embeds))
            .unwrap();
        let hidden = model.llm.forward_embeds(&x, None).unwrap();
        let t = ids.len();
        let last = hidden.narrow(1, t - 8, 8).unwrap().squeeze(0).unwrap();
        assert_close(
            &format!("{m} final hidden (last 8)"),
            &last,
            &g["hidden_last"],
        );
        let logits = model.llm.lm_head(&last).unwrap();
        assert_close(
            &format!("{m} prefill logits (last 8)"),
            &logits,
            &g["logits_last"],
        );
    }
}

#[test]
fn gen_head_logits_first_step() {
    for m in MODELS {
        let pipe = pipeline(m);
        let g = load_st(&golden(m).join("gen_head.safetensors"));
        let case = &t2i_cases(m)[0];
        let model = &pipe.model;
        let rows = [case.cond_ids.clone(), case.uncond_ids.clone()].concat();
        let ids = Tensor::from_vec(rows, (2, case.cond_ids.len()), device()).unwrap();
        let hidden = model
            .llm
            .forward_embeds(&model.llm.embed(&ids).unwrap(), None)
            .unwrap();
        let t = case.cond_ids.len();
        let last = hidden.narrow(1, t - 1, 1).unwrap().squeeze(1).unwrap(); // (2, D)
        assert_close(&format!("{m} gen_head input"), &last, &g["hidden_last"]);
        let logits = model.gen_head_logits(&last).unwrap();
        assert_close(
            &format!("{m} cond logits"),
            &logits.narrow(0, 0, 1).unwrap(),
            &g["cond_logits"],
        );
        assert_close(
            &format!("{m} uncond logits"),
            &logits.narrow(0, 1, 1).unwrap(),
            &g["uncond_logits"],
        );
    }
}

#[test]
fn vq_decoder_and_encoder() {
    for m in MODELS {
        let pipe = pipeline(m);
        let path = golden(m).join("vq.safetensors");
        let g = load_st(&path);
        let vq = &pipe.model.vq;
        let grid = pipe.config().gen_grid;
        let codes = g["codes"]
            .to_dtype(DType::U32)
            .unwrap()
            .to_device(device())
            .unwrap();
        let quant = vq.codes_to_latent(&codes, grid, grid).unwrap();
        assert_close(&format!("{m} codebook lookup"), &quant, &g["quant"]);
        let decoded = vq.decode_codes(&codes, grid, grid).unwrap();
        let origin = meta(&path, "decoded_crop_origin_yx");
        let (y, x) = origin.split_once(',').unwrap();
        let (y, x): (usize, usize) = (y.parse().unwrap(), x.parse().unwrap());
        let crop = decoded.narrow(2, y, 64).unwrap().narrow(3, x, 64).unwrap();
        assert_close(
            &format!("{m} VQ decoder output (crop)"),
            &crop,
            &g["decoded_crop"],
        );

        let px = reference_pixels(&meta(&path, "encode_image"));
        let latent = vq.encode_latent(&px).unwrap();
        assert_close(
            &format!("{m} VQ encoder latent"),
            &latent,
            &g["encode_latent"],
        );
        let ours: Vec<u32> = vq
            .quantize(&latent)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<u32> = g["encode_codes"]
            .to_dtype(DType::U32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let margin: Vec<f32> = g["encode_margin"].flatten_all().unwrap().to_vec1().unwrap();
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                a == b || margin[i] < 1e-5,
                "{m}: VQ encode code {i} is {a}, reference {b} (margin {})",
                margin[i]
            );
        }
    }
}

fn messages_of(case: &UnderstandCase) -> Vec<Message> {
    case.messages
        .iter()
        .map(|gm| {
            let msg = if gm.role == "user" {
                Message::user(gm.content.clone())
            } else {
                Message::assistant(gm.content.clone())
            };
            msg.with_images(
                gm.images
                    .iter()
                    .map(|n| ImageInput::Path(fixtures().join("images").join(n))),
            )
        })
        .collect()
}

#[test]
fn greedy_understanding_matches_token_for_token() {
    for m in MODELS {
        let pipe = pipeline(m);
        for case in understand_cases(m) {
            let msgs = messages_of(&case);
            let opts = UnderstandOptions {
                sampling: SamplingParams::default(),
                max_new_tokens: case.max_new_tokens,
                ..Default::default()
            };
            let (prepared, _) = pipe
                .prepare_understanding(&msgs, opts.system.as_deref())
                .unwrap();
            assert_eq!(
                prepared.prompt, case.prompt,
                "{m}/{}: prompt text",
                case.name
            );
            assert_eq!(
                prepared.input_ids, case.input_ids,
                "{m}/{}: input ids",
                case.name
            );
            let mut streamed = String::new();
            let out = pipe
                .understand(&msgs, &opts, |piece| {
                    streamed.push_str(piece);
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(
                out.token_ids, case.greedy_ids,
                "{m}/{}: greedy ids",
                case.name
            );
            assert_eq!(
                out.finish == engine::Finish::Eos,
                case.stopped_at_eos,
                "{m}/{}",
                case.name
            );
            assert_eq!(streamed, out.text, "{m}/{}: streamed text", case.name);
            eprintln!(
                "{m}/{}: {} tokens identical",
                case.name,
                out.token_ids.len()
            );
        }
    }
}

/// Greedy codes must match; a mismatch is tolerated only at a step where the
/// reference's top-2 margin shows a near-tie (float rounding can flip it), and then the
/// rest of that image is not compared (the sequences legitimately diverge).
fn compare_codes(what: &str, ours: &[u32], want: &[u32], margins: &[f32]) {
    assert_eq!(ours.len(), want.len(), "{what}: code count");
    for i in 0..want.len() {
        if ours[i] != want[i] {
            assert!(
                margins[i] < 1e-3,
                "{what}: code {i} is {}, reference {} (reference top-2 margin {})",
                ours[i],
                want[i],
                margins[i]
            );
            eprintln!(
                "{what}: near-tie flip at step {i} (margin {}); stopping comparison",
                margins[i]
            );
            return;
        }
    }
}

#[test]
fn greedy_text_to_image_codes_and_pngs() {
    for m in MODELS {
        let pipe = pipeline(m);
        let cases = t2i_cases(m);
        assert!(cases.iter().any(|c| c.parallel == 2), "{m}: no P=2 case");
        for (ci, case) in cases.iter().enumerate() {
            let params = GenerateParams {
                parallel: case.parallel,
                cfg_weight: case.cfg_weight,
                temperature: 0.0,
                seed: 0,
                speculative: Default::default(),
            };
            let (cond, uncond) =
                janus::processor::prepare_generation(&pipe.tokenizer, &case.prompt).unwrap();
            assert_eq!(cond, case.cond_ids, "{m}/t2i {ci}: cond ids");
            assert_eq!(uncond, case.uncond_ids, "{m}/t2i {ci}: uncond ids");
            let out = pipe
                .generate(&case.prompt, &params, |_, _| ControlFlow::Continue(()))
                .unwrap();
            assert_eq!(out.codes.len(), case.parallel);
            for (i, codes) in out.codes.iter().enumerate() {
                compare_codes(
                    &format!("{m}/t2i {ci} image {i}"),
                    codes,
                    &case.codes[i],
                    &case.margins[i],
                );
            }
            // PNGs: decode the reference's codes and post-process; within 1 per channel.
            let images = pipe.decode_images(&case.codes).unwrap();
            for (img, png) in images.iter().zip(&case.pngs) {
                let want = image::open(golden(m).join(png)).unwrap().to_rgb8();
                assert_eq!(img.dimensions(), want.dimensions(), "{m}/{png}: size");
                let worst = img
                    .as_raw()
                    .iter()
                    .zip(want.as_raw())
                    .map(|(&a, &b)| (a as i16 - b as i16).abs())
                    .max()
                    .unwrap();
                assert!(worst <= 1, "{m}/{png}: a channel differs by {worst}");
            }
        }
    }
}

#[test]
fn vq_tokenizer_round_trip_api() {
    for m in MODELS {
        let pipe = pipeline(m);
        let path = golden(m).join("vq.safetensors");
        let g = load_st(&path);
        // The encode golden's input is the fixture image preprocessed at 384x384 in [-1, 1],
        // which is exactly what vq_encode does to it.
        let img = janus::processor::load_image(
            fixtures().join("images").join(meta(&path, "encode_image")),
        )
        .unwrap();
        let codes = pipe.vq_encode(&img).unwrap();
        let want: Vec<u32> = g["encode_codes"]
            .to_dtype(DType::U32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let margin: Vec<f32> = g["encode_margin"].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(codes.len(), want.len());
        for (i, (a, b)) in codes.iter().zip(&want).enumerate() {
            assert!(
                a == b || margin[i] < 1e-5,
                "{m}: code {i} is {a}, reference {b}"
            );
        }
        let decoded = pipe.vq_decode(&codes).unwrap();
        assert_eq!(decoded.dimensions(), (384, 384));
        // Codes out of range are refused with a clear error.
        let mut bad = codes.clone();
        bad[3] = pipe.config().vq.codebook_size as u32;
        let e = pipe.vq_decode(&bad).unwrap_err().to_string();
        assert!(e.contains("outside the codebook"), "{e}");
        assert!(pipe.vq_decode(&codes[..10]).is_err());
    }
}

/// bf16 and f16 compute: same code paths, results close to f32 (not bit-exact).
#[test]
fn half_precision_runs_and_stays_close() {
    let dir = fixtures().join("models/tiny-janus");
    let f32_pipe = pipeline("tiny-janus");
    let case = understand_cases("tiny-janus")
        .into_iter()
        .find(|c| c.name == "text_only")
        .unwrap();
    let ids = Tensor::new(case.input_ids.as_slice(), device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits_of = |p: &Pipeline| {
        let x = p.model.llm.embed(&ids).unwrap();
        let h = p.model.llm.forward_embeds(&x, None).unwrap();
        let t = case.input_ids.len();
        p.model
            .llm
            .lm_head(&h.narrow(1, t - 1, 1).unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
    };
    let reference = logits_of(f32_pipe);
    for dtype in [DType::BF16, DType::F16] {
        let p = Pipeline::load(&dir, DTypeChoice::Fixed(dtype), device()).unwrap();
        assert_eq!(p.model.dtype(), dtype);
        let e = rel_err(&format!("{dtype:?} logits"), &logits_of(&p), &reference);
        assert!(e < 0.05, "{dtype:?}: relative error {e} against f32");
        // Understanding with an image goes through SigLIP in this dtype too.
        let msg = Message::user("What is this?")
            .with_images([ImageInput::Path(fixtures().join("images/wide.png"))]);
        let opts = UnderstandOptions {
            max_new_tokens: 3,
            ..Default::default()
        };
        let ans = p
            .understand(&[msg], &opts, |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(!ans.token_ids.is_empty() || ans.finish == engine::Finish::Eos);
        let img = p.vq_decode(&vec![1u32; 576]).unwrap();
        assert_eq!(img.dimensions(), (384, 384));
        let out = p
            .generate(
                "a cat",
                &GenerateParams {
                    parallel: 1,
                    cfg_weight: 5.0,
                    temperature: 1.0,
                    seed: 3,
                    speculative: Default::default(),
                },
                |s, _| {
                    if s >= 4 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )
            .unwrap();
        assert_eq!(out.finish, engine::Finish::Cancelled);
        assert_eq!(out.codes[0].len(), 4);
        eprintln!("{dtype:?}: logits relative error {e:.2e} against f32");
    }
}

/// The same seed gives the same sampled codes; another seed gives others.
#[test]
fn sampling_is_reproducible_by_seed() {
    let pipe = pipeline("tiny-pro");
    let run = |seed| {
        let params = GenerateParams {
            parallel: 2,
            cfg_weight: 3.0,
            temperature: 1.0,
            seed,
            speculative: Default::default(),
        };
        pipe.generate("a cat", &params, |s, _| {
            if s >= 16 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap()
        .codes
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
}

/// Requests of different prompts, lengths, P and cfg weights batched into one CFG batch
/// each get the reference's codes (what they get alone).
#[test]
fn batched_requests_match_the_reference() {
    for m in MODELS {
        let pipe = pipeline(m);
        let cases = t2i_cases(m);
        // A short extra prompt so the rows have different lengths and need padding.
        let (short_c, short_u) =
            janus::processor::prepare_generation(&pipe.tokenizer, "cat").unwrap();
        let greedy = |parallel, cfg_weight| GenerateParams {
            parallel,
            cfg_weight,
            temperature: 0.0,
            seed: 0,
            speculative: Default::default(),
        };
        let mut items: Vec<engine::BatchItem> = cases
            .iter()
            .map(|c| engine::BatchItem {
                cond_ids: c.cond_ids.clone(),
                uncond_ids: c.uncond_ids.clone(),
                params: greedy(c.parallel, c.cfg_weight),
            })
            .collect();
        items.push(engine::BatchItem {
            cond_ids: short_c.clone(),
            uncond_ids: short_u.clone(),
            params: greedy(1, 5.0),
        });
        assert!(items
            .iter()
            .any(|it| it.cond_ids.len() != items[0].cond_ids.len()));
        let out = engine::generate_codes_batch(&pipe.model, &items, |_, _| vec![true; items.len()])
            .unwrap();
        for (ci, case) in cases.iter().enumerate() {
            for (i, codes) in out[ci].codes.iter().enumerate() {
                compare_codes(
                    &format!("{m}/batched t2i {ci} image {i}"),
                    codes,
                    &case.codes[i],
                    &case.margins[i],
                );
            }
        }
        let alone =
            engine::generate_codes(&pipe.model, &short_c, &short_u, &greedy(1, 5.0), |_, _| {
                ControlFlow::Continue(())
            })
            .unwrap();
        let last = out.last().unwrap();
        compare_codes(
            &format!("{m}/batched short prompt"),
            &last.codes[0],
            &alone.codes[0],
            &alone.margins[0],
        );

        // Cancelling one item stops its codes; the others run to the end.
        let out =
            engine::generate_codes_batch(&pipe.model, &items[..2], |done, _| vec![done < 10, true])
                .unwrap();
        assert_eq!(out[0].finish, engine::Finish::Cancelled);
        assert_eq!(out[0].codes[0].len(), 10);
        assert_eq!(out[1].codes[0].len(), 576);
    }
}
