//! The delta-net kernels (`conv.wgsl`, `delta_net.wgsl`) and the recurrent state they carry
//! from one submission to the next: per layer, the convolution's last inputs and the
//! delta rule's matrices, plus snapshots of both, since recurrent state cannot be cut back to
//! a prefix the way a KV cache is.

use bytemuck::{Pod, Zeroable};
use hearth_core::model::cpu::SNAPSHOTS;
use hearth_core::model::DeltaNet;

use crate::kernels::{self, uniform, Dispatch, Kernel, Kernels, Slot};
use crate::{Gpu, GpuError};

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const CONV: &str = include_str!("../../../shaders/conv.wgsl");
const DELTA_NET: &str = include_str!("../../../shaders/delta_net.wgsl");

/// The widest value head the delta kernel takes: one thread per column, one workgroup per head.
pub const MAX_HEAD_V_DIM: usize = 256;

/// Uniform block of conv.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    pub channels: u32,
    pub kernel: u32,
    pub _pad: [u32; 2],
}

/// Uniform block of delta_net.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DeltaParams {
    pub n_k: u32,
    pub n_v: u32,
    pub conv_dim: u32,
    pub key_dim: u32,
    pub value_dim: u32,
    pub eps: f32,
    pub q_scale: f32,
    pub _pad: u32,
}

/// The two pipelines of one delta-net shape.
pub struct DeltaKernels {
    conv: Kernel,
    delta: Kernel,
}

impl DeltaKernels {
    pub fn new(gpu: &Gpu, kernels: &Kernels, d: &DeltaNet) -> Result<Self, GpuError> {
        if d.head_v_dim > MAX_HEAD_V_DIM {
            return Err(GpuError::Unsupported(format!(
                "delta-net value heads of {} dimensions (the GPU engine takes up to {MAX_HEAD_V_DIM})",
                d.head_v_dim
            )));
        }
        use Slot::*;
        let conv = Kernel::new(
            gpu,
            "conv",
            &format!("{COMMON}{CONV}"),
            &kernels.step_layout,
            &[Uniform, Write, Read, Write],
        );
        let sizes = format!(
            "const DK: u32 = {}u;\nconst DV: u32 = {}u;\n",
            d.head_k_dim, d.head_v_dim
        );
        let delta = Kernel::new(
            gpu,
            &format!("delta_net {}x{}", d.head_k_dim, d.head_v_dim),
            &format!("{sizes}{COMMON}{DELTA_NET}"),
            &kernels.step_layout,
            &[Uniform, Read, Read, Read, Read, Read, Write, Write],
        );
        Ok(DeltaKernels { conv, delta })
    }

    /// The convolution and SiLU, in place on the `qkv` rows of a step's chunk.
    pub fn conv_launch(
        &self,
        gpu: &Gpu,
        d: &DeltaNet,
        [qkv, weight, state]: [&wgpu::Buffer; 3],
    ) -> Dispatch {
        let u = uniform(
            gpu,
            &ConvParams {
                channels: d.conv_dim() as u32,
                kernel: d.conv_kernel as u32,
                _pad: [0; 2],
            },
        );
        Dispatch {
            pipeline: self.conv.pipeline.clone(),
            bind: self.conv.bind(gpu, &[&u, qkv, weight, state]),
            groups: [d.conv_dim().div_ceil(64) as u32, 1, 1],
        }
    }

    /// The delta rule and gated norm of every value head, over the rows of a step's chunk.
    /// `params` holds `[dt | a | norm]`.
    pub fn delta_launch(
        &self,
        gpu: &Gpu,
        d: &DeltaNet,
        eps: f32,
        [qkv, z, beta, alpha, params, state, out]: [&wgpu::Buffer; 7],
    ) -> Dispatch {
        let u = uniform(
            gpu,
            &DeltaParams {
                n_k: d.n_k_heads as u32,
                n_v: d.n_v_heads as u32,
                conv_dim: d.conv_dim() as u32,
                key_dim: d.key_dim() as u32,
                value_dim: d.value_dim() as u32,
                eps,
                q_scale: 1.0 / (d.head_k_dim as f32).sqrt(),
                _pad: 0,
            },
        );
        Dispatch {
            pipeline: self.delta.pipeline.clone(),
            bind: self
                .delta
                .bind(gpu, &[&u, qkv, z, beta, alpha, params, state, out]),
            groups: [d.n_v_heads as u32, 1, 1],
        }
    }
}

/// The recurrent state of every delta-net layer, and up to [`SNAPSHOTS`] copies of it.
pub struct RecurrentState {
    /// (conv, delta) buffers per delta-net layer.
    pub layers: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    /// Positions and buffers of the snapshots, oldest first.
    snapshots: Vec<(usize, Vec<(wgpu::Buffer, wgpu::Buffer)>)>,
    /// Snapshot buffers not holding one.
    free: Vec<Vec<(wgpu::Buffer, wgpu::Buffer)>>,
}

fn state_buffer(gpu: &Gpu, floats: usize) -> Result<wgpu::Buffer, GpuError> {
    let bytes = (floats * 4) as u64;
    if bytes > gpu.max_binding {
        return Err(GpuError::TooLarge {
            what: "the recurrent state of one layer".into(),
            bytes,
            limit: gpu.max_binding,
        });
    }
    Ok(kernels::scratch(gpu, floats))
}

impl RecurrentState {
    /// Zeroed state, and room for its snapshots, for `layers`.
    pub fn new(gpu: &Gpu, layers: &[&DeltaNet]) -> Result<Self, GpuError> {
        let set = || -> Result<Vec<_>, GpuError> {
            layers
                .iter()
                .map(|d| {
                    Ok((
                        state_buffer(gpu, d.conv_state_len())?,
                        state_buffer(gpu, d.delta_state_len())?,
                    ))
                })
                .collect()
        };
        Ok(RecurrentState {
            layers: set()?,
            snapshots: Vec::new(),
            free: (0..SNAPSHOTS).map(|_| set()).collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Bytes held, snapshots included.
    pub fn bytes(&self) -> u64 {
        let set = |s: &[(wgpu::Buffer, wgpu::Buffer)]| -> u64 {
            s.iter().map(|(c, d)| c.size() + d.size()).sum()
        };
        set(&self.layers) * (1 + SNAPSHOTS as u64)
    }

    fn copy(
        encoder: &mut wgpu::CommandEncoder,
        from: &[(wgpu::Buffer, wgpu::Buffer)],
        to: &[(wgpu::Buffer, wgpu::Buffer)],
    ) {
        for ((fc, fd), (tc, td)) in from.iter().zip(to) {
            encoder.copy_buffer_to_buffer(fc, 0, tc, 0, fc.size());
            encoder.copy_buffer_to_buffer(fd, 0, td, 0, fd.size());
        }
    }

    /// Queues a copy of the state as the snapshot at `len`, replacing the oldest.
    pub fn checkpoint(&mut self, gpu: &Gpu, len: usize) {
        if self.is_empty() || self.snapshots.iter().any(|(at, _)| *at == len) {
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.snapshots.remove(0).1,
        };
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        Self::copy(&mut encoder, &self.layers, &slot);
        gpu.queue.submit([encoder.finish()]);
        self.snapshots.push((len, slot));
    }

    /// Restores the latest snapshot at or before `len` and returns its position, or zeroes the
    /// state and returns 0 when there is none. Later snapshots are dropped.
    pub fn restore(&mut self, gpu: &Gpu, len: usize) -> usize {
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        let best = self
            .snapshots
            .iter()
            .filter(|(at, _)| *at <= len)
            .max_by_key(|(at, _)| *at);
        let kept = match best {
            Some((at, slot)) => {
                Self::copy(&mut encoder, slot, &self.layers);
                *at
            }
            None => {
                for (c, d) in &self.layers {
                    encoder.clear_buffer(c, 0, None);
                    encoder.clear_buffer(d, 0, None);
                }
                0
            }
        };
        gpu.queue.submit([encoder.finish()]);
        let (keep, drop): (Vec<_>, Vec<_>) =
            self.snapshots.drain(..).partition(|(at, _)| *at <= kept);
        self.snapshots = keep;
        self.free.extend(drop.into_iter().map(|(_, slot)| slot));
        kept
    }
}
