//! Shared by the integration tests: the device, or a skip where there is none.

#![allow(dead_code)]

use hearth_gpu::{Gpu, GpuOptions};

/// The default adapter's device, or `None` (with a message) where there is none: the tests
/// then pass vacuously rather than fail on machines without WebGPU.
pub fn gpu(options: &GpuOptions) -> Option<Gpu> {
    match pollster::block_on(Gpu::new(options)) {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.describe());
            Some(gpu)
        }
        Err(e) => {
            eprintln!("skipped: {e} (install mesa-vulkan-drivers for lavapipe)");
            None
        }
    }
}
