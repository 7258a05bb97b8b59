//! Where the model runs: the `--device` choice (`cpu`, `cuda`, `cuda:N`, `auto`) turned
//! into a candle device, and the name a device goes by in records and benchmarks.
//!
//! The CPU runs this crate's kernels; a CUDA device runs the same model code through
//! candle's ops (the plain path beside every kernel, which the f32 parity tests check).
//! CUDA needs a build with the `cuda` feature (`scripts/gpu/build-cuda.sh`); a default
//! build names that when asked for a GPU instead of failing somewhere inside candle.

use std::fmt;
use std::str::FromStr;

use candle_core::{Device, DeviceLocation};

use crate::error::{Error, Result};

/// Whether this build has candle's CUDA backend.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// A device as the user names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    Cpu,
    /// NVIDIA GPU `N` (CUDA's ordinal).
    Cuda(usize),
    /// GPU 0 when the build has CUDA and a GPU answers, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "unknown device {s:?} (use cpu, cuda, cuda:N or auto)"
            ))
        };
        match s {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                n.parse().map(Self::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. A GPU asked for by name must be there (and the build must have
    /// CUDA); `auto` falls back to the CPU, saying why in the log.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) if !CUDA_BUILT => Err(Error::InvalidInput(format!(
                "--device cuda:{n}: this janus was built without CUDA; build it with \
                 `--features cuda` (scripts/gpu/build-cuda.sh) or use --device cpu"
            ))),
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                Error::InvalidInput(format!("--device cuda:{n}: no usable CUDA device {n}: {e}"))
            }),
            Self::Auto if !CUDA_BUILT => Ok(Device::Cpu),
            Self::Auto => match Device::new_cuda(0) {
                Ok(d) => Ok(d),
                Err(e) => {
                    tracing::info!("--device auto: no CUDA device ({e}); running on the CPU");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    /// [`Self::open`], with `auto` taken as the CPU when `cpu_only` (what the run needs
    /// runs on the CPU only: quantised weights, several training ranks).
    pub fn open_unless_cpu_only(self, cpu_only: bool) -> Result<Device> {
        match self {
            Self::Auto if cpu_only => Ok(Device::Cpu),
            choice => choice.open(),
        }
    }
}

/// A device's short name: `cpu` or `cuda:N`.
pub fn name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The GPU's model name (`NVIDIA H100 80GB HBM3`) for a CUDA device; `None` for the CPU
/// (whose model [`crate::machine`] reads) and where the driver does not say.
pub fn gpu_model(device: &Device) -> Option<String> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return d.cuda_stream().context().name().ok();
    }
    let _ = device;
    None
}

/// Free memory on a CUDA device, in bytes, as the driver reports it now; `None` for the
/// CPU (whose available memory [`crate::pipeline::available_memory_bytes`] reads) and
/// where the driver does not say.
pub fn gpu_free_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _)| free as u64);
    }
    let _ = device;
    None
}

/// Waits for the work queued on the device's stream, so that a timer read after it covers
/// that work (CUDA launches return before the kernels finish; the CPU queues nothing).
pub fn sync(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (s, want) in [
            ("cpu", DeviceChoice::Cpu),
            ("auto", DeviceChoice::Auto),
            ("cuda", DeviceChoice::Cuda(0)),
            ("gpu", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), want, "{s}");
        }
        assert_eq!(DeviceChoice::Cuda(3).to_string(), "cuda:3");
        for bad in ["", "CUDA", "cuda:", "cuda:x", "cuda:-1", "metal", "cpu:0"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("cpu, cuda, cuda:N or auto"), "{bad}: {e}");
        }
    }

    #[test]
    fn cpu_and_auto_open_without_a_gpu() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        // Whatever the build, `auto` for a run that needs the CPU is the CPU.
        assert!(DeviceChoice::Auto
            .open_unless_cpu_only(true)
            .unwrap()
            .is_cpu());
        assert!(DeviceChoice::Cpu
            .open_unless_cpu_only(false)
            .unwrap()
            .is_cpu());
        let auto = DeviceChoice::Auto.open().unwrap();
        if !CUDA_BUILT {
            assert!(auto.is_cpu());
        }
        assert_eq!(name(&Device::Cpu), "cpu");
        assert_eq!(gpu_model(&Device::Cpu), None);
        assert_eq!(gpu_free_memory(&Device::Cpu), None);
        sync(&Device::Cpu).unwrap();
    }

    #[test]
    fn a_gpu_by_name_is_refused_clearly_without_cuda() {
        if CUDA_BUILT {
            return;
        }
        let e = DeviceChoice::Cuda(1).open().unwrap_err().to_string();
        assert!(e.contains("built without CUDA"), "{e}");
        assert!(e.contains("--device cuda:1"), "{e}");
    }
}
