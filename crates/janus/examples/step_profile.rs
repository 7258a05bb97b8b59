//! Runs only text-to-image steps (2 rows, argmax) on a model directory, for profilers:
//! `perf record target/release/examples/step_profile DIR [STEPS] [bf16|f32]`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use janus::model::KvCache;
use janus::pipeline::{DTypeChoice, Pipeline};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).map(String::as_str).unwrap_or("."));
    let steps: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let dtype = match args.get(3).map(String::as_str) {
        Some("f32") => DType::F32,
        _ => DType::BF16,
    };
    let pipe = Pipeline::load(&dir, DTypeChoice::Fixed(dtype), &Device::Cpu)?;
    let m = &pipe.model;
    let ids: Vec<u32> = (0..34).map(|i| 1000 + 7 * (i % 17)).collect();
    let ids = Tensor::from_vec(ids, (2, 17), &Device::Cpu)?;
    let mut cache = KvCache::new(m.llm.config(), 2, 17 + steps, dtype, &Device::Cpu)?;
    let mut h = m
        .llm
        .forward_embeds(&m.llm.embed(&ids)?, Some(&mut cache))?;
    let t0 = Instant::now();
    for _ in 0..steps {
        let t = h.dim(1)?;
        let logits = m.gen_head_logits(&h.narrow(1, t - 1, 1)?)?; // (2, 1, V)
        let codes = logits.argmax(D::Minus1)?; // (2, 1)
        let x = m.embed_image_codes(&codes)?;
        h = m.llm.forward_embeds(&x, Some(&mut cache))?;
    }
    let s = t0.elapsed().as_secs_f64();
    println!("{steps} steps: {:.1} ms/step", s * 1e3 / steps as f64);
    Ok(())
}
