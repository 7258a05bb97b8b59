//! Axis ticks and their labels: round values (1, 2 or 5 times a power of ten) that cover
//! the data, labelled with no more digits than tell neighbours apart.

/// One axis: the range shown runs from the first tick to the last.
#[derive(Debug)]
pub(super) struct Axis {
    /// Tick values, increasing; the first and last are the ends of the axis.
    pub(super) ticks: Vec<f64>,
    /// One label per tick.
    pub(super) labels: Vec<String>,
    log: bool,
}

impl Axis {
    /// An axis covering `range` with about `target` ticks.
    pub(super) fn new((min, max): (f64, f64), target: usize, log: bool) -> Axis {
        let ticks = if log {
            log_ticks(min, max, target)
        } else {
            nice_ticks(min, max, target)
        };
        let labels = tick_labels(&ticks, log);
        Axis { ticks, labels, log }
    }

    /// How far `v` lies from the first tick (0) to the last (1), in log10 on a log axis.
    pub(super) fn frac(&self, v: f64) -> f64 {
        let f = |v: f64| if self.log { v.log10() } else { v };
        let (lo, hi) = (f(self.ticks[0]), f(self.ticks[self.ticks.len() - 1]));
        (f(v) - lo) / (hi - lo)
    }
}

/// Evenly spaced ticks at multiples of 1, 2 or 5 times a power of ten, about `target` of
/// them, the first at or below `min` and the last at or above `max`.
fn nice_ticks(min: f64, max: f64, target: usize) -> Vec<f64> {
    let (min, max) = if max > min {
        (min, max)
    } else {
        // A flat series: centre it in a range of its own size (or of 1 around zero).
        let d = if min == 0.0 { 1.0 } else { min.abs() * 0.5 };
        (min - d, max + d)
    };
    let raw = (max - min) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw * 0.999);
    let step = step.unwrap_or(10.0 * mag);
    // The tolerance keeps 3 * 0.1 = 0.30000000000000004 from adding a tick past 0.3.
    let first = (min / step + 1e-9).floor() as i64;
    let last = (max / step - 1e-9).ceil() as i64;
    (first..=last.max(first + 1))
        .map(|i| i as f64 * step)
        .collect()
}

/// Log-axis ticks at 1, 2 and 5 times powers of ten, or at every k-th power of ten when
/// those would be more than `target`; the first at or below `min`, the last at or above
/// `max`. Both must be positive.
fn log_ticks(min: f64, max: f64, target: usize) -> Vec<f64> {
    // The i-th value of ..., 0.5, 1, 2, 5, 10, 20, ...; 0 is 1.
    let seq =
        |i: i64| [1.0, 2.0, 5.0][i.rem_euclid(3) as usize] * 10f64.powi(i.div_euclid(3) as i32);
    let tol = 1e-9;
    let mut lo = 3 * min.log10().floor() as i64;
    while seq(lo) > min * (1.0 + tol) {
        lo -= 1;
    }
    while seq(lo + 1) <= min * (1.0 + tol) {
        lo += 1;
    }
    let mut hi = 3 * max.log10().floor() as i64;
    while seq(hi) < max * (1.0 - tol) {
        hi += 1;
    }
    while seq(hi - 1) >= max * (1.0 - tol) {
        hi -= 1;
    }
    let hi = hi.max(lo + 1);
    if (hi - lo + 1) as usize <= target.max(2) {
        return (lo..=hi).map(seq).collect();
    }
    let d_lo = (min.log10() + tol).floor() as i64;
    let d_hi = (max.log10() - tol).ceil() as i64;
    let k = ((d_hi - d_lo) as usize).div_ceil(target.max(2) - 1).max(1) as i64;
    let d_lo = d_lo.div_euclid(k) * k;
    let d_hi = -((-d_hi).div_euclid(k) * k);
    (d_lo..=d_hi)
        .step_by(k as usize)
        .map(|d| 10f64.powi(d as i32))
        .collect()
}

/// Labels with just the digits that tell neighbouring ticks apart; exponent form (`3e-4`)
/// for axes whose largest tick is below 0.01 or from a million up.
fn tick_labels(ticks: &[f64], log: bool) -> Vec<String> {
    let exponent = |v: f64, digits: usize| {
        let s = format!("{v:.digits$e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.trim_end_matches('0').trim_end_matches('.')
        } else {
            mantissa
        };
        format!("{mantissa}e{exp}")
    };
    let magnitude = |v: f64| v.abs().log10().floor() as i32;
    if log {
        return ticks
            .iter()
            .map(|&v| match magnitude(v) {
                m if !(-2..6).contains(&m) => exponent(v, 0),
                m => format!("{v:.*}", (-m).max(0) as usize),
            })
            .collect();
    }
    let step = if ticks.len() > 1 {
        ticks[1] - ticks[0]
    } else {
        1.0
    };
    let step_mag = (step.log10() + 1e-9).floor() as i32;
    let largest = ticks.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    ticks
        .iter()
        .map(|&v| {
            // Multiples of the step that should be zero can come out as 1e-17.
            let v = if v.abs() < step * 1e-6 { 0.0 } else { v };
            if !(1e-2..1e6).contains(&largest) {
                if v == 0.0 {
                    "0".to_string()
                } else {
                    exponent(v, (magnitude(v) - step_mag).max(0) as usize)
                }
            } else {
                format!("{v:.*}", (-step_mag).max(0) as usize)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_cover_the_range() {
        let cases = [
            (0.0, 1.0),
            (2.3, 11.7),
            (0.0, 3e-4),
            (-5.0, 17.0),
            (4.0, 4.0),
            (0.0, 0.0),
        ];
        for (min, max) in cases.into_iter().chain([(1e-7, 1.3e-7), (1.0, 123_456.0)]) {
            for target in [2, 5, 8] {
                let t = nice_ticks(min, max, target);
                let step = t[1] - t[0];
                assert!(
                    t[0] <= min && *t.last().unwrap() >= max,
                    "{min}..{max}: {t:?}"
                );
                assert!(
                    t.len() >= 2 && t.len() <= 2 * target + 2,
                    "{min}..{max}: {t:?}"
                );
                let mantissa = step / 10f64.powf(step.log10().floor());
                assert!(
                    [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
                    "{t:?}"
                );
                for v in &t {
                    assert!(
                        ((v / step) - (v / step).round()).abs() < 1e-6,
                        "{v} in {t:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn log_ticks_are_one_two_five_and_cover_the_range() {
        for (min, max) in [(0.3, 7.0), (1e-5, 1.0), (2.0, 2.0), (0.9, 1.1), (1e-3, 1e9)] {
            let t = log_ticks(min, max, 6);
            assert!(
                t[0] <= min && *t.last().unwrap() >= max,
                "{min}..{max}: {t:?}"
            );
            assert!(t.len() >= 2 && t.len() <= 8, "{min}..{max}: {t:?}");
            for v in &t {
                let mantissa = v / 10f64.powf(v.log10().floor());
                assert!(
                    [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
                    "{t:?}"
                );
            }
        }
        assert_eq!(log_ticks(0.3, 7.0, 6), [0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(
            tick_labels(&nice_ticks(0.0, 1.0, 2), false),
            ["0.0", "0.5", "1.0"]
        );
        assert_eq!(
            tick_labels(&[0.0, 0.1, 0.2, 0.1 * 3.0], false),
            ["0.0", "0.1", "0.2", "0.3"]
        );
        assert_eq!(tick_labels(&[0.0, 50.0, 100.0], false), ["0", "50", "100"]);
        let lr = tick_labels(&nice_ticks(0.0, 1.5e-4, 3), false);
        assert_eq!(lr, ["0", "5e-5", "1e-4", "1.5e-4"]);
        assert_eq!(
            tick_labels(&[1e-4, 0.1, 1.0, 10.0], true),
            ["1e-4", "0.1", "1", "10"]
        );
    }
}
