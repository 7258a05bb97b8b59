//! `janus data check`: every record of a manifest built as training would build it
//! (tokenised, images decoded, lengths checked against the context), without the weights.

use std::path::Path;

use serde::Serialize;

use super::data::{Dataset, Kind, Located, Record};
use super::sample::{t2i_sample, text_sample, understanding_ids};
use crate::config::JanusConfig;
use crate::error::{Error, Result};
use crate::processor::{load_image, JanusTokenizer};

/// Counts and token statistics of one kind of data.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindReport {
    /// Usable samples.
    pub samples: usize,
    /// Shortest sample in positions.
    pub min_len: usize,
    /// Longest sample in positions.
    pub max_len: usize,
    /// Mean positions per sample.
    pub mean_len: f64,
    /// Supervised targets over all samples.
    pub targets: usize,
}

/// What `check` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataReport {
    /// Per kind: understanding, text, t2i.
    pub kinds: [KindReport; 3],
    /// The `t2i_after` set, if any.
    pub t2i_after: Option<KindReport>,
    /// One message per unusable line or sample.
    pub problems: Vec<String>,
}

/// Builds every sample of `manifest` for the model in `model_dir` (its config and
/// tokenizer only) and reports counts, lengths and problems.
pub fn check(manifest: &Path, model_dir: &Path) -> Result<DataReport> {
    let cfg = JanusConfig::from_file(&model_dir.join("config.json"))?;
    let tok = JanusTokenizer::from_file(model_dir.join("tokenizer.json"))?;
    let data = Dataset::load(manifest)?;
    let mut report = DataReport {
        problems: data.bad.clone(),
        ..Default::default()
    };
    for kind in Kind::ALL {
        report.kinds[kind.index()] = check_kind(data.of(kind), &cfg, &tok, &mut report.problems);
    }
    if let Some((_, recs)) = &data.t2i_after {
        report.t2i_after = Some(check_kind(recs, &cfg, &tok, &mut report.problems));
    }
    Ok(report)
}

fn check_kind(
    recs: &[Located],
    cfg: &JanusConfig,
    tok: &JanusTokenizer,
    problems: &mut Vec<String>,
) -> KindReport {
    let mut r = KindReport::default();
    let mut total = 0usize;
    for rec in recs {
        match check_one(&rec.record, cfg, tok) {
            Ok((len, targets)) => {
                r.min_len = if r.samples == 0 {
                    len
                } else {
                    r.min_len.min(len)
                };
                r.max_len = r.max_len.max(len);
                r.samples += 1;
                r.targets += targets;
                total += len;
            }
            Err(e) => problems.push(format!("{}: {e}", rec.origin())),
        }
    }
    r.mean_len = total as f64 / r.samples.max(1) as f64;
    r
}

/// (positions, targets) of one record, as training would build it.
fn check_one(rec: &Record, cfg: &JanusConfig, tok: &JanusTokenizer) -> Result<(usize, usize)> {
    let (len, targets) = match rec {
        Record::Text { text } => {
            let s = text_sample(tok, text)?;
            (s.len(), s.num_targets())
        }
        Record::T2i { image, caption } => {
            load_image(image)?;
            let n = cfg.gen_image_tokens();
            let s = t2i_sample(tok, caption, vec![0; n], false)?;
            (s.len(), s.num_targets())
        }
        Record::Understanding { images, messages } => {
            for p in images {
                load_image(p)?;
            }
            let n = cfg.vision.num_image_tokens();
            let u = understanding_ids(tok, messages, images.len(), n, false)?;
            (u.ids.len(), u.targets.len())
        }
    };
    let max = cfg.text.max_position_embeddings;
    if len > max {
        return Err(Error::InvalidInput(format!(
            "sample is {len} positions long; the model's context is {max}"
        )));
    }
    Ok((len, targets))
}
