//! What weight-only quantisation (`--quant q8|q4`) costs in accuracy on the fixture
//! models, measured against the same model unquantised in bf16: relative error of the
//! prefill logits and agreement of greedy tokens (understanding) and codes (text to
//! image). Bounds carry a margin over the measured values (printed with --nocapture).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use janus::engine::{GenerateParams, SamplingParams};
use janus::kernels::quant::QuantFormat;
use janus::pipeline::{DTypeChoice, LoadOptions, Pipeline, UnderstandOptions};
use janus::processor::Message;

fn model_dir(m: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(m)
}

fn load(m: &str, quant: Option<QuantFormat>) -> Pipeline {
    let opts = LoadOptions {
        quant,
        ..LoadOptions::new(DTypeChoice::Fixed(DType::BF16), Device::Cpu)
    };
    Pipeline::load_with(&model_dir(m), &opts).unwrap()
}

/// Logits of every position of a fixed text, `(1, T, V)` f32.
fn logits(p: &Pipeline, ids: &[u32]) -> Tensor {
    let ids = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = p
        .model
        .llm
        .forward_embeds(&p.model.llm.embed(&ids).unwrap(), None)
        .unwrap();
    p.model
        .llm
        .lm_head(&h)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let s = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap()
}

fn greedy_answer(p: &Pipeline, text: &str) -> Vec<u32> {
    let opts = UnderstandOptions {
        sampling: SamplingParams::default(),
        max_new_tokens: 24,
        ..Default::default()
    };
    let msgs = vec![Message::user(text)];
    p.understand(&msgs, &opts, |_| ControlFlow::Continue(()))
        .unwrap()
        .token_ids
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn quantised_models_stay_close_to_bf16() {
    // (format, max logit relative error, min greedy-prefix share)
    let bounds = [
        (QuantFormat::Q8, 0.05f32, 0.5f32),
        (QuantFormat::Q4, 0.5, 0.0),
    ];
    for m in ["tiny-pro", "tiny-janus"] {
        let base = load(m, None);
        let vocab = base.config().text.vocab_size as u32;
        let ids: Vec<u32> = (0..70).map(|i| (1000 + 7 * i) % vocab).collect();
        let want_logits = logits(&base, &ids);
        // For scale: what bf16 itself costs against f32 on the same text.
        let f32_model =
            Pipeline::load(&model_dir(m), DTypeChoice::Fixed(DType::F32), &Device::Cpu).unwrap();
        eprintln!(
            "{m} bf16 vs f32: logits rel err {:.4}",
            rel_err(&want_logits, &logits(&f32_model, &ids))
        );
        let prompts = ["Describe a red square.", "What is two plus two?"];
        let want_text: Vec<Vec<u32>> = prompts.iter().map(|t| greedy_answer(&base, t)).collect();
        let gp = GenerateParams {
            parallel: 1,
            ..Default::default()
        };
        let want_codes = base
            .generate("a cat", &gp, |_, _| ControlFlow::Continue(()))
            .unwrap()
            .codes;
        for (fmt, max_err, min_share) in bounds {
            let q = load(m, Some(fmt));
            let e = rel_err(&logits(&q, &ids), &want_logits);
            let (mut same, mut total) = (0, 0);
            for (t, want) in prompts.iter().zip(&want_text) {
                let got = greedy_answer(&q, t);
                same += common_prefix(&got, want);
                total += want.len().max(1);
            }
            let share = same as f32 / total as f32;
            let codes = q
                .generate("a cat", &gp, |_, _| ControlFlow::Continue(()))
                .unwrap()
                .codes;
            let code_prefix = common_prefix(&codes[0], &want_codes[0]);
            eprintln!(
                "{m} {}: logits rel err {e:.4}, greedy text prefix {same}/{total}, t2i code prefix {code_prefix}/{}",
                fmt.name(),
                want_codes[0].len()
            );
            assert!(
                e <= max_err,
                "{m} {}: logit error {e} > {max_err}",
                fmt.name()
            );
            assert!(
                share >= min_share,
                "{m} {}: greedy share {share} < {min_share}",
                fmt.name()
            );
        }
    }
}
