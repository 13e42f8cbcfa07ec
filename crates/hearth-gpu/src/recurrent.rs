//! The recurrent state the delta-net and short-convolution kernels (`conv.wgsl`,
//! `delta_net.wgsl`) carry from one submission to the next: per layer, the convolution's last
//! inputs and (delta net) the delta rule's matrices, plus snapshots of them, since recurrent
//! state cannot be cut back to a prefix the way a KV cache is.

use hearth_core::model::cpu::SNAPSHOTS;

use crate::kernels;
use crate::{Gpu, GpuError};

/// The buffers of each recurrent layer's state parts (convolution, then delta rule).
type Set = Vec<Vec<wgpu::Buffer>>;

/// The recurrent state of every recurrent layer, and up to [`SNAPSHOTS`] copies of it.
pub struct RecurrentState {
    /// The parts of each recurrent layer, in layer order.
    pub layers: Set,
    /// Positions and buffers of the snapshots, oldest first.
    snapshots: Vec<(usize, Set)>,
    /// Snapshot buffers not holding one.
    free: Vec<Set>,
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
    /// Zeroed state, and room for its snapshots, for layers whose parts hold the given
    /// numbers of floats.
    pub fn new(gpu: &Gpu, layers: &[Vec<usize>]) -> Result<Self, GpuError> {
        let set = || -> Result<Set, GpuError> {
            layers
                .iter()
                .map(|parts| parts.iter().map(|&n| state_buffer(gpu, n)).collect())
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
        let held: u64 = self.layers.iter().flatten().map(wgpu::Buffer::size).sum();
        held * (1 + SNAPSHOTS as u64)
    }

    fn copy(encoder: &mut wgpu::CommandEncoder, from: &Set, to: &Set) {
        for (f, t) in from.iter().flatten().zip(to.iter().flatten()) {
            encoder.copy_buffer_to_buffer(f, 0, t, 0, f.size());
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
                for part in self.layers.iter().flatten() {
                    encoder.clear_buffer(part, 0, None);
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
