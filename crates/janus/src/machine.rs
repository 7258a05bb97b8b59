//! What a benchmark says about the machine it ran on: the CPU's name, the kernel level in
//! use and the memory's measured read bandwidth (the floor of every stage that streams
//! the weights: decoding and image steps).

use rayon::prelude::*;
use serde::Serialize;

/// The machine facts `janus bench` prints beside its timings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MachineInfo {
    /// The CPU's model name (`/proc/cpuinfo`), or the architecture where it is unknown.
    pub cpu: String,
    /// The kernel level in use ([`crate::kernels::isa`]), as `JANUS_KERNELS` names it.
    pub kernels: &'static str,
    /// Threads of the compute pool.
    pub threads: usize,
    /// Measured read bandwidth of main memory with all the pool's threads, GB/s (1e9).
    pub read_gb_s: f64,
}

impl MachineInfo {
    /// Reads the CPU's name and kernel level and measures the bandwidth (about half a
    /// second).
    pub fn measure() -> Self {
        MachineInfo {
            cpu: cpu_model(),
            kernels: crate::kernels::isa().name(),
            threads: rayon::current_num_threads(),
            read_gb_s: read_bandwidth_gb_s(BANDWIDTH_BYTES, 3),
        }
    }
}

/// Bytes read per pass: far beyond any last-level cache.
const BANDWIDTH_BYTES: usize = 256 << 20;

/// The CPU's model name: x86's `model name` line, else ARM's `Hardware` / `CPU part`, else
/// the architecture.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_model_from(&text).unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn cpu_model_from(cpuinfo: &str) -> Option<String> {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name && !value.trim().is_empty()).then(|| value.trim().to_string())
        })
    };
    field("model name")
        .or_else(|| field("Hardware"))
        .or_else(|| field("CPU part").map(|part| format!("ARM CPU part {part}")))
}

/// The best of `passes` parallel reads of a `bytes`-long buffer, in GB/s. The buffer is
/// written first so that the timed passes read resident pages, not fresh zero pages.
pub fn read_bandwidth_gb_s(bytes: usize, passes: usize) -> f64 {
    let words = (bytes / 8).max(1 << 16);
    let buffer: Vec<u64> = (0..words as u64).into_par_iter().collect();
    let chunk = (words / (4 * rayon::current_num_threads().max(1))).max(1 << 12);
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let t0 = std::time::Instant::now();
        let sum = buffer
            .par_chunks(chunk)
            .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
            .reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(sum);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (words * 8) as f64 / best.max(1e-9) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_names_from_x86_and_arm_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model_from(x86).as_deref(), Some("AMD EPYC 7B13"));
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd40\n";
        assert_eq!(cpu_model_from(arm).as_deref(), Some("ARM CPU part 0xd40"));
        assert_eq!(cpu_model_from("model name\t:\n"), None);
        assert!(!cpu_model().is_empty());
    }

    #[test]
    fn bandwidth_is_a_plausible_rate() {
        // 16 MiB: a few milliseconds. Between 100 MB/s and 10 TB/s on anything that runs this.
        let gb_s = read_bandwidth_gb_s(16 << 20, 2);
        assert!(
            gb_s.is_finite() && (0.1..10_000.0).contains(&gb_s),
            "{gb_s}"
        );
    }
}
