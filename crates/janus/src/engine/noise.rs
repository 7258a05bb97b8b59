//! Gumbel-max image sampling with noise fixed per image and position.
//!
//! `argmax_k(logits_k / T + g_k)` with `g_k` standard Gumbel noise is an exact draw from
//! `softmax(logits / T)`. Drawing the noise from a counter-based generator keyed by
//! (seed, image, position, code) makes each code a pure function of those and of the
//! logits: speculative decoding can verify a draft by recomputing it, and reaches the same
//! image as one-token decoding. The generator is ChaCha8 with the image as its stream and
//! the position times the codebook as its word position, so no draw depends on how many
//! came before it.

use rand::RngCore;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The Gumbel noise of one image, addressed by position.
#[derive(Debug, Clone)]
pub struct PositionNoise {
    rng: ChaCha8Rng,
    codebook: usize,
}

impl PositionNoise {
    /// The noise of image `image` (0-based within its request) under `seed`.
    pub fn new(seed: u64, image: usize, codebook: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(image as u64);
        Self { rng, codebook }
    }

    /// Codes per position.
    pub fn codebook(&self) -> usize {
        self.codebook
    }

    /// The `codebook` Gumbel values of `position`.
    pub fn at(&mut self, position: usize) -> Vec<f64> {
        // Two 32-bit words per value.
        self.rng
            .set_word_pos(position as u128 * self.codebook as u128 * 2);
        (0..self.codebook)
            .map(|_| {
                // A uniform in (0, 1) from the top 53 bits, never 0 or 1.
                let u = ((self.rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
                -(-u.ln()).ln()
            })
            .collect()
    }
}

/// The code Gumbel-max sampling picks: `argmax_k(logits_k / temperature + noise_k)`, or the
/// plain argmax (first on ties) at temperature 0, where `noise` is not read.
pub fn gumbel_argmax(logits: &[f32], temperature: f64, noise: &[f64]) -> u32 {
    if temperature == 0.0 {
        return super::sampling::argmax(logits);
    }
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (i, (&l, &g)) in logits.iter().zip(noise).enumerate() {
        let v = f64::from(l) / temperature + g;
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// [`gumbel_argmax`] over log-probabilities already scaled (`ln p_k`), for proposals that
/// are distributions rather than logits.
pub fn gumbel_argmax_probs(probs: &[f64], noise: &[f64]) -> u32 {
    let mut best = 0;
    let mut best_v = f64::NEG_INFINITY;
    for (i, (&p, &g)) in probs.iter().zip(noise).enumerate() {
        if p > 0.0 {
            let v = p.ln() + g;
            if v > best_v {
                best = i;
                best_v = v;
            }
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_depends_on_seed_image_and_position_only() {
        let mut a = PositionNoise::new(7, 1, 16);
        let later = a.at(5);
        let first = a.at(0);
        // Reading position 5 first does not change position 0, and the reverse.
        let mut b = PositionNoise::new(7, 1, 16);
        assert_eq!(b.at(0), first);
        assert_eq!(b.at(5), later);
        assert_ne!(first, later);
        assert_ne!(PositionNoise::new(7, 0, 16).at(0), first);
        assert_ne!(PositionNoise::new(8, 1, 16).at(0), first);
        assert!(first.iter().all(|g| g.is_finite()));
    }

    #[test]
    fn gumbel_max_follows_the_softmax() {
        // p = softmax([0, 1, 2] / 0.8); 20000 positions of independent noise.
        let logits = [0.0f32, 1.0, 2.0];
        let t = 0.8;
        let mut noise = PositionNoise::new(3, 0, 3);
        let mut seen = [0usize; 3];
        let n = 20_000;
        for pos in 0..n {
            seen[gumbel_argmax(&logits, t, &noise.at(pos)) as usize] += 1;
        }
        let p = super::super::sampling::softmax_with_temperature(&logits, t);
        for k in 0..3 {
            let f = seen[k] as f64 / n as f64;
            // Four standard deviations of a binomial proportion.
            let sd = (p[k] * (1.0 - p[k]) / n as f64).sqrt();
            assert!((f - p[k]).abs() < 4.0 * sd, "code {k}: {f} vs {}", p[k]);
        }
        // The same through probabilities.
        let mut noise = PositionNoise::new(3, 0, 3);
        for pos in 0..200 {
            let g = noise.at(pos);
            assert_eq!(gumbel_argmax(&logits, t, &g), gumbel_argmax_probs(&p, &g));
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        assert_eq!(gumbel_argmax(&[0.5, 3.0, 3.0, 1.0], 0.0, &[]), 1);
    }
}
