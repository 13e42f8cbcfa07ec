//! Buffers the kernels read and write: uniforms, zeroed scratch and f32 storage.

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::Gpu;

/// A uniform buffer holding `value`.
pub fn uniform<T: Pod>(gpu: &Gpu, value: &T) -> wgpu::Buffer {
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::bytes_of(value),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// A zeroed f32 storage buffer of at least `n` values, padded to whole 32-value units so the
/// matrix kernels may read their inputs as vec4s past the end.
pub fn scratch(gpu: &Gpu, n: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (n.div_ceil(32).max(1) * 32 * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// A storage buffer holding `values`, padded as [`scratch`].
pub fn storage_f32(gpu: &Gpu, values: &[f32]) -> wgpu::Buffer {
    let mut padded = values.to_vec();
    padded.resize(values.len().div_ceil(32).max(1) * 32, 0.0);
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&padded),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        })
}
