//! Runs one benchmark stage over and over on a model directory, for profilers:
//! `perf record target/release/examples/stage_profile DIR STAGE [REPS] [bf16|f32] [q8|q4]`,
//! STAGE one of `siglip`, `prefill` (the image rows plus 40 text ids), `step` (one
//! text-to-image step of 2 rows after a 17-token prompt, argmax), `decode` (one greedy
//! text token after the prefill), `vq` (one 576-code image). Prints the mean time per
//! repetition; with `ROUNDS=N` in the environment, the median of N rounds of REPS (step
//! and decode restart from the prompt each round, so the cache stays as short).

use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use janus::bench::{pixels, token_ids, vq_codes};
use janus::engine::decode_codes;
use janus::model::KvCache;
use janus::pipeline::{DTypeChoice, Pipeline};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(stage)) = (args.get(1), args.get(2)) else {
        anyhow::bail!(
            "usage: stage_profile DIR siglip|prefill|step|decode|vq [REPS] [bf16|f32] [q8|q4]"
        );
    };
    let reps: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
    // Rounds of `reps` (a step's or a token's cache restarting from the prompt each round).
    let rounds: usize = std::env::var("ROUNDS").map_or(Ok(1), |s| s.parse())?;
    let dtype = match args.get(4).map(String::as_str) {
        Some("f32") => DType::F32,
        _ => DType::BF16,
    };
    let dev = Device::Cpu;
    let quant = args.get(5).map(|q| q.parse()).transpose()?;
    let dir = std::path::Path::new(dir);
    let t_load = Instant::now();
    let opts = janus::pipeline::LoadOptions {
        quant,
        ..janus::pipeline::LoadOptions::new(DTypeChoice::Fixed(dtype), dev.clone())
    };
    let pipe = Pipeline::load_with(dir, &opts)?;
    eprintln!("loaded in {:.2} s", t_load.elapsed().as_secs_f64());
    janus::kernels::tune_allocator();
    let m = &pipe.model;
    let cfg = m.config();
    let px = pixels(cfg.vision.image_size, &dev)?;
    let image_rows = m.encode_images(&px)?.to_dtype(dtype)?;
    let text = token_ids(40, cfg.text.vocab_size);
    let text = m
        .llm
        .embed(&Tensor::new(text.as_slice(), &dev)?.unsqueeze(0)?)?;
    let prompt = Tensor::cat(&[&image_rows, &text], 1)?;
    let (rows, prompt) = match stage.as_str() {
        "step" => (2, text.narrow(1, 0, 17)?.repeat((2, 1, 1))?),
        _ => (1, prompt),
    };
    let cap = prompt.dim(1)? + reps + 1;
    let mut cache = KvCache::new(&cfg.text, rows, cap, dtype, &dev)?;
    let mut h = m.llm.forward_embeds(&prompt, Some(&mut cache))?;
    let codes = vq_codes(cfg.gen_image_tokens(), cfg.vq.codebook_size);
    let mut times = Vec::new();
    for round in 0..rounds {
        if round > 0 && matches!(stage.as_str(), "step" | "decode") {
            cache.reset();
            h = m.llm.forward_embeds(&prompt, Some(&mut cache))?;
        }
        let t0 = Instant::now();
        for _ in 0..reps {
            match stage.as_str() {
                "siglip" => drop(m.encode_images(&px)?),
                "prefill" => {
                    let mut c = KvCache::new(&cfg.text, 1, prompt.dim(1)?, dtype, &dev)?;
                    drop(m.llm.forward_embeds(&prompt, Some(&mut c))?);
                }
                "step" | "decode" => {
                    let t = h.dim(1)?;
                    let last = h.narrow(1, t - 1, 1)?;
                    let x = if stage == "step" {
                        let codes = m.gen_head_logits(&last)?.argmax(D::Minus1)?;
                        m.embed_image_codes(&codes)?
                    } else {
                        let ids = m.llm.lm_head(&last)?.argmax(D::Minus1)?;
                        m.llm.embed(&ids)?
                    };
                    h = m.llm.forward_embeds(&x, Some(&mut cache))?;
                }
                "vq" => drop(decode_codes(m, std::slice::from_ref(&codes))?),
                other => anyhow::bail!("unknown stage {other}"),
            }
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3 / reps as f64);
    }
    let rounds_ms: Vec<String> = times.iter().map(|t| format!("{t:.2}")).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{stage}: {:.2} ms per repetition, median of {rounds} rounds of {reps} ({})",
        times[times.len() / 2],
        rounds_ms.join(" ")
    );
    Ok(())
}
