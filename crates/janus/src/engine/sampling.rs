//! Token sampling: greedy, temperature, top-k and top-p, from a seeded generator.
//!
//! The warpers apply in transformers' order (temperature, then top-k, then top-p), as the
//! reference's `language_model.generate(do_sample=True, ...)` does. The generator is
//! ChaCha8 seeded from a u64, so a seed gives the same tokens on every platform and
//! release (PyTorch's generator cannot be matched, so sampled outputs are ours, not the
//! reference's; greedy outputs are identical).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// How to pick the next token from a row of logits.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f64,
    /// Keep the smallest set of tokens whose probability reaches this mass (1.0 = off).
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 42,
        }
    }
}

impl SamplingParams {
    /// Rejects values that cannot be sampled with.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidInput(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return Err(Error::InvalidInput(format!(
                "top-p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// A seed from the clock and process id, for runs that did not name one. Kept below 2^53
/// so JSON readers (JavaScript's numbers) keep it exact.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 of the clock mixed with the pid.
    let mut z = nanos ^ ((std::process::id() as u64) << 32);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & ((1 << 53) - 1)
}

/// A seeded sampler; one per request so concurrent requests stay independent.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

/// Index of the largest value; the first one on ties (as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v || (i == 0 && v.is_nan()) {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Softmax in f64 of `logits / temperature`.
pub fn softmax_with_temperature(logits: &[f32], temperature: f64) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<f64> = logits
        .iter()
        .map(|&l| ((l as f64 - max) / temperature).exp())
        .collect();
    let s: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= s);
    p
}

impl Sampler {
    /// A sampler for `params` (validated).
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Self { params, rng })
    }

    /// The parameters in use.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks a token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let mut probs = softmax_with_temperature(logits, self.params.temperature);
        let mut order: Vec<usize> = (0..probs.len()).collect();
        // Stable sort, most likely first; ties keep index order.
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut keep = order.len();
        if self.params.top_k > 0 {
            keep = keep.min(self.params.top_k);
        }
        if self.params.top_p < 1.0 {
            // Smallest prefix whose mass reaches top_p (at least one token).
            let mut mass = 0.0;
            for (n, &i) in order.iter().take(keep).enumerate() {
                mass += probs[i];
                if mass >= self.params.top_p {
                    keep = n + 1;
                    break;
                }
            }
        }
        for &i in &order[keep..] {
            probs[i] = 0.0;
        }
        self.draw(&probs, &order[..keep])
    }

    /// Draws an index from (unnormalised) `probs`, walking `support` in order.
    pub fn draw(&mut self, probs: &[f64], support: &[usize]) -> u32 {
        let total: f64 = support.iter().map(|&i| probs[i]).sum();
        let mut u = self.rng.random::<f64>() * total;
        for &i in support {
            u -= probs[i];
            if u < 0.0 {
                return i as u32;
            }
        }
        // Rounding left u at ~0: the last token with mass.
        support
            .iter()
            .rev()
            .find(|&&i| probs[i] > 0.0)
            .copied()
            .unwrap_or(0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f64, p: f64, k: usize) -> SamplingParams {
        SamplingParams {
            temperature: t,
            top_p: p,
            top_k: k,
            seed: 7,
        }
    }

    #[test]
    fn greedy_takes_first_max() {
        let mut s = Sampler::new(params(0.0, 1.0, 0)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy() {
        let mut s = Sampler::new(params(1.5, 1.0, 1)).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.0, 0.5, 2.0, 1.9]), 2);
        }
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // probs ~ [0.6, 0.3, 0.1]: top_p 0.7 keeps the first two only.
        let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
        let mut s = Sampler::new(params(1.0, 0.7, 0)).unwrap();
        let mut seen = [0; 3];
        for _ in 0..2000 {
            seen[s.sample(&logits) as usize] += 1;
        }
        assert_eq!(seen[2], 0, "{seen:?}");
        assert!(seen[1] > 400 && seen[0] > 1000, "{seen:?}");
    }

    #[test]
    fn seed_reproduces_and_distribution_follows_probs() {
        let logits = [0.0f32, 1.0, 2.0];
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed,
                ..params(1.0, 1.0, 0)
            })
            .unwrap();
            (0..3000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let r = run(3);
        let frac2 = r.iter().filter(|&&t| t == 2).count() as f64 / r.len() as f64;
        let expect = 2f64.exp() / (1.0 + 1f64.exp() + 2f64.exp());
        assert!((frac2 - expect).abs() < 0.03, "{frac2} vs {expect}");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(Sampler::new(params(-1.0, 1.0, 0)).is_err());
        assert!(Sampler::new(params(f64::NAN, 1.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 0.0, 0)).is_err());
        assert!(Sampler::new(params(1.0, 1.5, 0)).is_err());
    }
}
