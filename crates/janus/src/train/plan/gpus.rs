//! The GPU table: peak dense bf16 throughput and a default price per GPU-hour, each with
//! its source. The figures live in `gpus.json` beside this file, built into the binary.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const TABLE: &str = include_str!("gpus.json");

/// One GPU of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Command-line name (`a100-40gb`).
    pub name: String,
    /// Full name.
    pub label: String,
    /// Peak dense bf16 tensor throughput in TFLOP/s (no sparsity).
    pub peak_bf16_tflops: f64,
    /// Where the peak comes from.
    pub peak_source: String,
    /// Default price in USD per GPU-hour.
    pub price_per_hour: f64,
    /// Where the price comes from, and when.
    pub price_source: String,
}

impl Gpu {
    /// Peak dense bf16 throughput in FLOP/s.
    pub fn peak_flops(&self) -> f64 {
        self.peak_bf16_tflops * 1e12
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[allow(dead_code)] // documentation inside the data file
    note: String,
    gpus: Vec<Gpu>,
}

/// Every GPU of the table, in table order.
pub fn all() -> Result<Vec<Gpu>> {
    let t: Table = serde_json::from_str(TABLE)
        .map_err(|e| Error::Config(format!("built-in GPU table: {e}")))?;
    Ok(t.gpus)
}

/// The GPU called `name` (case-insensitive); the error lists the known names.
pub fn find(name: &str) -> Result<Gpu> {
    let gpus = all()?;
    let wanted = name.trim().to_ascii_lowercase();
    if let Some(g) = gpus.iter().find(|g| g.name == wanted) {
        return Ok(g.clone());
    }
    let names: Vec<&str> = gpus.iter().map(|g| g.name.as_str()).collect();
    Err(Error::InvalidInput(format!(
        "unknown GPU {name:?}; the table knows {} (or give --peak-tflops and --price)",
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_every_figure_has_a_source() {
        let gpus = all().unwrap();
        for name in ["a100-40gb", "a100-80gb", "h100", "h200"] {
            assert!(gpus.iter().any(|g| g.name == name), "{name}");
        }
        for g in &gpus {
            assert!(
                g.peak_bf16_tflops > 0.0 && g.price_per_hour > 0.0,
                "{}",
                g.name
            );
            assert!(g.peak_source.contains("https://"), "{}", g.name);
            assert!(g.price_source.contains("https://"), "{}", g.name);
        }
        let a100 = find("A100-40GB").unwrap();
        assert_eq!((a100.peak_bf16_tflops, a100.price_per_hour), (312.0, 4.10));
        let e = find("tpu-v5").unwrap_err().to_string();
        assert!(e.contains("\"tpu-v5\"") && e.contains("h200"), "{e}");
    }
}
