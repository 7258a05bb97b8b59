//! Speculative decoding on the tiny fixture models: a block of codes gives the logits one
//! code at a time gives, bit for bit, on the CPU kernels (bf16, q8, q4; every kernel
//! level, through child processes); `--accept exact` gives plain generation's codes and
//! PNG bytes for many seeds, windows, temperatures, cfg weights, P and batches.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use janus::engine::{self, Accept, BatchItem, GenerateParams, Speculative, Window};
use janus::kernels::quant::QuantFormat;
use janus::kernels::Isa;
use janus::model::KvCache;
use janus::pipeline::{DTypeChoice, LoadOptions, Pipeline};

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

fn load(name: &str, quant: Option<QuantFormat>) -> Pipeline {
    let mut o = LoadOptions::new(DTypeChoice::Fixed(DType::BF16), Device::Cpu);
    o.quant = quant;
    Pipeline::load_with(&model_dir(name), &o).unwrap()
}

/// tiny-pro in bf16, loaded once per test binary.
fn tiny_pro() -> &'static Pipeline {
    static P: OnceLock<Pipeline> = OnceLock::new();
    P.get_or_init(|| load("tiny-pro", None))
}

/// Guided-logit rows of `codes` fed `block` at a time after `prompts` (left-padded to a
/// common length), for two CFG-like rows per prompt.
fn logits_in_blocks(
    p: &Pipeline,
    prompts: &[Vec<u32>],
    codes: &[u32],
    block: usize,
) -> Vec<Vec<f32>> {
    let m = &p.model;
    let t = prompts.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    let mut pads = Vec::new();
    for pr in prompts {
        for _ in 0..2 {
            ids.extend(std::iter::repeat_n(pr[0], t - pr.len()));
            ids.extend_from_slice(pr);
            pads.push(t - pr.len());
        }
    }
    let rows = pads.len();
    let ids = Tensor::from_vec(ids, (rows, t), &Device::Cpu).unwrap();
    let cfg = m.config();
    let mut cache =
        KvCache::new(&cfg.text, rows, t + codes.len(), m.dtype(), &Device::Cpu).unwrap();
    let h = m
        .llm
        .forward_embeds_padded(&m.llm.embed(&ids).unwrap(), Some(&mut cache), &pads)
        .unwrap();
    let flat = |h: &Tensor| {
        let (r, l, d) = h.dims3().unwrap();
        let logits = m.gen_head_logits(&h.reshape((r * l, d)).unwrap()).unwrap();
        let k = logits.dim(1).unwrap();
        let v = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // (R, L, K) -> per position, all rows.
        (0..l)
            .map(|s| {
                (0..r)
                    .flat_map(|row| v[(row * l + s) * k..(row * l + s + 1) * k].to_vec())
                    .collect()
            })
            .collect::<Vec<Vec<f32>>>()
    };
    let mut out = flat(&h.narrow(1, t - 1, 1).unwrap());
    let mut i = 0;
    while i < codes.len() {
        let l = block.min(codes.len() - i);
        let block_ids: Vec<u32> = (0..rows).flat_map(|_| codes[i..i + l].to_vec()).collect();
        let ct = Tensor::from_vec(block_ids, (rows, l), &Device::Cpu).unwrap();
        let e = m.embed_image_codes(&ct).unwrap();
        let h = m
            .llm
            .forward_embeds_padded(&e, Some(&mut cache), &pads)
            .unwrap();
        out.extend(flat(&h));
        i += l;
    }
    out
}

/// Blocks of 2 to 16 codes give every position the bits of one-code passes, with and
/// without padded rows, for bf16, q8 and q4 weights, at this process's kernel level.
#[test]
fn block_logits_equal_one_code_logits() {
    let codes: Vec<u32> = (0..20).map(|i| (i * 37 % 100) as u32).collect();
    let one: Vec<u32> = (1..12).collect();
    let two = vec![one.clone(), (3..8).collect()];
    for model in ["tiny-pro", "tiny-janus"] {
        for quant in [None, Some(QuantFormat::Q8), Some(QuantFormat::Q4)] {
            let p = load(model, quant);
            for prompts in [vec![one.clone()], two.clone()] {
                let base = logits_in_blocks(&p, &prompts, &codes, 1);
                for block in [2, 3, 5, 8, 16] {
                    let got = logits_in_blocks(&p, &prompts, &codes, block);
                    let differ = base
                        .iter()
                        .zip(&got)
                        .map(|(a, b)| {
                            a.iter()
                                .zip(b)
                                .filter(|(x, y)| x.to_bits() != y.to_bits())
                                .count()
                        })
                        .sum::<usize>();
                    assert_eq!(
                        differ,
                        0,
                        "{model} {quant:?}, {} prompts, block {block}: {differ} logits differ from one-code passes",
                        prompts.len()
                    );
                }
            }
        }
    }
}

/// [`block_logits_equal_one_code_logits`] at every lower kernel level, each in a child
/// process (the level is read once per process, from `JANUS_KERNELS`).
#[test]
fn block_logits_equal_one_code_logits_at_every_level() {
    if std::env::var_os("JANUS_KERNELS").is_some() {
        return; // A child, or a run that forced one level already.
    }
    let exe = std::env::current_exe().unwrap();
    for isa in Isa::available() {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "block_logits_equal_one_code_logits",
                "--test-threads",
                "1",
            ])
            .env("JANUS_KERNELS", isa.name())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "at level {}: {text}\n{}",
            isa.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn params(
    seed: u64,
    temperature: f64,
    cfg_weight: f64,
    parallel: usize,
    window: usize,
) -> GenerateParams {
    GenerateParams {
        parallel,
        cfg_weight,
        temperature,
        seed,
        speculative: Speculative {
            window: Window::Fixed(window),
            accept: Accept::Exact,
        },
    }
}

fn codes_of(p: &Pipeline, prompt: &str, gp: &GenerateParams) -> engine::GenerateOutput {
    let (c, u) = janus::processor::prepare_generation(&p.tokenizer, prompt).unwrap();
    engine::generate_codes(&p.model, &c, &u, gp, |_, _| ControlFlow::Continue(())).unwrap()
}

/// Exact speculation draws plain decoding's codes: seeds, temperatures 0 and 1, cfg
/// weights, P of 1 and 2, windows of 2, 5, 16 and 64 (larger than what remains at the
/// end), and some drafts fail (rejections are exercised) while others pass.
#[test]
fn exact_speculation_draws_the_plain_codes() {
    let p = tiny_pro();
    let (mut checked, mut passed) = (0, 0);
    for seed in 0..3u64 {
        for temperature in [0.0, 1.0] {
            let (cfg, parallel) = ([5.0, 1.0, 3.0][seed as usize], 1 + seed as usize % 2);
            let plain = codes_of(p, "a red cat", &params(seed, temperature, cfg, parallel, 1));
            assert_eq!(plain.stats.passes, 576);
            for window in [2, 5, 16, 64] {
                let spec = codes_of(
                    p,
                    "a red cat",
                    &params(seed, temperature, cfg, parallel, window),
                );
                assert_eq!(
                    spec.codes, plain.codes,
                    "seed {seed}, temperature {temperature}, window {window}"
                );
                assert_eq!(spec.stats.window, window);
                assert!(spec.stats.passes <= 576);
                checked += spec.stats.slot_checked.iter().sum::<u64>();
                passed += spec.stats.slot_accepted.iter().sum::<u64>();
            }
        }
    }
    assert!(
        passed > 0 && passed < checked,
        "{passed} of {checked} drafts passed"
    );
}

/// The PNGs are the same bytes.
#[test]
fn exact_speculation_writes_the_same_png_bytes() {
    let p = tiny_pro();
    let png = |window| {
        let out = p
            .generate("a blue dog", &params(9, 1.0, 5.0, 2, window), |_, _| {
                ControlFlow::Continue(())
            })
            .unwrap();
        let meta = janus::png::GenerationMeta {
            prompt: "a blue dog",
            seed: 9,
            cfg_weight: 5.0,
            temperature: 1.0,
            parallel: 2,
            model: "tiny-pro",
            speculative: None,
        };
        out.images
            .iter()
            .enumerate()
            .map(|(i, img)| janus::png::encode_png(img, &meta.png_text(i)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(png(1), png(8));
}

/// A batch of requests (padded prompts, their own P, seed, temperature and cfg weight), as
/// the server runs them: each gets its plain codes; a cancelled item keeps a prefix.
#[test]
fn exact_speculation_in_a_batch_draws_the_plain_codes() {
    let p = tiny_pro();
    let item = |prompt: &str, gp: GenerateParams| {
        let (c, u) = janus::processor::prepare_generation(&p.tokenizer, prompt).unwrap();
        BatchItem {
            cond_ids: c,
            uncond_ids: u,
            params: gp,
        }
    };
    let items = |window| {
        vec![
            item("a red cat on a mat", params(1, 1.0, 5.0, 2, window)),
            item("dog", params(2, 0.0, 3.0, 1, window)),
            item("a tree", params(3, 0.7, 1.0, 1, window)),
        ]
    };
    let plain = engine::generate_codes_batch(&p.model, &items(1), |_, _| vec![true; 3]).unwrap();
    for window in [3, 16] {
        let spec =
            engine::generate_codes_batch(&p.model, &items(window), |_, _| vec![true; 3]).unwrap();
        for (a, b) in spec.iter().zip(&plain) {
            assert_eq!(a.codes, b.codes, "window {window}");
        }
        let cut = engine::generate_codes_batch(&p.model, &items(window), |done, _| {
            vec![true, done < 40, true]
        })
        .unwrap();
        assert_eq!(cut[1].finish, engine::Finish::Cancelled);
        let n = cut[1].codes[0].len();
        assert!((40..576).contains(&n), "{n}");
        assert_eq!(cut[1].codes[0][..], plain[1].codes[0][..n]);
        assert_eq!(cut[0].codes, plain[0].codes);
    }
}

/// `sjd` runs to the end with valid codes and reports its acceptance; its codes differ
/// from plain decoding's (another draw from the same distribution).
#[test]
fn sjd_runs_and_reports_acceptance() {
    let p = tiny_pro();
    let mut gp = params(4, 1.0, 5.0, 1, 8);
    gp.speculative.accept = Accept::Sjd;
    let out = codes_of(p, "a red cat", &gp);
    assert_eq!(out.codes[0].len(), 576);
    assert!(out.codes[0]
        .iter()
        .all(|&c| (c as usize) < p.config().gen_head.image_token_size));
    assert_eq!(out.stats.accept, Accept::Sjd);
    assert_eq!(out.stats.slot_checked.len(), 7);
    assert!(out.stats.slot_checked[0] > 0);
    assert!((out.stats.codes_per_pass() - 576.0 / out.stats.passes as f64).abs() < 1e-12);
}
