//! How much one CFG batch of several image requests speeds up the sampling loop on a
//! model and machine: the seconds per step of batches of 1, 2 and 4 single-image requests
//! (2, 4 and 8 rows), measured in alternation so that a drift in the machine's load
//! favours none, and the VQ decoder's seconds per image. With those two numbers the
//! throughput of K requests batched against one at a time follows (docs/benchmarks.md).
//!
//! ```sh
//! cargo run --release -p janus-server --example batch_scaling -- MODEL_DIR [STEPS] [ROUNDS]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use janus::engine::{generate_codes_batch, BatchItem, GenerateParams};
use janus::pipeline::{DTypeChoice, Pipeline};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or("fixtures/models/tiny-pro".into()));
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let t0 = Instant::now();
    let pipe = Pipeline::load(&dir, DTypeChoice::Auto, &Device::Cpu)?;
    eprintln!(
        "loaded {} ({:?}) in {:.1} s",
        dir.display(),
        pipe.model.dtype(),
        t0.elapsed().as_secs_f64()
    );
    let (cond, uncond) =
        janus::processor::prepare_generation(&pipe.tokenizer, "A red fox in the snow")?;
    let item = |seed| BatchItem {
        cond_ids: cond.clone(),
        uncond_ids: uncond.clone(),
        params: GenerateParams {
            seed,
            ..Default::default()
        },
    };
    let sizes = [1usize, 2, 4];
    let mut per_step = vec![Vec::new(); sizes.len()];
    for r in 0..rounds {
        for (s, &k) in sizes.iter().enumerate() {
            let items: Vec<BatchItem> = (0..k as u64).map(item).collect();
            // Time steps 2..=steps: step 1 includes the prompt's prefill.
            let mut start = None;
            let mut secs = 0.0;
            generate_codes_batch(&pipe.model, &items, |done, _| {
                if done == 1 {
                    start = Some(Instant::now());
                } else if done == steps {
                    secs = start.map_or(0.0, |t| t.elapsed().as_secs_f64());
                }
                vec![done < steps; k]
            })?;
            let s_step = secs / (steps - 1) as f64;
            per_step[s].push(s_step);
            println!(
                "round {r}: {k} request(s), {} rows: {:.4} s/step",
                2 * k,
                s_step
            );
        }
    }
    let codes = pipe.config().gen_image_tokens() as u32;
    let grid: Vec<Vec<u32>> = vec![(0..codes).map(|i| i % 7).collect()];
    let t0 = Instant::now();
    pipe.decode_images(&grid)?;
    let vq = t0.elapsed().as_secs_f64();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let n = pipe.config().gen_image_tokens() as f64;
    let one = median(&mut per_step[0]);
    println!("VQ decode: {vq:.2} s per image");
    for (s, &k) in sizes.iter().enumerate() {
        let m = median(&mut per_step[s]);
        // K requests one at a time: K x (576 steps of 1 + a decode); batched: 576 steps of
        // K + K decodes (the decode thread overlaps nothing else here).
        let seq = k as f64 * (n * one + vq);
        let bat = n * m + k as f64 * vq;
        println!(
            "{k} request(s): median {m:.4} s/step ({:.2}x the rows of 1 cost {:.2}x); \
             K={k} projected end to end: one at a time {seq:.0} s, batched {bat:.0} s, {:.2}x",
            k as f64,
            m / one,
            seq / bat
        );
    }
    Ok(())
}
