//! AdamW with decoupled weight decay, global gradient-norm clipping and the warm-up
//! schedules, written to match `torch.optim.AdamW` (single-tensor path),
//! `torch.nn.utils.clip_grad_norm_` and transformers' `get_{constant,cosine}_schedule_with_warmup`
//! step for step (tests/train_parity.rs checks 20 steps against PyTorch).
//!
//! Everything is candle tensor arithmetic on f32, so it runs wherever the tensors live.
//! candle-nn's AdamW keeps its moments in the parameter's dtype and cannot be saved: this
//! one keeps f32 moments that checkpoints store and restore exactly.

use candle_core::{DType, Tensor};

use super::recipe::Schedule;
use crate::error::{Error, Result};

/// The learning rate at 0-based optimiser step `step`: `peak * lambda(step)` with
/// transformers' lambdas (linear warm-up from 0; then constant, or half a cosine to 0 at
/// `total`).
pub fn lr_at(peak: f64, schedule: Schedule, warmup: u64, total: u64, step: u64) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    match schedule {
        Schedule::Constant => peak,
        Schedule::Cosine => {
            let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
            peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    }
}

/// Scales `grads` in place so that their global L2 norm is at most `max_norm`, as
/// `clip_grad_norm_` does (coefficient `max_norm / (norm + 1e-6)`, capped at 1, always
/// applied). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let mut sq = Vec::with_capacity(grads.len());
    for g in grads.iter() {
        // Each tensor's norm in f32 (as torch), the total of the norms' squares in f64.
        let n = g
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        sq.push(f64::from(n) * f64::from(n));
    }
    let norm = sq.iter().sum::<f64>().sqrt() as f32;
    let coef = (max_norm as f32 / (norm + 1e-6)).min(1.0);
    for g in grads.iter_mut() {
        *g = (&*g * f64::from(coef))?;
    }
    Ok(f64::from(norm))
}

/// The first and second moments of one tensor.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Running mean of gradients (`exp_avg`).
    pub m: Tensor,
    /// Running mean of squared gradients (`exp_avg_sq`).
    pub v: Tensor,
}

/// AdamW's state: hyperparameters, the step count and f32 moments per tensor.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// epsilon.
    pub eps: f64,
    /// Steps taken.
    pub t: u64,
    /// Moments, one per parameter in a fixed order.
    pub moments: Vec<Moments>,
}

impl AdamW {
    /// Fresh state for tensors of these shapes.
    pub fn new(params: &[Tensor], beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        let moments = params
            .iter()
            .map(|p| {
                Ok(Moments {
                    m: p.zeros_like()?.to_dtype(DType::F32)?,
                    v: p.zeros_like()?.to_dtype(DType::F32)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            beta1,
            beta2,
            eps,
            t: 0,
            moments,
        })
    }

    /// One step: returns each parameter's new value. `decay[i]` says whether tensor `i`
    /// takes `weight_decay`. Arithmetic in torch's order: `p *= 1 - lr wd`;
    /// `m = m + (g - m)(1 - b1)`; `v = b2 v + (1 - b2) g^2`;
    /// `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
    pub fn step(
        &mut self,
        params: &[Tensor],
        grads: &[Tensor],
        decay: &[bool],
        lr: f64,
        weight_decay: f64,
    ) -> Result<Vec<Tensor>> {
        if params.len() != self.moments.len() || grads.len() != params.len() {
            return Err(Error::InvalidInput(format!(
                "optimiser holds {} tensors, got {} parameters and {} gradients",
                self.moments.len(),
                params.len(),
                grads.len()
            )));
        }
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let g = g.to_dtype(DType::F32)?;
            let mut p = p.to_dtype(DType::F32)?;
            if decay[i] && weight_decay != 0.0 {
                p = (p * (1.0 - lr * weight_decay))?;
            }
            let st = &mut self.moments[i];
            st.m = (&st.m + ((&g - &st.m)? * (1.0 - self.beta1))?)?;
            st.v = ((&st.v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((st.v.sqrt()? / bc2_sqrt)? + self.eps)?;
            p = (p - ((&st.m / denom)? * step_size)?)?;
            out.push(p);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_transformers_lambdas() {
        let c = |s| lr_at(1.0, Schedule::Constant, 5, 20, s);
        assert_eq!([c(0), c(1), c(4), c(5), c(19)], [0.0, 0.2, 0.8, 1.0, 1.0]);
        let k = |s| lr_at(2.0, Schedule::Cosine, 5, 20, s);
        assert_eq!(k(5), 2.0);
        assert!((k(10) - 2.0 * 0.5 * (1.0 + (std::f64::consts::PI / 3.0).cos())).abs() < 1e-12);
        assert!(k(20).abs() < 1e-12);
        assert_eq!(lr_at(1.0, Schedule::Constant, 0, 20, 0), 1.0);
    }

    #[test]
    fn clipping_scales_to_the_limit_and_reports_the_norm() {
        let dev = candle_core::Device::Cpu;
        let mut g = vec![
            Tensor::new(&[3f32, 0.0], &dev).unwrap(),
            Tensor::new(&[4f32], &dev).unwrap(),
        ];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let a = g[0].to_vec1::<f32>().unwrap();
        assert!((a[0] - 0.6).abs() < 1e-6, "{a:?}");
        let mut small = vec![Tensor::new(&[0.3f32], &dev).unwrap()];
        clip_grad_norm(&mut small, 1.0).unwrap();
        assert_eq!(small[0].to_vec1::<f32>().unwrap(), [0.3]);
    }
}
