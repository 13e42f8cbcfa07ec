//! Recording launches: each function binds a kernel to its buffers and uniform block and
//! sizes its grid, once, when a plan is built.

use hearth_core::model::DeltaNet;

use super::buffers::uniform;
use super::pipelines::{grid, Dispatch, Kernel, Kernels};
use super::shaders::{
    delta_sub_chunk, matvec_rows, super_block_path, DeltaPart, Shader, MATMUL_TILE,
};
use super::uniforms::{
    ArgmaxParams, ConvParams, DeltaParams, KvStoreParams, Mat, NormParams, Output, RopeParams,
    TopParams,
};
use crate::weights::{GpuMatrix, Part};
use crate::{Gpu, GpuError};

/// Pairs the top kernel keeps (`TOP` in top.wgsl) and the chunk each workgroup sorts (`CHUNK`).
pub const TOP_K: usize = 64;
const TOP_CHUNK: usize = 1024;

/// The widest value head the delta kernel takes: one thread per column, one workgroup per head.
pub const MAX_HEAD_V_DIM: usize = 256;

/// Threads that share one row of a matrix kernel (`LANES` in matvec.wgsl and matmul.wgsl), at
/// most `max` (a power of two): on the unit path as many as the row has 32-value units,
/// rounded to 1, 4 or 16, so narrow matrices keep every thread busy; on a matvec's super-block
/// path (`super_blocks`) as many as it has super-blocks, rounded down to a power of two.
pub fn matrix_lanes(cols: usize, super_blocks: bool, max: u32) -> u32 {
    let lanes = if super_blocks {
        1 << (cols / 256).clamp(1, 16).ilog2()
    } else {
        match cols.div_ceil(32) {
            0..=2 => 1,
            3..=8 => 4,
            _ => 16,
        }
    };
    lanes.min(max)
}

/// Value dimensions each of the attention kernel's 64 threads accumulates for a head of
/// `head_dim_v` (`VPT` in attention.wgsl): the kernel is compiled per width, so any fits.
fn attention_vpt(head_dim_v: usize) -> u32 {
    head_dim_v.div_ceil(64).max(1) as u32
}

/// The uniform block for a matrix kernel over `part` of `m`.
fn mat(
    m: &GpuMatrix,
    part: &Part,
    mode: Output,
    has_bias: bool,
    (pos_stride, pos_ring): (usize, usize),
) -> Mat {
    Mat {
        rows: part.rows as u32,
        cols: m.cols as u32,
        row_words: part.row_words as u32,
        scale_base: part.scale_base as u32,
        row_offset: part.row_offset as u32,
        mode: mode as u32,
        has_bias: has_bias as u32,
        pos_stride: pos_stride as u32,
        y_stride: m.rows as u32,
        pos_ring: pos_ring as u32,
        out_scale: 1.0,
        _pad: 0,
    }
}

impl Kernels {
    /// The pipeline of a shader whose source has no block type, so always composes.
    fn fixed(&self, gpu: &Gpu, shader: Shader) -> Kernel {
        self.get(gpu, shader)
            .expect("only block types can fail to compose")
    }

    /// A launch of `shader` over `groups` workgroups, its uniform block `params` bound first
    /// and `buffers` after it.
    fn launch<T: bytemuck::Pod>(
        &self,
        gpu: &Gpu,
        shader: Shader,
        params: &T,
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) -> Dispatch {
        let u = uniform(gpu, params);
        let mut bind = vec![&u];
        bind.extend_from_slice(buffers);
        self.fixed(gpu, shader).dispatch(gpu, &bind, groups)
    }

    /// `y (op)= m x + bias` for `tokens` rows of `x`, one launch per part of `m`: matvec for a
    /// decode step (one row; with a `pos_stride`, `y` starts at `step.pos * pos_stride`), matmul
    /// for the `step.count` rows of a prompt chunk of up to `tokens` (with a `pos_stride`, row t
    /// goes to the KV cache at `(step.pos + t) * pos_stride`).
    #[allow(clippy::too_many_arguments)]
    pub fn product_launches(
        &self,
        gpu: &Gpu,
        m: &GpuMatrix,
        tokens: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        mode: Output,
        cache: (usize, usize),
    ) -> Result<Vec<Dispatch>, GpuError> {
        // A decode step's one row is one tile.
        let tiles = tokens.div_ceil(MATMUL_TILE as usize).max(1) as u32;
        let (ty, paths) = (m.ty, &gpu.paths);
        let super_blocks = tokens == 1 && paths.super_blocks && super_block_path(ty);
        let lanes = matrix_lanes(m.cols, super_blocks, paths.row_lanes);
        let (shader, rows) = if tokens > 1 {
            let rows = paths.prompt_rows_per_thread;
            let wide_x = m.cols % 4 == 0;
            let shader = Shader::Matmul {
                ty,
                lanes,
                rows,
                wide_x,
            };
            (shader, rows)
        } else {
            let rows = paths.rows_per_thread;
            let shader = Shader::Matvec {
                ty,
                lanes,
                rows,
                super_blocks,
            };
            (shader, rows)
        };
        let kernel = self.get(gpu, shader)?;
        Ok(m.parts
            .iter()
            .map(|p| {
                let u = uniform(gpu, &mat(m, p, mode, bias.is_some(), cache));
                let [gx, gy, _] = grid((p.rows as u32).div_ceil(matvec_rows(lanes, rows)));
                kernel.dispatch(
                    gpu,
                    &[&p.buffer, &u, x, y, bias.unwrap_or(&self.dummy)],
                    [gx, gy, tiles],
                )
            })
            .collect())
    }

    /// Row `step.token` of `table`, times `scale`, into `out` (`Output::Store`), or row
    /// `step.pos` added to it (`Output::Add`: learned positions): one launch per part, as
    /// (first row, rows, launch); the caller picks the part holding the row.
    pub fn embed_launches(
        &self,
        gpu: &Gpu,
        table: &GpuMatrix,
        scale: f32,
        out: &wgpu::Buffer,
        mode: Output,
    ) -> Result<Vec<(usize, usize, Dispatch)>, GpuError> {
        let kernel = self.get(gpu, Shader::Embed { ty: table.ty })?;
        Ok(table
            .parts
            .iter()
            .map(|p| {
                let params = Mat {
                    out_scale: scale,
                    ..mat(table, p, mode, false, (0, 0))
                };
                let u = uniform(gpu, &params);
                let d = kernel.dispatch(
                    gpu,
                    &[&p.buffer, &u, out],
                    grid((table.cols as u32).div_ceil(32).div_ceil(64)),
                );
                (p.row_offset, p.rows, d)
            })
            .collect())
    }

    /// RMS norm of `rows` rows of `n` values.
    pub fn rms_norm_launch(
        &self,
        gpu: &Gpu,
        params: NormParams,
        rows: usize,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let groups = [rows as u32, 1, 1];
        self.launch(gpu, Shader::RmsNorm, &params, &[x, weight, out], groups)
    }

    /// Per-head norm (when `norm` is given) and rope over `heads` heads of `data` for each of
    /// `tokens` tokens (those of the step it is bound to); with no `table` (and `rope_dim` 0)
    /// the norm alone.
    pub fn rope_launch(
        &self,
        gpu: &Gpu,
        params: RopeParams,
        (heads, tokens): (usize, usize),
        data: &wgpu::Buffer,
        norm: Option<&wgpu::Buffer>,
        table: Option<&wgpu::Buffer>,
    ) -> Dispatch {
        let params = RopeParams {
            has_norm: norm.is_some() as u32,
            ..params
        };
        let bind = [
            data,
            norm.unwrap_or(&self.dummy),
            table.unwrap_or(&self.dummy),
        ];
        self.launch(
            gpu,
            Shader::Rope,
            &params,
            &bind,
            [heads as u32, tokens as u32, 1],
        )
    }

    /// Causal attention of the query heads of `tokens` rows of `q` over the caches (one row for
    /// a decode step, a chunk's for a prompt, bound to its first step).
    pub fn attention_launch(
        &self,
        gpu: &Gpu,
        (params, head_dim, head_dim_v): (&wgpu::Buffer, usize, usize),
        n_head: usize,
        tokens: usize,
        [q, kc, vc, out]: [&wgpu::Buffer; 4],
    ) -> Dispatch {
        let shader = Shader::Attention {
            f16_kv: self.f16_kv(),
            vpt: attention_vpt(head_dim_v),
            wide_k: head_dim % 4 == 0,
        };
        let kernel = self.fixed(gpu, shader);
        kernel.dispatch(
            gpu,
            &[params, q, kc, vc, out],
            [n_head as u32, tokens as u32, 1],
        )
    }

    /// Rounds the K and V rows of `tokens` tokens into the f16 caches at their positions.
    /// Panics where the f16 KV path is off.
    pub fn kv_store_launch(
        &self,
        gpu: &Gpu,
        [k_dim, v_dim, ring]: [usize; 3],
        tokens: usize,
        [k_rows, v_rows, kc, vc]: [&wgpu::Buffer; 4],
    ) -> Dispatch {
        let params = KvStoreParams {
            k_dim: k_dim as u32,
            v_dim: v_dim as u32,
            ring: ring as u32,
            _pad: 0,
        };
        let groups = [k_dim.max(v_dim).div_ceil(64) as u32, tokens as u32, 1];
        self.launch(
            gpu,
            Shader::KvStore,
            &params,
            &[k_rows, v_rows, kc, vc],
            groups,
        )
    }

    /// The index of the largest of `n` values into `result[0]`; with `masked`, of those whose
    /// bit in `mask` is set (see [`token_mask`]).
    pub fn argmax_launch(
        &self,
        gpu: &Gpu,
        n: usize,
        values: &wgpu::Buffer,
        result: &wgpu::Buffer,
        (mask, masked): (&wgpu::Buffer, bool),
    ) -> Dispatch {
        let params = ArgmaxParams {
            n: n as u32,
            masked: masked as u32,
            _pad: [0; 2],
        };
        self.launch(
            gpu,
            Shader::Argmax,
            &params,
            &[values, result, mask],
            [1, 1, 1],
        )
    }

    /// The causal convolution of `channels` channels with `kernel` taps, and SiLU if `silu`,
    /// in place on the `x` rows of a step's chunk.
    pub fn conv_launch(
        &self,
        gpu: &Gpu,
        (channels, kernel, silu): (usize, usize, bool),
        [x, weight, state]: [&wgpu::Buffer; 3],
    ) -> Dispatch {
        let params = ConvParams {
            channels: channels as u32,
            kernel: kernel as u32,
            silu: silu as u32,
            _pad: 0,
        };
        let groups = [channels.div_ceil(64) as u32, 1, 1];
        self.launch(gpu, Shader::Conv, &params, &[x, weight, state], groups)
    }

    /// The delta rule and gated norm of every value head over the `step.count` rows of a step
    /// bound to up to `rows` rows: token by token for a decode step (one row), else in the
    /// chunked form. `buffers` are `[qkv, z, beta, alpha, params, state, out, wy]`: `params`
    /// holds `[dt | a | norm]`, `wy` the chunked form's records ([`delta_records_len`] floats).
    pub fn delta_launches(
        &self,
        gpu: &Gpu,
        d: &DeltaNet,
        eps: f32,
        rows: usize,
        buffers: [&wgpu::Buffer; 8],
    ) -> Result<Vec<Dispatch>, GpuError> {
        if d.head_v_dim > MAX_HEAD_V_DIM {
            return Err(GpuError::Unsupported(format!(
                "delta-net value heads of {} dimensions (the GPU engine takes up to {MAX_HEAD_V_DIM})",
                d.head_v_dim
            )));
        }
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
        let mut bind = vec![&u];
        bind.extend(buffers);
        let heads = d.n_v_heads as u32;
        let launch = |part, groups| {
            let shader = Shader::DeltaNet {
                dk: d.head_k_dim as u32,
                dv: d.head_v_dim as u32,
                part,
            };
            self.fixed(gpu, shader).dispatch(gpu, &bind, groups)
        };
        Ok(if rows == 1 {
            vec![launch(DeltaPart::Recurrent, [heads, 1, 1])]
        } else {
            let subs = rows.div_ceil(delta_sub_chunk(d.head_k_dim)) as u32;
            vec![
                launch(DeltaPart::Prep, [heads, subs, 1]),
                launch(DeltaPart::Chunk, [heads, 1, 1]),
            ]
        })
    }
}

/// Floats of the chunked delta rule's records for `rows` rows (`REC` in delta.wgsl per row and
/// value head).
pub fn delta_records_len(d: &DeltaNet, rows: usize) -> usize {
    let rec = d.head_k_dim + d.head_v_dim + delta_sub_chunk(d.head_k_dim) + 3;
    rows * d.n_v_heads * rec
}

/// An output format's mask over `n` tokens: a bit per token (token `i` at bit `i % 32` of
/// word `i / 32`), written before each step that uses it.
pub fn token_mask(gpu: &Gpu, n: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("token mask"),
        size: (n.div_ceil(32).max(1) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// The [`TOP_K`] best of `n` logits as (value bits, id) pairs, best first: launches that sort
/// chunks down to one, and the buffer whose first [`TOP_K`] pairs hold the result.
pub struct TopLaunches {
    /// The first stage without a mask, then the rest.
    pub launches: Vec<Dispatch>,
    /// The first stage reading only the tokens the mask allows.
    pub masked_first: Dispatch,
    pub result: wgpu::Buffer,
}

impl TopLaunches {
    /// The search's launches, over the tokens the mask allows where `masked`.
    pub fn stages(&self, masked: bool) -> impl Iterator<Item = &Dispatch> {
        let (first, rest) = self.launches.split_first().expect("a first stage");
        std::iter::once(if masked { &self.masked_first } else { first }).chain(rest)
    }
}

impl Kernels {
    /// The launches that find the [`TOP_K`] best of `n` logits (with `mask`, see
    /// [`token_mask`], for [`TopLaunches::masked_first`]).
    pub fn top_launches(
        &self,
        gpu: &Gpu,
        n: usize,
        logits: &wgpu::Buffer,
        mask: &wgpu::Buffer,
    ) -> TopLaunches {
        let pairs = |n: usize| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("top pairs"),
                size: (n.div_ceil(TOP_CHUNK).max(1) * TOP_K * 8) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        // Ping-pong between two buffers; the first stage's output is the largest.
        let bufs = [pairs(n), pairs(n.div_ceil(TOP_CHUNK) * TOP_K)];
        let top = self.fixed(gpu, Shader::Top);
        let stage_launch = |len: usize, stage: usize, masked: bool| {
            let u = uniform(
                gpu,
                &TopParams {
                    n: len as u32,
                    from_logits: (stage == 0) as u32,
                    neg_inf: f32::NEG_INFINITY,
                    masked: masked as u32,
                },
            );
            let (src, dst) = (&bufs[(stage + 1) % 2], &bufs[stage % 2]);
            top.dispatch(
                gpu,
                &[&u, logits, src, dst, mask],
                [len.div_ceil(TOP_CHUNK).max(1) as u32, 1, 1],
            )
        };
        let masked_first = stage_launch(n, 0, true);
        let mut launches = Vec::new();
        let (mut len, mut stage) = (n, 0);
        loop {
            launches.push(stage_launch(len, stage, false));
            let groups = len.div_ceil(TOP_CHUNK).max(1);
            if groups == 1 {
                return TopLaunches {
                    launches,
                    masked_first,
                    result: bufs[stage % 2].clone(),
                };
            }
            len = groups * TOP_K;
            stage += 1;
        }
    }
}
