//! Shared by the integration tests: the device, or a skip where there is none.

#![allow(dead_code)]

use hearth_gpu::{Gpu, GpuOptions};

/// The default adapter's device, or `None` (with a message) where there is none: the tests
/// then pass vacuously rather than fail on machines without WebGPU, unless
/// `HEARTH_REQUIRE_GPU` is set (as CI sets it), where a missing adapter fails the test.
pub fn gpu(options: &GpuOptions) -> Option<Gpu> {
    match pollster::block_on(Gpu::new(options)) {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.describe());
            Some(gpu)
        }
        Err(e) if std::env::var_os("HEARTH_REQUIRE_GPU").is_some() => {
            panic!("HEARTH_REQUIRE_GPU is set but there is no adapter: {e}")
        }
        Err(e) => {
            eprintln!("skipped: {e} (install mesa-vulkan-drivers for lavapipe)");
            None
        }
    }
}
