//! Compiled pipelines, made once per shader variant and cached, and the recorded launches and
//! per-token step blocks the plans are made of. Nothing here runs per token.

use std::cell::RefCell;
use std::collections::HashMap;

use super::buffers::storage_f32;
use super::shaders::{Features, Shader, Slot};
use super::uniforms::Step;
use crate::{Gpu, GpuError};

/// Bytes between the per-token [`Step`] blocks of one submission (WebGPU's largest
/// `minUniformBufferOffsetAlignment`).
pub const STEP_STRIDE: u64 = 256;

fn layout_entries(slots: &[Slot]) -> Vec<wgpu::BindGroupLayoutEntry> {
    slots
        .iter()
        .enumerate()
        .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match slot {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::Write => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect()
}

/// A pipeline and the layout of its group 1.
#[derive(Clone)]
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Kernel {
    fn new(
        gpu: &Gpu,
        label: &str,
        source: &str,
        step: &wgpu::BindGroupLayout,
        slots: &[Slot],
    ) -> Self {
        let device = &gpu.device;
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &layout_entries(slots),
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(step), Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        Kernel { pipeline, layout }
    }

    /// A launch of this kernel over `groups` workgroups, with `buffers` bound in order.
    pub fn dispatch(&self, gpu: &Gpu, buffers: &[&wgpu::Buffer], groups: [u32; 3]) -> Dispatch {
        Dispatch {
            pipeline: self.pipeline.clone(),
            bind: self.bind(gpu, buffers),
            groups,
        }
    }

    /// A bind group of `buffers`, in binding order, each bound whole.
    pub fn bind(&self, gpu: &Gpu, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<_> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// One recorded kernel launch.
#[derive(Clone)]
pub struct Dispatch {
    pub pipeline: wgpu::ComputePipeline,
    pub bind: wgpu::BindGroup,
    pub groups: [u32; 3],
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(1, &self.bind, &[]);
        let [x, y, z] = self.groups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// `n` workgroups as an (x, y) grid within WebGPU's 65535 per dimension; kernels that may need
/// more rebuild the linear index from `num_workgroups`.
pub fn grid(n: u32) -> [u32; 3] {
    let x = n.clamp(1, 65535);
    [x, n.div_ceil(x).max(1), 1]
}

/// The pipelines of one device, compiled as plans ask for them.
pub struct Kernels {
    /// Group 0: the per-token [`Step`], at a dynamic offset.
    pub step_layout: wgpu::BindGroupLayout,
    features: Features,
    f16_kv: bool,
    cache: RefCell<HashMap<Shader, Kernel>>,
    /// Bound where a kernel's optional input (bias, norm weight, rope table) is absent: two
    /// floats, the least any of those bindings holds.
    pub(super) dummy: wgpu::Buffer,
}

impl Kernels {
    pub fn new(gpu: &Gpu) -> Self {
        let step_layout = gpu
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("step"),
                entries: &[wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<Step>() as u64),
                    },
                    count: None,
                }],
            });
        Kernels {
            step_layout,
            features: Features {
                subgroup: gpu.paths.subgroup_size,
                subgroup_directive: cfg!(target_arch = "wasm32"),
            },
            f16_kv: gpu.paths.f16_kv,
            cache: RefCell::new(HashMap::new()),
            dummy: storage_f32(gpu, &[0.0; 2]),
        }
    }

    /// Whether the KV cache holds f16 values on this device.
    pub fn f16_kv(&self) -> bool {
        self.f16_kv
    }

    /// The pipeline of `shader`, compiled on first use.
    pub fn get(&self, gpu: &Gpu, shader: Shader) -> Result<Kernel, GpuError> {
        if let Some(k) = self.cache.borrow().get(&shader) {
            return Ok(k.clone());
        }
        let k = Kernel::new(
            gpu,
            &shader.label(),
            &shader.source(&self.features)?,
            &self.step_layout,
            shader.slots(),
        );
        self.cache.borrow_mut().insert(shader, k.clone());
        Ok(k)
    }
}

/// Room for the [`Step`] blocks of up to `capacity` tokens, and their bind group (group 0).
pub struct Steps {
    buffer: wgpu::Buffer,
    pub bind: wgpu::BindGroup,
    pub capacity: usize,
}

impl Steps {
    pub fn new(gpu: &Gpu, kernels: &Kernels, capacity: usize) -> Self {
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("steps"),
            size: STEP_STRIDE * capacity as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("steps"),
            layout: &kernels.step_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(std::mem::size_of::<Step>() as u64),
                }),
            }],
        });
        Steps {
            buffer,
            bind,
            capacity,
        }
    }

    /// Queues `steps` (at most `capacity`) for the next submission.
    pub fn write(&self, gpu: &Gpu, steps: &[Step]) {
        assert!(steps.len() <= self.capacity, "more steps than room");
        let mut bytes = vec![0u8; steps.len() * STEP_STRIDE as usize];
        for (chunk, step) in bytes.chunks_exact_mut(STEP_STRIDE as usize).zip(steps) {
            chunk[..std::mem::size_of::<Step>()].copy_from_slice(bytemuck::bytes_of(step));
        }
        gpu.queue.write_buffer(&self.buffer, 0, &bytes);
    }

    /// Binds step `i` as group 0.
    pub fn set(&self, pass: &mut wgpu::ComputePass<'_>, i: usize) {
        pass.set_bind_group(0, &self.bind, &[(i as u64 * STEP_STRIDE) as u32]);
    }

    pub fn bytes(&self) -> u64 {
        self.buffer.size()
    }
}

/// Records `dispatches` for step 0 of `steps` and submits them.
pub fn submit(gpu: &Gpu, steps: &Steps, dispatches: &[Dispatch]) {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        steps.set(&mut pass, 0);
        for d in dispatches {
            d.record(&mut pass);
        }
    }
    gpu.queue.submit([encoder.finish()]);
}
