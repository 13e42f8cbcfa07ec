//! The decode plan and the prompt plan as they are built side by side, the recurrence's
//! launches in each, and the activation buffers every layer shares.

use hearth_core::model::{Attention, DeltaNet, Mixer, ModelSpec};

use super::held::Held;
use crate::kernels::{self, Dispatch};
use crate::GpuError;

/// Tokens whose steps share one command buffer while a prompt runs.
pub const CHUNK: usize = 64;

/// The recurrence's launches in each plan.
#[derive(Default)]
pub struct Recurrence {
    pub decode: Vec<Dispatch>,
    /// Over a chunk, bound to its first step.
    pub prompt: Vec<Dispatch>,
}

impl Recurrence {
    /// `op` in both plans, also noted as part of the recurrence.
    pub(super) fn record(
        &mut self,
        plans: &mut Plans,
        op: impl Fn(usize) -> Result<Vec<Dispatch>, GpuError>,
    ) -> Result<(), GpuError> {
        let first = (plans.decode.len(), plans.prompt.len());
        plans.both(op)?;
        self.decode.extend(plans.decode[first.0..].iter().cloned());
        self.prompt.extend(plans.prompt[first.1..].iter().cloned());
        Ok(())
    }
}

/// The decode plan and the prompt plan, built side by side.
#[derive(Default)]
pub(super) struct Plans {
    pub(super) decode: Vec<Dispatch>,
    /// Over a whole chunk, bound to its first step.
    pub(super) prompt: Vec<Dispatch>,
}

impl Plans {
    /// An operation over `rows` tokens, lowered for a decode step (1) and a prompt chunk.
    pub(super) fn both(
        &mut self,
        op: impl Fn(usize) -> Result<Vec<Dispatch>, GpuError>,
    ) -> Result<(), GpuError> {
        self.decode.extend(op(1)?);
        self.prompt.extend(op(CHUNK)?);
        Ok(())
    }
}

/// Activation buffers shared by every layer, a row per token of a chunk (decode uses row 0).
pub(super) struct Acts {
    pub(super) x: wgpu::Buffer,
    pub(super) h: wgpu::Buffer,
    pub(super) q: wgpu::Buffer,
    /// Attention output, or the delta net's normed heads.
    pub(super) att: wgpu::Buffer,
    pub(super) ffn: wgpu::Buffer,
    /// The delta net's fused Q/K/V projection, or the short convolution's channels.
    pub(super) qkv: wgpu::Buffer,
    pub(super) z: wgpu::Buffer,
    pub(super) beta: wgpu::Buffer,
    pub(super) alpha: wgpu::Buffer,
    /// The chunked delta rule's records.
    pub(super) wy: wgpu::Buffer,
    /// The f16 KV path's f32 K and V rows of a chunk.
    pub(super) kv_rows: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

impl Acts {
    pub(super) fn new(b: &mut Held, s: &ModelSpec, f16_kv: bool) -> Self {
        let max = |f: &dyn Fn(&Attention) -> usize, g: &dyn Fn(&DeltaNet) -> usize| {
            let a = s.attention_layers().map(f).max().unwrap_or(0);
            a.max(s.delta_net_layers().map(g).max().unwrap_or(0))
        };
        let n_ff = s.layers.iter().map(|l| l.ffn.n_ff()).max().unwrap_or(0);
        let short_conv = s
            .layers
            .iter()
            .filter_map(|l| match &l.mixer {
                Mixer::ShortConv(c) => Some(c.channels),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let mut rows = |n: usize| b.scratch(CHUNK * n);
        Acts {
            x: rows(s.n_embd),
            h: rows(s.n_embd),
            q: rows(max(&Attention::q_dim, &|_| 0)),
            att: rows(max(&Attention::out_dim, &DeltaNet::value_dim)),
            ffn: rows(n_ff),
            qkv: rows(max(&|_| 0, &DeltaNet::conv_dim).max(short_conv)),
            z: rows(max(&|_| 0, &DeltaNet::value_dim)),
            beta: rows(max(&|_| 0, &|d| d.n_v_heads)),
            alpha: rows(max(&|_| 0, &|d| d.n_v_heads)),
            wy: rows(max(&|_| 0, &|d| kernels::delta_records_len(d, 1))),
            kv_rows: f16_kv.then(|| {
                (
                    rows(max(&Attention::k_dim, &|_| 0)),
                    rows(max(&Attention::v_dim, &|_| 0)),
                )
            }),
        }
    }
}
