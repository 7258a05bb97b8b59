//! Choosing the speculative window from what a pass costs on this machine.
//!
//! On a CPU a pass over W codes costs more than a pass over one (GPUs hide that), so the
//! gain is `codes per pass x t(1) / t(W)`. `auto` measures `t(W)` once per process, model
//! and batch size, estimates codes per pass from the acceptance seen by earlier requests
//! in the process (a measured prior before any), and picks the best W, which is 1 (plain
//! decoding) when no window pays.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::Tensor;

use super::speculative::{DecodeStats, MAX_WINDOW};
use crate::error::Result;
use crate::model::{Janus, KvCache};

/// Windows `auto` considers.
pub const AUTO_WINDOWS: [usize; 5] = [1, 2, 4, 8, 16];

/// Acceptance assumed at each slot before any request has been seen: about what the
/// trained shapes model showed (0.14 to 0.24 at slot 0, docs/speculative.md), so `auto`
/// speculates only where a pass over two codes costs little more than one.
const PRIOR_ACCEPTANCE: f64 = 0.2;

/// Seconds of one pass over `w` codes, `(w, seconds)` per window, by (model, rows).
type PassCosts = HashMap<(usize, usize), Vec<(usize, f64)>>;

/// The pass costs measured in this process.
static PASS_COSTS: Mutex<Option<PassCosts>> = Mutex::new(None);

/// Drafts checked and passed per slot, over the requests of this process.
static SEEN: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Records a finished request's acceptance for later `auto` choices.
pub fn record_acceptance(stats: &DecodeStats) {
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    for (s, (&c, &a)) in stats
        .slot_checked
        .iter()
        .zip(&stats.slot_accepted)
        .enumerate()
    {
        if seen.len() <= s {
            seen.push((0, 0));
        }
        seen[s].0 += c;
        seen[s].1 += a;
    }
}

/// The acceptance `auto` assumes at every slot before it has seen a request.
pub fn prior_acceptance() -> Vec<f64> {
    vec![PRIOR_ACCEPTANCE; MAX_WINDOW]
}

/// Per slot, the acceptance `auto` assumes: what was seen (with the prior as 8 pseudo
/// observations), the prior where nothing was.
fn acceptance(slots: usize) -> Vec<f64> {
    let seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    (0..slots)
        .map(|s| {
            let (c, a) = seen.get(s).copied().unwrap_or((0, 0));
            (a as f64 + 8.0 * PRIOR_ACCEPTANCE) / (c as f64 + 8.0)
        })
        .collect()
}

/// Expected codes per pass at window `w` when slot `s` passes with probability
/// `alpha[s]` (a pass stops at its first failure): `1 + Σ_s Π_{j≤s} alpha[j]`.
pub fn expected_codes_per_pass(alpha: &[f64], w: usize) -> f64 {
    let mut run = 1.0;
    let mut total = 1.0;
    for &a in alpha.iter().take(w.saturating_sub(1)) {
        run *= a;
        total += run;
    }
    total
}

/// The window with the most codes per second for these pass costs `(w, seconds)` and
/// per-slot acceptance; 1 when none beats plain decoding.
pub fn best_window(costs: &[(usize, f64)], alpha: &[f64]) -> usize {
    let rate = |&(w, t): &(usize, f64)| expected_codes_per_pass(alpha, w) / t.max(1e-12);
    costs
        .iter()
        .filter(|(w, _)| *w <= MAX_WINDOW)
        .max_by(|a, b| rate(a).total_cmp(&rate(b)))
        .map_or(1, |&(w, _)| w)
}

/// The window `auto` picks for a batch of `rows` CFG rows on `model`.
pub(crate) fn auto_window(model: &Janus, rows: usize) -> usize {
    let key = (model as *const Janus as usize, rows);
    let cached = PASS_COSTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&key).cloned());
    let costs = match cached {
        Some(c) => c,
        None => match pass_costs(model, rows, &AUTO_WINDOWS) {
            Ok(c) => {
                let mut m = PASS_COSTS.lock().unwrap_or_else(|p| p.into_inner());
                m.get_or_insert_with(HashMap::new).insert(key, c.clone());
                c
            }
            Err(e) => {
                tracing::warn!(
                    "could not time passes for --speculative auto ({e}); decoding plainly"
                );
                return 1;
            }
        },
    };
    let w = best_window(&costs, &acceptance(MAX_WINDOW));
    tracing::info!("speculative window auto: {w} (pass seconds by window: {costs:?})");
    w
}

/// Seconds of one pass over `w` image codes for `rows` CFG rows, per window in `windows`:
/// the best of three passes over a cache already holding 300 positions (a prompt and
/// half an image; fewer on a model of a shorter context).
pub fn pass_costs(model: &Janus, rows: usize, windows: &[usize]) -> Result<Vec<(usize, f64)>> {
    let cfg = model.config();
    let widest = windows.iter().copied().max().unwrap_or(1);
    let context = 300
        .min(cfg.text.max_position_embeddings.saturating_sub(widest))
        .max(1);
    let device = model.device();
    let mut cache = KvCache::new(&cfg.text, rows, context + widest, model.dtype(), device)?;
    let codes = |t: usize| Tensor::zeros((rows, t), candle_core::DType::U32, device);
    let embeds = model.embed_image_codes(&codes(context)?)?;
    model.llm.forward_embeds(&embeds, Some(&mut cache))?;
    let mut out = Vec::with_capacity(windows.len());
    for &w in windows {
        let embeds = model.embed_image_codes(&codes(w)?)?; // (R, W, D)
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            cache.truncate(context)?;
            let t0 = Instant::now();
            let h = model.llm.forward_embeds(&embeds, Some(&mut cache))?;
            let (r, l, d) = h.dims3()?;
            model.gen_head_logits(&h.reshape((r * l, d))?)?;
            best = best.min(t0.elapsed().as_secs_f64());
        }
        out.push((w, best));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_per_pass_follow_the_slot_acceptance() {
        assert_eq!(expected_codes_per_pass(&[0.5, 0.5], 1), 1.0);
        assert_eq!(expected_codes_per_pass(&[0.5, 0.5], 3), 1.75);
        assert_eq!(expected_codes_per_pass(&[1.0; 8], 9), 9.0);
    }

    #[test]
    fn best_window_weighs_cost_against_acceptance() {
        // Passes over more codes cost nearly nothing: speculate.
        let cheap = [(1, 1.0), (2, 1.01), (4, 1.02), (8, 1.05)];
        assert_eq!(best_window(&cheap, &[0.9; 8]), 8);
        // Cost grows with the rows: acceptance 0.5 never pays.
        let linear = [(1, 1.0), (2, 1.9), (4, 3.8), (8, 7.5)];
        assert_eq!(best_window(&linear, &[0.5; 8]), 1);
        // Moderate cost and high acceptance: a middle window.
        let mid = [(1, 1.0), (2, 1.2), (4, 1.6), (8, 3.0)];
        assert_eq!(best_window(&mid, &[0.8; 8]), 4);
    }
}
