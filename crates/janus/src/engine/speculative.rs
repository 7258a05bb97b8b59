//! Several image codes per forward pass: speculative Jacobi decoding (arXiv 2410.01699).
//!
//! Each pass feeds, per image, the last accepted code and up to W - 1 drafted codes, and
//! reads W rows of logits: the first is exact, each later one is exact when every draft
//! before it was right. Drafts are checked left to right; the first failed check ends the
//! pass with one more code that is correct, so a pass gains at least one code. The codes
//! after it, computed from partly wrong inputs, become the next pass's drafts (the Jacobi
//! update); new positions are drafted from the last row's distribution. The KV cache is
//! rolled back to the accepted prefix.
//!
//! Two checks ([`Accept`]):
//! - `exact`: codes are Gumbel-max draws with noise fixed per position
//!   ([`super::noise`]), so a code is a function of the seed, position and logits; a draft
//!   passes when it equals the code its row gives. The image is the one plain decoding
//!   draws with the same seed, bit for bit where the logits are (the CPU kernels give
//!   each row the same bits in a block as alone; candle's f32 product does not).
//! - `sjd`: the paper's test. A draft x drawn from q passes with probability
//!   `min(1, p(x) / q(x))`; the first failure draws from `norm(max(0, p - q))`. Drafts at a
//!   position reuse that position's Gumbel noise across passes (coupled drafts, as in
//!   arXiv 2510.24211), which keeps consecutive drafts alike. Codes follow the model's
//!   distribution; the image differs from the plain one.
//!
//! All images of a batch share the cache length, so a pass keeps the fewest codes any live
//! image accepted; an image that accepted more keeps the rest as drafts, which pass again.

use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::noise::{gumbel_argmax, gumbel_argmax_probs, PositionNoise};
use super::sampling::softmax_with_temperature;
use crate::error::{Error, Result};

/// The largest window accepted (a pass's rows are 2 x P x W).
pub const MAX_WINDOW: usize = 64;

/// How drafted codes are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    /// Gumbel-max codes with per-position noise: the plain image, exactly.
    #[default]
    Exact,
    /// Speculative Jacobi decoding's probabilistic test: the plain distribution.
    Sjd,
}

impl Accept {
    /// The name the CLI and the API use.
    pub fn name(self) -> &'static str {
        match self {
            Accept::Exact => "exact",
            Accept::Sjd => "sjd",
        }
    }
}

impl std::str::FromStr for Accept {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "exact" => Ok(Accept::Exact),
            "sjd" => Ok(Accept::Sjd),
            _ => Err(Error::InvalidInput(format!(
                "unknown acceptance mode {s:?} (expected exact or sjd)"
            ))),
        }
    }
}

/// Codes fed per pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// W codes per pass; 1 is plain decoding.
    Fixed(usize),
    /// Chosen from this machine's measured cost of a pass over W codes
    /// (`auto`, see the `window` module).
    Auto,
}

impl std::str::FromStr for Window {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "auto" {
            return Ok(Window::Auto);
        }
        let w: usize = s.parse().map_err(|_| {
            Error::InvalidInput(format!("speculative window {s:?} is not a number or auto"))
        })?;
        let w = Window::Fixed(w);
        Speculative {
            window: w,
            accept: Accept::Exact,
        }
        .validate()?;
        Ok(w)
    }
}

/// Speculative decoding settings of a text-to-image request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speculative {
    /// Codes per pass.
    pub window: Window,
    /// The check drafts pass.
    pub accept: Accept,
}

impl Default for Speculative {
    /// Plain decoding: one code per pass.
    fn default() -> Self {
        Self {
            window: Window::Fixed(1),
            accept: Accept::Exact,
        }
    }
}

impl Speculative {
    /// Rejects windows that cannot be run.
    pub fn validate(&self) -> Result<()> {
        match self.window {
            Window::Fixed(w) if w == 0 || w > MAX_WINDOW => Err(Error::InvalidInput(format!(
                "speculative window must be 1 to {MAX_WINDOW}, got {w}"
            ))),
            _ => Ok(()),
        }
    }
}

/// What happened while the codes were drawn, per request.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DecodeStats {
    /// Codes fed per pass (1: plain decoding).
    pub window: usize,
    /// The check drafts passed.
    pub accept: Accept,
    /// Forward passes that produced codes, the prefill included.
    pub passes: usize,
    /// Codes drawn per image.
    pub codes: usize,
    /// Per draft slot (0: the first code after the accepted prefix), the drafts checked
    /// there over the request's images.
    pub slot_checked: Vec<u64>,
    /// Per draft slot, the drafts that passed.
    pub slot_accepted: Vec<u64>,
    /// Seconds of the sampling loop (prefill excluded).
    pub sample_s: f64,
}

impl DecodeStats {
    /// Codes drawn per pass (`codes / passes`).
    pub fn codes_per_pass(&self) -> f64 {
        self.codes as f64 / self.passes.max(1) as f64
    }

    /// Fraction of drafts that passed at each slot (NaN where none was checked).
    pub fn acceptance_by_slot(&self) -> Vec<f64> {
        self.slot_checked
            .iter()
            .zip(&self.slot_accepted)
            .map(|(&c, &a)| a as f64 / c as f64)
            .collect()
    }
}

/// What the decoding loop needs from a model: guided logits for fed codes.
pub(crate) trait Verifier {
    /// Codes per position.
    fn codebook(&self) -> usize;
    /// Runs the prompt; per image, the guided logits (`codebook` values) of code 0.
    fn start(&mut self) -> Result<Vec<Vec<f32>>>;
    /// Keeps the first `keep` fed codes of every image (forgetting later ones), feeds each
    /// image its `inputs` (all the same length L) after them, and returns per image the L
    /// rows of guided logits, concatenated: row s is the logits of the code after input s.
    fn pass(&mut self, keep: usize, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
}

/// How one image's codes are drawn.
#[derive(Debug, Clone)]
pub(crate) struct ImageSampling {
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f64,
    /// The check drafts pass (`sjd` at temperature 0 is `exact`).
    pub accept: Accept,
    /// Gumbel noise per position.
    pub noise: PositionNoise,
    /// The `sjd` test's uniforms and residual draws.
    pub rng: ChaCha8Rng,
    /// `sjd` passes a draft with probability `min(1, relax x p(x) / q(x))`: 1 is the
    /// paper's test; more is a lossy relaxation, which only the distribution test uses
    /// (to show that it can fail).
    pub(crate) relax: f64,
}

impl ImageSampling {
    /// Image `image` of a request with this seed and temperature.
    pub fn new(seed: u64, image: usize, codebook: usize, temperature: f64, accept: Accept) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Streams below 2^32 are the images' noise.
        rng.set_stream((1 << 32) | image as u64);
        Self {
            temperature,
            accept: if temperature == 0.0 {
                Accept::Exact
            } else {
                accept
            },
            noise: PositionNoise::new(seed, image, codebook),
            rng,
            relax: 1.0,
        }
    }
}

/// The codes of one image and its drafts.
struct Draw {
    s: ImageSampling,
    codes: Vec<u32>,
    margins: Vec<f32>,
    /// Drafts for the positions after `codes`, in order.
    drafts: Vec<u32>,
    /// `sjd`: the distribution each draft was drawn from.
    proposals: Vec<Vec<f64>>,
    /// Gumbel noise of the positions in the window, oldest first.
    noise: Vec<(usize, Vec<f64>)>,
    checked: Vec<u64>,
    accepted: Vec<u64>,
    /// Codes recorded when the caller stopped this image (it keeps running with the
    /// batch; later codes are dropped).
    stopped_at: Option<usize>,
}

/// One pass's outcome for one image.
struct Verified {
    /// Codes known correct (at least 1).
    count: usize,
    /// Per row: the code (correct for rows below `count`, the next draft after).
    codes: Vec<u32>,
    /// `sjd`: per row, the distribution `codes` was drawn from.
    probs: Vec<Vec<f64>>,
}

impl Draw {
    fn new(s: ImageSampling, window: usize) -> Self {
        Self {
            s,
            codes: Vec::new(),
            margins: Vec::new(),
            drafts: Vec::new(),
            proposals: Vec::new(),
            noise: Vec::new(),
            checked: vec![0; window.saturating_sub(1)],
            accepted: vec![0; window.saturating_sub(1)],
            stopped_at: None,
        }
    }

    /// The Gumbel noise of `position` (computed once while it is in the window).
    fn noise_at(&mut self, position: usize) -> &[f64] {
        let i = match self.noise.iter().position(|(p, _)| *p == position) {
            Some(i) => i,
            None => {
                let g = self.s.noise.at(position);
                self.noise.push((position, g));
                self.noise.len() - 1
            }
        };
        &self.noise[i].1
    }

    /// Drops the noise of positions before `first`.
    fn forget_noise_before(&mut self, first: usize) {
        self.noise.retain(|(p, _)| *p >= first);
    }

    /// The code at `position` from a row of logits whose inputs may be wrong.
    fn draw(&mut self, position: usize, logits: &[f32], probs: Option<&[f64]>) -> u32 {
        let t = self.s.temperature;
        if t == 0.0 {
            return super::sampling::argmax(logits);
        }
        let g = self.noise_at(position);
        match probs {
            Some(p) => gumbel_argmax_probs(p, g),
            None => gumbel_argmax(logits, t, g),
        }
    }

    /// Checks this image's drafts against a pass's `rows` (L rows of `k` logits) for the
    /// positions from `n` on.
    fn verify(&mut self, n: usize, rows: &[f32], k: usize) -> Verified {
        let l = rows.len() / k;
        let sjd = self.s.accept == Accept::Sjd;
        let mut codes = Vec::with_capacity(l);
        let mut probs = Vec::with_capacity(if sjd { l } else { 0 });
        let mut count = 0;
        for s in 0..l {
            let row = &rows[s * k..(s + 1) * k];
            let p = sjd.then(|| softmax_with_temperature(row, self.s.temperature));
            let code = if count > 0 {
                // Past the accepted prefix: the next draft.
                self.draw(n + s, row, p.as_deref())
            } else if s + 1 < l && s < self.drafts.len() {
                self.checked[s] += 1;
                let draft = self.drafts[s];
                // Ok: the draft passes; Err: the correct code instead.
                let verdict = match &p {
                    // exact: the row's own code decides, and is the code on failure.
                    None => {
                        let own = self.draw(n + s, row, None);
                        if own == draft {
                            Ok(draft)
                        } else {
                            Err(own)
                        }
                    }
                    Some(p) => {
                        let q = self.proposals[s][draft as usize];
                        if self.s.rng.random::<f64>() * q < self.s.relax * p[draft as usize] {
                            Ok(draft)
                        } else {
                            // The proposal is not needed again (commit replaces them all).
                            let q = std::mem::take(&mut self.proposals[s]);
                            Err(self.residual(p, &q))
                        }
                    }
                };
                match verdict {
                    Ok(code) => {
                        self.accepted[s] += 1;
                        code
                    }
                    Err(code) => {
                        count = s + 1;
                        code
                    }
                }
            } else {
                // Every draft before passed: this row's own code (the bonus).
                count = s + 1;
                self.draw(n + s, row, p.as_deref())
            };
            codes.push(code);
            if let Some(p) = p {
                probs.push(p);
            }
        }
        Verified {
            count,
            codes,
            probs,
        }
    }

    /// A draw from `norm(max(0, p - q))`, or from `p` when that is empty (rounding).
    fn residual(&mut self, p: &[f64], q: &[f64]) -> u32 {
        let r: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect();
        let total: f64 = r.iter().sum();
        let (w, total) = if total > 0.0 {
            (&r[..], total)
        } else {
            (p, p.iter().sum())
        };
        let mut u = self.s.rng.random::<f64>() * total;
        for (i, &x) in w.iter().enumerate() {
            u -= x;
            if u < 0.0 {
                return i as u32;
            }
        }
        w.iter().rposition(|&x| x > 0.0).unwrap_or(0) as u32
    }

    /// Keeps the first `keep` codes of `v` (with their rows' `margins`) and makes the
    /// rest, and new ones drafted from `last_row`, the drafts for the next pass of
    /// `next_len` inputs.
    fn commit(
        &mut self,
        v: Verified,
        keep: usize,
        margins: &[f32],
        last_row: &[f32],
        next_len: usize,
    ) {
        self.codes.extend_from_slice(&v.codes[..keep]);
        self.margins.extend_from_slice(&margins[..keep]);
        let n_next = self.codes.len();
        self.drafts = v.codes[keep..].to_vec();
        let sjd = !v.probs.is_empty();
        self.proposals = if sjd {
            v.probs[keep..].to_vec()
        } else {
            Vec::new()
        };
        let last_p = if sjd { v.probs.last().cloned() } else { None };
        let want = next_len.saturating_sub(1);
        while self.drafts.len() < want {
            let pos = n_next + self.drafts.len();
            let code = self.draw(pos, last_row, last_p.as_deref());
            self.drafts.push(code);
            if let Some(p) = &last_p {
                self.proposals.push(p.clone());
            }
        }
        self.drafts.truncate(want);
        self.proposals.truncate(want);
        self.forget_noise_before(n_next);
    }

    /// The codes recorded (up to where the image was stopped).
    fn recorded(&self) -> &[u32] {
        &self.codes[..self.stopped_at.unwrap_or(self.codes.len())]
    }
}

/// Drafts checked and passed at each slot of the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SlotCounts {
    pub checked: Vec<u64>,
    pub accepted: Vec<u64>,
}

impl SlotCounts {
    /// Adds `other`'s counts slot by slot.
    pub fn add(mut self, other: &SlotCounts) -> Self {
        for (mine, theirs) in [
            (&mut self.checked, &other.checked),
            (&mut self.accepted, &other.accepted),
        ] {
            mine.resize(mine.len().max(theirs.len()), 0);
            mine.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        }
        self
    }
}

/// The codes of a batch of images and what it took.
pub(crate) struct Decoded {
    /// Per image, its codes (fewer where cancelled).
    pub codes: Vec<Vec<u32>>,
    /// Per image and code, the gap between the two largest guided logits of its row.
    pub margins: Vec<Vec<f32>>,
    /// Per image, drafts checked and passed per slot.
    pub slots: Vec<SlotCounts>,
    /// Passes run, the prompt's included.
    pub passes: usize,
}

/// Draws `n_codes` codes for every image of `verifier`'s batch, `window` codes per pass.
///
/// `on_pass(done, codes)` runs after every pass with the codes so far and returns, per
/// image, whether to go on; a stopped image records no more codes and the loop ends when
/// every image has stopped.
pub(crate) fn decode<V: Verifier>(
    verifier: &mut V,
    images: Vec<ImageSampling>,
    window: usize,
    n_codes: usize,
    mut on_pass: impl FnMut(usize, &[Vec<u32>]) -> Vec<bool>,
) -> Result<Decoded> {
    let k = verifier.codebook();
    let window = window.clamp(1, MAX_WINDOW);
    let mut draws: Vec<Draw> = images.into_iter().map(|s| Draw::new(s, window)).collect();
    let first = verifier.start()?;
    let mut passes = 1;
    let next_len = window.min(n_codes.saturating_sub(1));
    // Images draw independently: in parallel (one image's 16384 Gumbel values take about
    // 0.23 ms per position, so a batch of 16 on one core would add 2 s to its 576 steps).
    draws.par_iter_mut().zip(&first).for_each(|(d, row)| {
        let v = d.verify(0, row, k);
        d.commit(v, 1, &[top2_margin(row)], row, next_len);
    });
    loop {
        // Codes drawn per image; the cache holds the first n - 1 of them.
        let n = draws[0].codes.len();
        let recorded: Vec<Vec<u32>> = draws.iter().map(|d| d.recorded().to_vec()).collect();
        let go_on = on_pass(n, &recorded);
        for (d, go) in draws.iter_mut().zip(go_on) {
            if !go && d.stopped_at.is_none() {
                d.stopped_at = Some(d.codes.len());
            }
        }
        let live = |d: &Draw| d.stopped_at.is_none();
        if n >= n_codes || !draws.iter().any(live) {
            break;
        }
        let l = window.min(n_codes - n);
        // Input 0 is the last code drawn; then the drafts.
        let inputs: Vec<Vec<u32>> = draws
            .iter()
            .map(|d| {
                std::iter::once(d.codes[n - 1])
                    .chain(d.drafts.iter().copied())
                    .take(l)
                    .collect()
            })
            .collect();
        let rows = verifier.pass(n - 1, &inputs)?;
        passes += 1;
        let verified: Vec<Verified> = draws
            .par_iter_mut()
            .zip(&rows)
            .map(|(d, r)| d.verify(n, r, k))
            .collect();
        let keep = draws
            .iter()
            .zip(&verified)
            .filter(|(d, _)| live(d))
            .map(|(_, v)| v.count)
            .min()
            .unwrap_or(1);
        let next_len = window.min(n_codes - (n + keep));
        draws
            .par_iter_mut()
            .zip(verified)
            .zip(&rows)
            .for_each(|((d, v), r)| {
                let margins: Vec<f32> = (0..keep)
                    .map(|s| top2_margin(&r[s * k..(s + 1) * k]))
                    .collect();
                d.commit(v, keep, &margins, &r[(l - 1) * k..], next_len);
            });
    }
    Ok(Decoded {
        codes: draws.iter().map(|d| d.recorded().to_vec()).collect(),
        margins: draws
            .iter()
            .map(|d| d.margins[..d.recorded().len()].to_vec())
            .collect(),
        slots: draws
            .iter()
            .map(|d| SlotCounts {
                checked: d.checked.clone(),
                accepted: d.accepted.clone(),
            })
            .collect(),
        passes,
    })
}

/// The gap between the two largest values of a row (how close a greedy choice was).
pub(crate) fn top2_margin(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in row {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

#[cfg(test)]
#[path = "speculative_tests.rs"]
mod tests;
