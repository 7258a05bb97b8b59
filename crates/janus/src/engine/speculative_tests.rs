//! The decoding loop on a synthetic model small enough to know every sequence's
//! probability: exact mode reproduces plain decoding, `sjd` keeps the distribution (a
//! G-test), and a lossy relaxation of `sjd` is caught by the same test.

use std::collections::HashMap;

use super::*;

/// An autoregressive model over `K` codes whose logits at each position are a fixed
/// pseudo-random function of every code before it.
struct TableModel {
    k: usize,
    /// Per image, the codes fed so far (images seed the table apart).
    fed: Vec<Vec<u32>>,
}

impl TableModel {
    fn new(k: usize, images: usize) -> Self {
        Self {
            k,
            fed: vec![Vec::new(); images],
        }
    }

    /// Logits of the code after `prefix`, in [-2.5, 2.5).
    fn logits(k: usize, prefix: &[u32]) -> Vec<f32> {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ prefix.len() as u64;
        for &c in prefix {
            h = (h ^ u64::from(c) ^ 0x9e37).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (0..k as u64)
            .map(|i| {
                let x =
                    (h ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                ((x >> 40) % 1000) as f32 / 200.0 - 2.5
            })
            .collect()
    }

    /// The probability of a whole sequence at temperature `t`.
    fn probability(k: usize, seq: &[u32], t: f64) -> f64 {
        (0..seq.len())
            .map(|j| softmax_with_temperature(&Self::logits(k, &seq[..j]), t)[seq[j] as usize])
            .product()
    }
}

impl Verifier for TableModel {
    fn codebook(&self) -> usize {
        self.k
    }

    fn start(&mut self) -> Result<Vec<Vec<f32>>> {
        Ok(self.fed.iter().map(|_| Self::logits(self.k, &[])).collect())
    }

    fn pass(&mut self, keep: usize, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        assert_eq!(inputs.len(), self.fed.len());
        let k = self.k;
        Ok(self
            .fed
            .iter_mut()
            .zip(inputs)
            .map(|(fed, inputs)| {
                assert!(keep <= fed.len(), "rolled forward: {keep} > {}", fed.len());
                fed.truncate(keep);
                let mut out = Vec::new();
                for &c in inputs {
                    fed.push(c);
                    out.extend(Self::logits(k, fed));
                }
                out
            })
            .collect())
    }
}

fn run(
    k: usize,
    n: usize,
    window: usize,
    seed: u64,
    t: f64,
    accept: Accept,
    relax: f64,
) -> (Vec<u32>, usize) {
    let mut model = TableModel::new(k, 1);
    let mut s = ImageSampling::new(seed, 0, k, t, accept);
    s.relax = relax;
    let out = decode(&mut model, vec![s], window, n, |_, _| vec![true]).unwrap();
    (out.codes[0].clone(), out.passes)
}

#[test]
fn exact_mode_gives_the_plain_codes_at_every_window() {
    let (k, n) = (8, 40);
    let mut fewer = 0;
    for seed in 0..40 {
        for t in [0.0, 0.7, 1.0] {
            let (plain, plain_passes) = run(k, n, 1, seed, t, Accept::Exact, 1.0);
            assert_eq!(plain.len(), n);
            assert_eq!(plain_passes, n);
            for w in [2, 3, 5, 16, 64] {
                let (spec, passes) = run(k, n, w, seed, t, Accept::Exact, 1.0);
                assert_eq!(spec, plain, "seed {seed}, temperature {t}, window {w}");
                assert!(passes <= n);
                fewer += usize::from(passes < n);
            }
        }
    }
    // Drafts do pass sometimes (otherwise the test above checks little).
    assert!(fewer > 100, "{fewer}");
}

/// `G = 2 Σ O ln(O / E)` over every sequence of `n` codes; compared with the 0.1 %
/// critical value of chi-square with (cells - 1) degrees of freedom (Wilson-Hilferty).
fn g_test(k: usize, n: usize, t: f64, samples: &[Vec<u32>]) -> (f64, f64) {
    let mut seen: HashMap<Vec<u32>, u64> = HashMap::new();
    for s in samples {
        *seen.entry(s.clone()).or_default() += 1;
    }
    let cells = k.pow(n as u32);
    let total = samples.len() as f64;
    let mut g = 0.0;
    let mut mass = 0.0;
    for idx in 0..cells {
        let seq: Vec<u32> = (0..n)
            .map(|j| ((idx / k.pow(j as u32)) % k) as u32)
            .collect();
        let p = TableModel::probability(k, &seq, t);
        mass += p;
        if let Some(&o) = seen.get(&seq) {
            g += 2.0 * o as f64 * (o as f64 / (total * p)).ln();
        }
    }
    assert!((mass - 1.0).abs() < 1e-9, "probabilities sum to {mass}");
    let df = (cells - 1) as f64;
    let z = 3.090; // one-sided 0.1 %
    let c = 2.0 / (9.0 * df);
    (g, df * (1.0 - c + z * c.sqrt()).powi(3))
}

#[test]
fn sjd_keeps_the_distribution_and_a_lossy_rule_is_caught() {
    // 4 codes over 4 positions: 256 sequences, 100 000 samples (~390 per sequence).
    let (k, n, t, samples) = (4, 4, 1.0, 100_000u64);
    let draw = |window: usize, accept: Accept, relax: f64| -> (Vec<Vec<u32>>, f64) {
        let mut passes = 0;
        let seqs = (0..samples)
            .map(|seed| {
                let (codes, p) = run(k, n, window, seed, t, accept, relax);
                passes += p;
                codes
            })
            .collect();
        (seqs, passes as f64 / samples as f64)
    };
    for (window, accept) in [(1, Accept::Exact), (2, Accept::Sjd), (3, Accept::Sjd)] {
        let (seqs, passes) = draw(window, accept, 1.0);
        let (g, critical) = g_test(k, n, t, &seqs);
        eprintln!(
            "window {window} {accept:?}: G = {g:.1} (critical {critical:.1}), {passes:.2} passes"
        );
        assert!(
            g < critical,
            "window {window} {accept:?}: G = {g:.1} >= {critical:.1}"
        );
        if window > 1 {
            assert!(
                passes < n as f64,
                "no draft ever passed: {passes} passes per sequence"
            );
        }
    }
    // Passing drafts at three times the test's probability changes the distribution.
    let (seqs, _) = draw(4, Accept::Sjd, 3.0);
    let (g, critical) = g_test(k, n, t, &seqs);
    eprintln!("lossy: G = {g:.1} (critical {critical:.1})");
    assert!(
        g > critical,
        "the lossy rule went unnoticed: G = {g:.1} < {critical:.1}"
    );
}

#[test]
fn a_stopped_image_keeps_its_codes_and_the_others_go_on() {
    let k = 8;
    let mut model = TableModel::new(k, 2);
    let images = (0..2)
        .map(|i| ImageSampling::new(5, i, k, 1.0, Accept::Exact))
        .collect();
    let out = decode(&mut model, images, 4, 30, |done, _| vec![done < 10, true]).unwrap();
    assert!(
        out.codes[0].len() >= 10 && out.codes[0].len() < 30,
        "{}",
        out.codes[0].len()
    );
    assert_eq!(out.codes[1].len(), 30);
    assert_eq!(out.margins[1].len(), 30);
    // Each image is its plain sequence, however the batch's passes went.
    for (i, codes) in out.codes.iter().enumerate() {
        let mut alone = TableModel::new(k, 1);
        let s = ImageSampling::new(5, i, k, 1.0, Accept::Exact);
        let plain = decode(&mut alone, vec![s], 1, 30, |_, _| vec![true]).unwrap();
        assert_eq!(codes[..], plain.codes[0][..codes.len()]);
    }
}

/// Logits that depend on the position only: every Jacobi draft is right once its row has
/// run once, so a window of W gains about W - 1 codes per pass after the first.
struct PositionOnly {
    k: usize,
    fed: usize,
}

impl Verifier for PositionOnly {
    fn codebook(&self) -> usize {
        self.k
    }

    fn start(&mut self) -> Result<Vec<Vec<f32>>> {
        Ok(vec![TableModel::logits(self.k, &[0])])
    }

    fn pass(&mut self, keep: usize, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.fed = keep;
        let mut out = Vec::new();
        for _ in &inputs[0] {
            self.fed += 1;
            out.extend(TableModel::logits(self.k, &[self.fed as u32]));
        }
        Ok(vec![out])
    }
}

#[test]
fn context_free_codes_pass_in_few_passes() {
    let (k, n) = (16, 100);
    for accept in [Accept::Exact, Accept::Sjd] {
        for w in [4, 8] {
            let mut m = PositionOnly { k, fed: 0 };
            let s = ImageSampling::new(1, 0, k, 1.0, accept);
            let out = decode(&mut m, vec![s], w, n, |_, _| vec![true]).unwrap();
            assert_eq!(out.codes[0].len(), n);
            // Each window's drafts are right from their second pass on.
            assert!(
                out.passes <= 2 * n / (w - 1) + 2,
                "{accept:?} W={w}: {} passes",
                out.passes
            );
        }
    }
}
