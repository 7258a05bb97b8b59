//! The compute the papers report for their whole three-stage runs
//! (../shared/janus-reference.md section 6), and what their runs did besides the recipe.

use serde::Serialize;

use super::sizes::ModelSize;

/// GPUs per node in every reported run (8 x A100-40GB).
pub const GPUS_PER_NODE: u64 = 8;
/// The GPU of every reported run.
pub const GPU: &str = "a100-40gb";

/// One paper's figure for one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reported {
    /// Recipe family (`janus`, `janus-pro`).
    pub family: &'static str,
    /// The model it trained.
    pub model: &'static str,
    /// Days the three stages took.
    pub days: u64,
    /// Nodes of 8 A100-40GB.
    pub nodes: u64,
    /// Where the figure is from.
    pub source: &'static str,
}

impl Reported {
    /// GPUs the run used.
    pub fn gpus(&self) -> u64 {
        self.nodes * GPUS_PER_NODE
    }

    /// days x nodes x 8 GPUs x 24 hours.
    pub fn gpu_hours(&self) -> u64 {
        self.days * 24 * self.gpus()
    }
}

const FIGURES: [Reported; 3] = [
    Reported {
        family: "janus",
        model: "Janus-1.3B",
        days: 7,
        nodes: 16,
        source: "Janus (arXiv 2410.13848): 7 days on 16 nodes of 8 A100-40GB",
    },
    Reported {
        family: "janus-pro",
        model: "Janus-Pro-1B",
        days: 9,
        nodes: 16,
        source: "Janus-Pro (arXiv 2501.17811): 9 days on 16 nodes of 8 A100-40GB",
    },
    Reported {
        family: "janus-pro",
        model: "Janus-Pro-7B",
        days: 14,
        nodes: 32,
        source: "Janus-Pro (arXiv 2501.17811): 14 days on 32 nodes of 8 A100-40GB",
    },
];

/// The figure for a recipe family and model size, if a paper gives one. The 1B and
/// 1.3B are one architecture: either name finds the family's small model.
pub fn find(family: &str, size: ModelSize) -> Option<Reported> {
    let model = match (family, size) {
        ("janus", ModelSize::B1 | ModelSize::B1_3) => "Janus-1.3B",
        ("janus-pro", ModelSize::B1 | ModelSize::B1_3) => "Janus-Pro-1B",
        ("janus-pro", ModelSize::B7) => "Janus-Pro-7B",
        _ => return None,
    };
    FIGURES.iter().copied().find(|r| r.model == model)
}

/// Steps a paper's run actually took where it stopped before its recipe's count:
/// `(recipe name, steps run)`. Janus-Pro planned 360k stage-2 steps and stopped at 270k.
pub const STEPS_RUN: [(&str, u64); 1] = [("janus-pro/stage2", 270_000)];

/// The steps the paper's run took for `recipe`, where they differ from the recipe's.
pub fn steps_run(recipe: &str) -> Option<u64> {
    STEPS_RUN
        .iter()
        .find(|(name, _)| *name == recipe)
        .map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_gpu_hours_are_the_papers_figures() {
        let hours = |family, size| find(family, size).unwrap().gpu_hours();
        assert_eq!(hours("janus", ModelSize::B1_3), 21_504);
        assert_eq!(hours("janus-pro", ModelSize::B1), 27_648);
        assert_eq!(hours("janus-pro", ModelSize::B7), 86_016);
        assert!(find("janus", ModelSize::B7).is_none());
        assert_eq!(steps_run("janus-pro/stage2"), Some(270_000));
        assert_eq!(steps_run("janus/stage2"), None);
    }
}
