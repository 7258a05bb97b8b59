//! The papers' training recipes as data, and the values a run uses once the command
//! line has overridden them.
//!
//! The six built-in recipes live in `crates/janus/recipes/{janus,janus-pro}/stage{1,2,3}.json`
//! (values from ../shared/janus-reference.md section 6). A recipe may also be read from a
//! JSON file of the same shape.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::parts::{parse_parts, Part};
use crate::error::{Error, Result};

/// The built-in recipes, by name.
const BUILTIN: [(&str, &str); 6] = [
    (
        "janus/stage1",
        include_str!("../../recipes/janus/stage1.json"),
    ),
    (
        "janus/stage2",
        include_str!("../../recipes/janus/stage2.json"),
    ),
    (
        "janus/stage3",
        include_str!("../../recipes/janus/stage3.json"),
    ),
    (
        "janus-pro/stage1",
        include_str!("../../recipes/janus-pro/stage1.json"),
    ),
    (
        "janus-pro/stage2",
        include_str!("../../recipes/janus-pro/stage2.json"),
    ),
    (
        "janus-pro/stage3",
        include_str!("../../recipes/janus-pro/stage3.json"),
    ),
];

/// Learning-rate shape after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Constant at the peak.
    Constant,
    /// Half a cosine from the peak down to zero at the last step.
    Cosine,
}

impl Schedule {
    /// Parses `constant` or `cosine`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(Error::InvalidInput(format!(
                "unknown schedule {s:?}; use constant or cosine"
            ))),
        }
    }
}

/// One stage's hyperparameters, as the papers give them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// `janus-pro/stage2` etc.
    pub name: String,
    /// Where the values come from.
    #[serde(default)]
    pub description: String,
    /// Parts that train; everything else (and the VQ model, always) is frozen.
    pub train: Vec<String>,
    /// Peak learning rate.
    pub lr: f64,
    /// Shape after warm-up.
    pub schedule: Schedule,
    /// Linear warm-up steps from 0 to the peak.
    pub warmup_steps: u64,
    /// Decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// Optimiser steps.
    pub steps: u64,
    /// Steps for the 7B model where the paper gives a different count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_7b: Option<u64>,
    /// Samples per optimiser step (the global batch).
    pub batch_size: u64,
    /// Understanding : pure text : text-to-image samples per step.
    pub ratio: [u32; 3],
    /// Probability of replacing a text-to-image caption with pads (CFG training).
    pub cfg_drop: f64,
    /// Probability of cutting a caption to its first sentence.
    #[serde(default)]
    pub first_sentence: f64,
    /// Step at which the manifest's `t2i_after` set replaces `t2i`, when the manifest
    /// gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t2i_switch_step: Option<u64>,
}

impl Recipe {
    /// The built-in recipe names.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in recipe by name (`janus-pro/stage2`), or a recipe JSON file by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return serde_json::from_str(text)
                .map_err(|e| Error::Config(format!("built-in recipe {name_or_path}: {e}")));
        }
        let path = Path::new(name_or_path);
        if !path.is_file() {
            return Err(Error::InvalidInput(format!(
                "unknown recipe {name_or_path:?}: not a built-in recipe ({}) nor a file",
                Self::builtin_names().join(", ")
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not a valid recipe: {e}", path.display())))
    }
}

/// Whether a recipe's `steps_7b` applies to a model of `cfg`: the 7B's 4096-wide LLM and
/// anything wider.
pub fn large_model(cfg: &crate::config::JanusConfig) -> bool {
    cfg.text.hidden_size >= 4096
}

/// Values a run may override on the command line (`None`: the recipe's).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--steps`
    pub steps: Option<u64>,
    /// `--batch-size`
    pub batch_size: Option<u64>,
    /// `--micro-batch-size`
    pub micro_batch_size: Option<u64>,
    /// `--lr`
    pub lr: Option<f64>,
    /// `--warmup-steps`
    pub warmup_steps: Option<u64>,
    /// `--schedule`
    pub schedule: Option<Schedule>,
    /// `--weight-decay`
    pub weight_decay: Option<f64>,
    /// `--ratio U:T:G`
    pub ratio: Option<[u32; 3]>,
    /// `--train PART,PART`
    pub train: Option<String>,
    /// `--cfg-drop`
    pub cfg_drop: Option<f64>,
    /// `--first-sentence`
    pub first_sentence: Option<f64>,
    /// `--seed`
    pub seed: Option<u64>,
    /// `--save-every`
    pub save_every: Option<u64>,
    /// `--no-shuffle`
    pub no_shuffle: bool,
    /// `--eval-every`
    pub eval_every: Option<u64>,
}

/// Parses `U:T:G` (three non-negative integers, not all zero).
pub fn parse_ratio(s: &str) -> Result<[u32; 3]> {
    let bad = || {
        Error::InvalidInput(format!(
            "ratio {s:?} must be three non-negative integers U:T:G (understanding : text : \
             text-to-image), not all zero"
        ))
    };
    let parts: Vec<u32> = s
        .split(':')
        .map(|p| p.trim().parse::<u32>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [u, t, g] if u + t + g > 0 => Ok([*u, *t, *g]),
        _ => Err(bad()),
    }
}

/// Everything a run uses, written to `RUN_DIR/run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The recipe the values started from.
    pub recipe: String,
    /// Parts that train.
    pub train: Vec<Part>,
    /// Peak learning rate.
    pub lr: f64,
    /// Shape after warm-up.
    pub schedule: Schedule,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// AdamW decoupled weight decay (tensors of rank >= 2 only).
    pub weight_decay: f64,
    /// AdamW beta1.
    pub beta1: f64,
    /// AdamW beta2.
    pub beta2: f64,
    /// AdamW epsilon.
    pub eps: f64,
    /// Global gradient-norm clip.
    pub clip_grad_norm: f64,
    /// Optimiser steps.
    pub steps: u64,
    /// Samples per optimiser step.
    pub batch_size: u64,
    /// Samples per forward/backward pass.
    pub micro_batch_size: u64,
    /// Understanding : text : text-to-image.
    pub ratio: [u32; 3],
    /// Caption drop probability.
    pub cfg_drop: f64,
    /// First-sentence cut probability.
    pub first_sentence: f64,
    /// Step at which `t2i_after` replaces `t2i` (the manifest's own step wins).
    pub t2i_switch_step: Option<u64>,
    /// Seed of every random choice (data order, caption drops).
    pub seed: u64,
    /// Checkpoint period in steps (0: only at the end).
    pub save_every: u64,
    /// Take samples in file order.
    pub no_shuffle: bool,
    /// Evaluation period in steps (0: never).
    pub eval_every: u64,
}

impl TrainConfig {
    /// The recipe's values with `o` applied; `large_model` picks a recipe's 7B step count.
    pub fn resolve(recipe: &Recipe, o: &Overrides, large_model: bool) -> Result<Self> {
        let train: BTreeSet<Part> = match &o.train {
            Some(list) => parse_parts(list)?,
            None => parse_parts(&recipe.train.join(","))?,
        };
        let default_steps = match (large_model, recipe.steps_7b) {
            (true, Some(s)) => s,
            _ => recipe.steps,
        };
        let batch_size = o.batch_size.unwrap_or(recipe.batch_size);
        let cfg = TrainConfig {
            recipe: recipe.name.clone(),
            train: train.into_iter().collect(),
            lr: o.lr.unwrap_or(recipe.lr),
            schedule: o.schedule.unwrap_or(recipe.schedule),
            warmup_steps: o.warmup_steps.unwrap_or(recipe.warmup_steps),
            weight_decay: o.weight_decay.unwrap_or(recipe.weight_decay),
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip_grad_norm: 1.0,
            steps: o.steps.unwrap_or(default_steps),
            batch_size,
            micro_batch_size: o.micro_batch_size.unwrap_or(batch_size.min(8)),
            ratio: o.ratio.unwrap_or(recipe.ratio),
            cfg_drop: o.cfg_drop.unwrap_or(recipe.cfg_drop),
            first_sentence: o.first_sentence.unwrap_or(recipe.first_sentence),
            t2i_switch_step: recipe.t2i_switch_step,
            seed: o.seed.unwrap_or(0),
            save_every: o.save_every.unwrap_or(0),
            no_shuffle: o.no_shuffle,
            eval_every: o.eval_every.unwrap_or(0),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value's range; the message names the value and its allowed range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidInput(what));
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 1.0) {
            return bad(format!("learning rate {} is out of range (0, 1]", self.lr));
        }
        if !(self.weight_decay.is_finite() && (0.0..=1.0).contains(&self.weight_decay)) {
            return bad(format!(
                "weight decay {} is out of range [0, 1]",
                self.weight_decay
            ));
        }
        for (name, p) in [
            ("cfg drop", self.cfg_drop),
            ("first-sentence", self.first_sentence),
        ] {
            if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
                return bad(format!("{name} probability {p} is out of range [0, 1]"));
            }
        }
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if self.batch_size == 0 || self.micro_batch_size == 0 {
            return bad(format!(
                "batch size {} and micro-batch size {} must be at least 1",
                self.batch_size, self.micro_batch_size
            ));
        }
        if self.micro_batch_size > self.batch_size {
            return bad(format!(
                "micro-batch size {} is larger than the batch size {}",
                self.micro_batch_size, self.batch_size
            ));
        }
        if self.ratio.iter().sum::<u32>() == 0 {
            return bad("data ratio is 0:0:0".into());
        }
        if self.train.is_empty() {
            return bad("no part to train".into());
        }
        Ok(())
    }

    /// Samples of each kind (understanding, text, text-to-image) in every step: the batch
    /// split by the ratio, remainders to the largest fractions (ties to the earlier kind).
    pub fn kind_counts(&self) -> [u64; 3] {
        let total: u64 = self.ratio.iter().map(|&r| u64::from(r)).sum();
        let exact: Vec<(u64, u64)> = self
            .ratio
            .iter()
            .map(|&r| {
                let num = self.batch_size * u64::from(r);
                (num / total, num % total)
            })
            .collect();
        let mut counts = [exact[0].0, exact[1].0, exact[2].0];
        let mut left = self.batch_size - counts.iter().sum::<u64>();
        let mut order: Vec<usize> = (0..3).collect();
        order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
        for i in order {
            if left == 0 {
                break;
            }
            if exact[i].1 > 0 {
                counts[i] += 1;
                left -= 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_recipes_hold_the_papers_values() {
        for name in Recipe::builtin_names() {
            let r = Recipe::load(name).unwrap();
            assert_eq!(r.name, name);
            TrainConfig::resolve(&r, &Overrides::default(), false).unwrap();
        }
        let r = Recipe::load("janus-pro/stage2").unwrap();
        assert_eq!(
            (r.lr, r.warmup_steps, r.steps, r.batch_size),
            (1e-4, 5000, 360_000, 512)
        );
        assert_eq!(r.ratio, [2, 3, 5]);
        let r = Recipe::load("janus/stage1").unwrap();
        assert_eq!(
            (r.schedule, r.warmup_steps, r.ratio),
            (Schedule::Cosine, 300, [1, 0, 1])
        );
        let r = Recipe::load("janus/stage3").unwrap();
        assert_eq!((r.lr, r.weight_decay, r.ratio), (2e-5, 0.1, [7, 3, 10]));
        let r = Recipe::load("janus-pro/stage3").unwrap();
        let small = TrainConfig::resolve(&r, &Overrides::default(), false).unwrap();
        let large = TrainConfig::resolve(&r, &Overrides::default(), true).unwrap();
        assert_eq!(
            (small.steps, large.steps, small.batch_size),
            (80_000, 40_000, 128)
        );
        assert_eq!(small.train.len(), 8);
    }

    #[test]
    fn overrides_apply_and_out_of_range_values_are_refused() {
        let r = Recipe::load("janus-pro/stage1").unwrap();
        let o = Overrides {
            steps: Some(7),
            lr: Some(0.5),
            ratio: Some(parse_ratio("2:3:5").unwrap()),
            train: Some("llm,gen_head".into()),
            ..Default::default()
        };
        let c = TrainConfig::resolve(&r, &o, false).unwrap();
        assert_eq!((c.steps, c.lr, c.ratio), (7, 0.5, [2, 3, 5]));
        assert_eq!(c.train, vec![Part::GenHead, Part::Llm]);
        for bad in [
            Overrides {
                lr: Some(0.0),
                ..Default::default()
            },
            Overrides {
                lr: Some(f64::NAN),
                ..Default::default()
            },
            Overrides {
                cfg_drop: Some(1.5),
                ..Default::default()
            },
            Overrides {
                weight_decay: Some(-0.1),
                ..Default::default()
            },
            Overrides {
                steps: Some(0),
                ..Default::default()
            },
            Overrides {
                micro_batch_size: Some(1000),
                ..Default::default()
            },
            Overrides {
                train: Some("vq".into()),
                ..Default::default()
            },
        ] {
            assert!(TrainConfig::resolve(&r, &bad, false).is_err(), "{bad:?}");
        }
        assert!(parse_ratio("1:2").is_err() && parse_ratio("0:0:0").is_err());
        assert!(parse_ratio("a:1:1").is_err());
        let e = Recipe::load("janus-pro/stage4").unwrap_err().to_string();
        assert!(e.contains("janus-pro/stage3"), "{e}");
    }

    #[test]
    fn the_batch_splits_by_the_ratio() {
        let r = Recipe::load("janus-pro/stage2").unwrap();
        let mut c = TrainConfig::resolve(&r, &Overrides::default(), false).unwrap();
        assert_eq!(c.kind_counts(), [102, 154, 256]);
        c.batch_size = 10;
        assert_eq!(c.kind_counts(), [2, 3, 5]);
        c.ratio = [1, 0, 3];
        c.batch_size = 256;
        assert_eq!(c.kind_counts(), [64, 0, 192]);
        c.batch_size = 3;
        c.ratio = [1, 1, 1];
        assert_eq!(c.kind_counts(), [1, 1, 1]);
        c.batch_size = 2;
        assert_eq!(c.kind_counts(), [1, 1, 0]);
    }
}
