//! The recurrent state the delta-net kernels (`conv.wgsl`, `delta_net.wgsl`) carry from one
//! submission to the next: per layer, the convolution's last inputs and the delta rule's
//! matrices, plus snapshots of both, since recurrent state cannot be cut back to a prefix the
//! way a KV cache is.

use hearth_core::model::cpu::SNAPSHOTS;
use hearth_core::model::DeltaNet;

use crate::kernels;
use crate::{Gpu, GpuError};

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
