//! The device a test binary runs the model on: the CPU, or the one `JANUS_TEST_DEVICE`
//! names (`cuda`, `cuda:N`: a `--features cuda` build on a GPU machine, as
//! `scripts/gpu/device-check.sh` runs the parity suites), with the same tolerances.

use std::sync::OnceLock;

use candle_core::Device;
use janus::device::DeviceChoice;

/// One instance for the whole binary: candle refuses to mix tensors of two CUDA devices
/// opened separately. A named device that cannot be opened fails the test.
pub fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| match std::env::var("JANUS_TEST_DEVICE") {
        Ok(name) => name
            .parse::<DeviceChoice>()
            .and_then(DeviceChoice::open)
            .unwrap_or_else(|e| panic!("JANUS_TEST_DEVICE={name}: {e}")),
        Err(_) => Device::Cpu,
    })
}
