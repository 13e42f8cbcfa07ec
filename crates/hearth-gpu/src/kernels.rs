//! The compute pipelines built from `shaders/*.wgsl`, their bind group layouts, and the small
//! uniform blocks each kernel reads. Pipelines are created once, when a model (or a test)
//! sets up; nothing here runs per token.

use std::cell::RefCell;
use std::collections::HashMap;

use bytemuck::{Pod, Zeroable};
use hearth_core::quant::GgmlType;
use wgpu::util::DeviceExt;

use crate::weights::{gpu_format, GpuMatrix};
use crate::{Gpu, GpuError};

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const QUANT: &str = include_str!("../../../shaders/quant.wgsl");
const MATVEC: &str = include_str!("../../../shaders/matvec.wgsl");
const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
const PRODUCT_OUT: &str = include_str!("../../../shaders/product_out.wgsl");
const REDUCE_WG: &str = include_str!("../../../shaders/reduce_wg.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../../shaders/reduce_subgroup.wgsl");
const EMBED: &str = include_str!("../../../shaders/embed.wgsl");
const RMS_NORM: &str = include_str!("../../../shaders/rms_norm.wgsl");
const ROPE: &str = include_str!("../../../shaders/rope.wgsl");
const ATTENTION: &str = include_str!("../../../shaders/attention.wgsl");
const KV_STORE: &str = include_str!("../../../shaders/kv_store.wgsl");
const ARGMAX: &str = include_str!("../../../shaders/argmax.wgsl");
const TOP: &str = include_str!("../../../shaders/top.wgsl");

/// Pairs the top kernel keeps (`TOP` in top.wgsl) and the chunk each workgroup sorts (`CHUNK`).
pub const TOP_K: usize = 64;
const TOP_CHUNK: usize = 1024;
pub(crate) const COPY: &str = include_str!("../../../shaders/copy.wgsl");

/// Bytes between the per-token [`Step`] blocks of one submission (WebGPU's largest
/// `minUniformBufferOffsetAlignment`).
pub const STEP_STRIDE: u64 = 256;

/// Threads of a matvec workgroup; its rows are split among them (matvec.wgsl).
const MATVEC_THREADS: u32 = 64;

/// Tokens one matmul workgroup takes (`TILE` in matmul.wgsl).
const MATMUL_TILE: usize = 8;

/// Threads that share one row of a matvec (`LANES` in matvec.wgsl): as many as the row has
/// 32-value units, rounded to 1, 4 or 16, so narrow matrices keep every thread busy.
fn matvec_lanes(cols: usize) -> u32 {
    match cols.div_ceil(32) {
        0..=2 => 1,
        3..=8 => 4,
        _ => 16,
    }
}

/// Per-token parameters (common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Step {
    pub pos: u32,
    pub token: u32,
    /// Its row in the activation buffers: its index in a prompt chunk.
    pub row: u32,
    /// Tokens in its chunk.
    pub count: u32,
}

/// How a matrix-vector product stores its result (quant.wgsl's `Mat.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Store = 0,
    /// Adds to the output: the residual connection.
    Add = 1,
    /// Multiplies `silu(output)` by the product: the gated MLP's up projection after its gate.
    SiluGate = 2,
    /// Multiplies the output by `sigmoid(product)`: an attention output gate.
    SigmoidGate = 3,
}

/// Uniform block of the matrix kernels (quant.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Mat {
    pub rows: u32,
    pub cols: u32,
    pub row_words: u32,
    pub scale_base: u32,
    pub row_offset: u32,
    pub mode: u32,
    pub has_bias: u32,
    pub pos_stride: u32,
    pub y_stride: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NormParams {
    pub n: u32,
    pub eps: f32,
    /// Normalise row `step.row` into row 0 (the head after a prompt chunk).
    pub step_row: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RopeParams {
    pub head_dim: u32,
    pub rope_dim: u32,
    pub neox: u32,
    pub has_norm: u32,
    pub eps: f32,
    pub pos_stride: u32,
    pub row_stride: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttnParams {
    pub n_head: u32,
    pub group: u32,
    pub head_dim: u32,
    pub head_dim_v: u32,
    pub k_dim: u32,
    pub v_dim: u32,
    pub _pad: u32,
    pub scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct KvStoreParams {
    pub k_dim: u32,
    pub v_dim: u32,
    pub _pad: [u32; 2],
}

/// Value dimensions each of the attention kernel's 64 threads accumulates for a head of
/// `head_dim_v` (`VPT` in attention.wgsl): the kernel is compiled per width, so any fits.
fn attention_vpt(head_dim_v: usize) -> u32 {
    head_dim_v.div_ceil(64).max(1) as u32
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TopParams {
    pub n: u32,
    pub from_logits: u32,
    pub neg_inf: f32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct LenParams {
    pub n: u32,
    pub _pad: [u32; 3],
}

/// What a binding of a kernel's group 1 is.
#[derive(Clone, Copy)]
pub(crate) enum Slot {
    Uniform,
    Read,
    Write,
}

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
    pub(crate) fn new(
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

/// Every pipeline a model needs.
pub struct Kernels {
    /// Group 0: the per-token [`Step`], at a dynamic offset.
    pub step_layout: wgpu::BindGroupLayout,
    /// Matvec and matmul pipelines by (source, GPU format, lanes per row), made as matrices
    /// ask for them.
    matrix: RefCell<HashMap<(&'static str, GgmlType, u32), Kernel>>,
    embed: HashMap<GgmlType, Kernel>,
    pub rms_norm: Kernel,
    pub rope: Kernel,
    /// Attention pipelines by values per thread, made as models ask for them.
    attention: RefCell<HashMap<u32, Kernel>>,
    /// The f16 KV cache's writer, where that path is on.
    pub kv_store: Option<Kernel>,
    pub argmax: Kernel,
    pub top: Kernel,
    /// Bound where a kernel's optional input (bias, norm weight) is absent.
    dummy: wgpu::Buffer,
}

fn unit_selector(ty: GgmlType) -> Result<String, GpuError> {
    let name = match gpu_format(ty)? {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q2_K => "q2_k",
        GgmlType::Q3_K => "q3_k",
        GgmlType::Q4_K => "q4_k",
        GgmlType::Q5_K => "q5_k",
        GgmlType::Q6_K => "q6_k",
        other => return Err(GpuError::UnsupportedType(other)),
    };
    Ok(format!(
        "fn unit(row: u32, u: u32) -> Unit {{ return unit_{name}(row, u); }}\n"
    ))
}

impl Kernels {
    /// Compiles the kernels, with matrix kernels for each of `types`.
    pub fn new(gpu: &Gpu, types: &[GgmlType]) -> Result<Self, GpuError> {
        use Slot::*;
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
        let mut embed = HashMap::new();
        for &ty in types {
            let ty = gpu_format(ty)?;
            if embed.contains_key(&ty) {
                continue;
            }
            let unit = unit_selector(ty)?;
            let src = format!("{COMMON}{QUANT}{unit}{EMBED}");
            embed.insert(
                ty,
                Kernel::new(
                    gpu,
                    &format!("embed {ty}"),
                    &src,
                    &step_layout,
                    &[Read, Uniform, Write],
                ),
            );
        }
        Ok(Kernels {
            rms_norm: Kernel::new(
                gpu,
                "rms_norm",
                &format!("{COMMON}{RMS_NORM}"),
                &step_layout,
                &[Uniform, Read, Read, Write],
            ),
            rope: Kernel::new(
                gpu,
                "rope",
                &format!("{COMMON}{ROPE}"),
                &step_layout,
                &[Uniform, Write, Read, Read],
            ),
            attention: RefCell::new(HashMap::new()),
            kv_store: gpu.paths.f16_kv.then(|| {
                Kernel::new(
                    gpu,
                    "kv_store",
                    &format!("enable f16;\n{COMMON}{KV_STORE}"),
                    &step_layout,
                    &[Uniform, Read, Read, Write, Write],
                )
            }),
            argmax: Kernel::new(gpu, "argmax", ARGMAX, &step_layout, &[Uniform, Read, Write]),
            top: Kernel::new(gpu, "top", TOP, &step_layout, &[Uniform, Read, Read, Write]),
            step_layout,
            matrix: RefCell::new(HashMap::new()),
            embed,
            dummy: storage_f32(gpu, &[0.0]),
        })
    }

    fn of(map: &HashMap<GgmlType, Kernel>, ty: GgmlType) -> Result<&Kernel, GpuError> {
        map.get(&gpu_format(ty)?)
            .ok_or(GpuError::UnsupportedType(ty))
    }

    /// The pipeline of `kernel` (MATVEC or MATMUL) for matrices of type `ty` with `lanes`
    /// threads per row.
    fn matrix_kernel(
        &self,
        gpu: &Gpu,
        kernel: &'static str,
        ty: GgmlType,
        lanes: u32,
    ) -> Result<Kernel, GpuError> {
        let ty = gpu_format(ty)?;
        let key = (kernel, ty, lanes);
        if let Some(k) = self.matrix.borrow().get(&key) {
            return Ok(k.clone());
        }
        let (directive, reduce) = match gpu.paths.subgroup_size {
            Some(sg) => (
                // Browsers require the directive; naga (native) enables subgroup operations
                // with the device feature and rejects the directive.
                if cfg!(target_arch = "wasm32") {
                    "enable subgroups;\n"
                } else {
                    ""
                },
                format!("const SG: u32 = {}u;\n{REDUCE_SUBGROUP}", sg.min(lanes)),
            ),
            None => ("", REDUCE_WG.to_string()),
        };
        let sizes = format!(
            "const LANES: u32 = {lanes}u;\nconst ROWS: u32 = {}u;\n",
            MATVEC_THREADS / lanes
        );
        let unit = unit_selector(ty)?;
        let src = format!("{directive}{sizes}{COMMON}{QUANT}{unit}{PRODUCT_OUT}{kernel}{reduce}");
        let name = if kernel == MATVEC { "matvec" } else { "matmul" };
        let k = Kernel::new(
            gpu,
            &format!("{name} {ty} x{lanes}"),
            &src,
            &self.step_layout,
            &[
                Slot::Read,
                Slot::Uniform,
                Slot::Read,
                Slot::Write,
                Slot::Read,
            ],
        );
        self.matrix.borrow_mut().insert(key, k.clone());
        Ok(k)
    }

    /// The attention pipeline for value heads of `head_dim_v`.
    fn attention(&self, gpu: &Gpu, head_dim_v: usize) -> Kernel {
        let vpt = attention_vpt(head_dim_v);
        if let Some(k) = self.attention.borrow().get(&vpt) {
            return k.clone();
        }
        let kv = if gpu.paths.f16_kv {
            "enable f16;\nalias KV = f16;\n"
        } else {
            "alias KV = f32;\n"
        };
        let src = format!("{kv}const VPT: u32 = {vpt}u;\n{COMMON}{ATTENTION}");
        let k = Kernel::new(
            gpu,
            &format!("attention x{vpt}"),
            &src,
            &self.step_layout,
            &[
                Slot::Uniform,
                Slot::Read,
                Slot::Read,
                Slot::Read,
                Slot::Write,
            ],
        );
        self.attention.borrow_mut().insert(vpt, k.clone());
        k
    }

    pub fn embed(&self, ty: GgmlType) -> Result<&Kernel, GpuError> {
        Self::of(&self.embed, ty)
    }

    /// `y (op)= m x + bias`, one launch per part of `m`; with a `pos_stride`, `y` starts at
    /// `step.pos * pos_stride`.
    #[allow(clippy::too_many_arguments)]
    pub fn matvec_launches(
        &self,
        gpu: &Gpu,
        m: &GpuMatrix,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        mode: Output,
        pos_stride: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        self.product_launches(gpu, MATVEC, 1, m, [x, y], bias, mode, pos_stride)
    }

    /// `y (op)= x m^T + bias` for the `step.count` rows of `x` (a prompt chunk, at most
    /// `chunk`), one launch per part of `m`; with a `pos_stride`, row t goes to the KV cache at
    /// `(step.pos + t) * pos_stride`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_launches(
        &self,
        gpu: &Gpu,
        m: &GpuMatrix,
        chunk: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        mode: Output,
        pos_stride: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let tiles = chunk.div_ceil(MATMUL_TILE) as u32;
        self.product_launches(gpu, MATMUL, tiles, m, [x, y], bias, mode, pos_stride)
    }

    /// `y (op)= m x + bias` for `tokens` rows of `x`: the matvec launches for one (a decode
    /// step), the matmul launches for a prompt chunk of up to `tokens`.
    #[allow(clippy::too_many_arguments)]
    pub fn product_launches_for(
        &self,
        gpu: &Gpu,
        m: &GpuMatrix,
        tokens: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        mode: Output,
        pos_stride: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        if tokens == 1 {
            self.matvec_launches(gpu, m, x, y, bias, mode, pos_stride)
        } else {
            self.matmul_launches(gpu, m, tokens, x, y, bias, mode, pos_stride)
        }
    }

    /// The launches of `kernel` (MATVEC or MATMUL) over each part of `m`, with `tiles` token
    /// tiles along z.
    #[allow(clippy::too_many_arguments)]
    fn product_launches(
        &self,
        gpu: &Gpu,
        kernel: &'static str,
        tiles: u32,
        m: &GpuMatrix,
        [x, y]: [&wgpu::Buffer; 2],
        bias: Option<&wgpu::Buffer>,
        mode: Output,
        pos_stride: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let lanes = matvec_lanes(m.cols);
        let kernel = self.matrix_kernel(gpu, kernel, m.ty, lanes)?;
        Ok(m.parts
            .iter()
            .map(|p| {
                let u = uniform(gpu, &m.mat(p, mode, bias.is_some(), pos_stride));
                let [gx, gy, _] = grid((p.rows as u32).div_ceil(MATVEC_THREADS / lanes));
                Dispatch {
                    pipeline: kernel.pipeline.clone(),
                    bind: kernel.bind(gpu, &[&p.buffer, &u, x, y, bias.unwrap_or(&self.dummy)]),
                    groups: [gx, gy, tiles],
                }
            })
            .collect())
    }

    /// Row `step.token` of `table` into `out`: one launch per part, as (first row, rows,
    /// launch); the caller picks the part holding the token.
    pub fn embed_launches(
        &self,
        gpu: &Gpu,
        table: &GpuMatrix,
        out: &wgpu::Buffer,
    ) -> Result<Vec<(usize, usize, Dispatch)>, GpuError> {
        let kernel = self.embed(table.ty)?;
        Ok(table
            .parts
            .iter()
            .map(|p| {
                let u = uniform(gpu, &table.mat(p, Output::Store, false, 0));
                let d = Dispatch {
                    pipeline: kernel.pipeline.clone(),
                    bind: kernel.bind(gpu, &[&p.buffer, &u, out]),
                    groups: grid((table.cols as u32).div_ceil(32).div_ceil(64)),
                };
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
        let u = uniform(gpu, &params);
        Dispatch {
            pipeline: self.rms_norm.pipeline.clone(),
            bind: self.rms_norm.bind(gpu, &[&u, x, weight, out]),
            groups: [rows as u32, 1, 1],
        }
    }

    /// Per-head norm (when `norm` is given) and rope over `heads` heads of `data`.
    pub fn rope_launch(
        &self,
        gpu: &Gpu,
        params: RopeParams,
        heads: usize,
        data: &wgpu::Buffer,
        norm: Option<&wgpu::Buffer>,
        table: &wgpu::Buffer,
    ) -> Dispatch {
        let u = uniform(
            gpu,
            &RopeParams {
                has_norm: norm.is_some() as u32,
                ..params
            },
        );
        Dispatch {
            pipeline: self.rope.pipeline.clone(),
            bind: self
                .rope
                .bind(gpu, &[&u, data, norm.unwrap_or(&self.dummy), table]),
            groups: [heads as u32, 1, 1],
        }
    }

    /// Causal attention of the query heads of `tokens` rows of `q` over the caches (one row for
    /// a decode step, a chunk's for a prompt, bound to its first step).
    pub fn attention_launch(
        &self,
        gpu: &Gpu,
        (params, head_dim_v): (&wgpu::Buffer, usize),
        n_head: usize,
        tokens: usize,
        [q, kc, vc, out]: [&wgpu::Buffer; 4],
    ) -> Dispatch {
        let kernel = self.attention(gpu, head_dim_v);
        Dispatch {
            pipeline: kernel.pipeline.clone(),
            bind: kernel.bind(gpu, &[params, q, kc, vc, out]),
            groups: [n_head as u32, tokens as u32, 1],
        }
    }

    /// Rounds the K and V rows of `tokens` tokens into the f16 caches at their positions.
    /// Panics where the f16 KV path is off.
    pub fn kv_store_launch(
        &self,
        gpu: &Gpu,
        k_dim: usize,
        v_dim: usize,
        tokens: usize,
        [k_rows, v_rows, kc, vc]: [&wgpu::Buffer; 4],
    ) -> Dispatch {
        let kernel = self.kv_store.as_ref().expect("the f16 KV path is on");
        let u = uniform(
            gpu,
            &KvStoreParams {
                k_dim: k_dim as u32,
                v_dim: v_dim as u32,
                _pad: [0; 2],
            },
        );
        Dispatch {
            pipeline: kernel.pipeline.clone(),
            bind: kernel.bind(gpu, &[&u, k_rows, v_rows, kc, vc]),
            groups: [k_dim.max(v_dim).div_ceil(64) as u32, tokens as u32, 1],
        }
    }

    /// The index of the largest of `n` values into `result[0]`.
    pub fn argmax_launch(
        &self,
        gpu: &Gpu,
        n: usize,
        values: &wgpu::Buffer,
        result: &wgpu::Buffer,
    ) -> Dispatch {
        let u = uniform(
            gpu,
            &LenParams {
                n: n as u32,
                _pad: [0; 3],
            },
        );
        Dispatch {
            pipeline: self.argmax.pipeline.clone(),
            bind: self.argmax.bind(gpu, &[&u, values, result]),
            groups: [1, 1, 1],
        }
    }
}

/// The [`TOP_K`] best of `n` logits as (value bits, id) pairs, best first: launches that sort
/// chunks down to one, and the buffer whose first [`TOP_K`] pairs hold the result.
pub struct TopLaunches {
    pub launches: Vec<Dispatch>,
    pub result: wgpu::Buffer,
}

impl Kernels {
    pub fn top_launches(&self, gpu: &Gpu, n: usize, logits: &wgpu::Buffer) -> TopLaunches {
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
        let mut launches = Vec::new();
        let (mut len, mut stage) = (n, 0);
        loop {
            let groups = len.div_ceil(TOP_CHUNK).max(1);
            let u = uniform(
                gpu,
                &TopParams {
                    n: len as u32,
                    from_logits: (stage == 0) as u32,
                    neg_inf: f32::NEG_INFINITY,
                    _pad: 0,
                },
            );
            let (src, dst) = (&bufs[(stage + 1) % 2], &bufs[stage % 2]);
            launches.push(Dispatch {
                pipeline: self.top.pipeline.clone(),
                bind: self.top.bind(gpu, &[&u, logits, src, dst]),
                groups: [groups as u32, 1, 1],
            });
            if groups == 1 {
                return TopLaunches {
                    launches,
                    result: dst.clone(),
                };
            }
            len = groups * TOP_K;
            stage += 1;
        }
    }
}

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
