//! The yardstick for bandwidth figures: a plain copy kernel, run on the same device as the
//! model so that a model's achieved bytes/s can be read as a fraction of what the device
//! actually streams.

use crate::kernels::{grid, COPY};
use crate::Gpu;

pub struct CopyKernel {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: [u32; 3],
    size: u64,
}

impl CopyKernel {
    /// A copy of `bytes` (rounded down to 16-byte vectors, capped by the binding limit).
    pub fn new(gpu: &Gpu, bytes: u64) -> Self {
        let size = (bytes.min(gpu.max_binding) / 16).max(1) * 16;
        let device = &gpu.device;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("copy"),
            source: wgpu::ShaderSource::Wgsl(COPY.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("copy"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let buffer = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let (src, dst) = (buffer("copy src"), buffer("copy dst"));
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("copy"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: src.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: dst.as_entire_binding(),
                },
            ],
        });
        let groups = grid((size / 16).div_ceil(256) as u32);
        CopyKernel {
            pipeline,
            bind,
            groups,
            size,
        }
    }

    /// Bytes read plus bytes written by one run.
    pub fn bytes_moved(&self) -> u64 {
        2 * self.size
    }

    /// Submits `runs` copies in one command buffer.
    pub fn submit(&self, gpu: &Gpu, runs: usize) {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind, &[]);
            for _ in 0..runs {
                let [x, y, z] = self.groups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        gpu.queue.submit([encoder.finish()]);
    }
}
