//! Lowering a model's description to GPU buffers and kernel launches, once, at load. Every
//! operation is written once, as a function of the rows it runs over: one row gives the decode
//! plan's launch, a chunk of [`CHUNK`] rows the prompt plan's. Buffers are made from the header
//! alone; each notes which tensor fills it ([`Pending`]), so weights can stream in later.

use std::collections::BTreeMap;

use hearth_core::gguf::{Gguf, TensorInfo};
use hearth_core::model::{
    Attention, DeltaNet, Ffn, Mixer, ModelError, ModelSpec, Role, Rope, RopeStyle, TensorId,
};
use hearth_core::quant::GgmlType;

use crate::kernels::{
    self, token_mask, uniform, AttnParams, Dispatch, Kernels, NormParams, Output, RopeParams,
    Steps, TopLaunches, TOP_K,
};
use crate::recurrent::RecurrentState;
use crate::weights::GpuMatrix;
use crate::{Gpu, GpuError};

/// Tokens whose steps share one command buffer while a prompt runs.
pub const CHUNK: usize = 64;

/// One launch of a prompt chunk's plan.
pub enum PromptOp {
    /// Over the whole chunk, bound to its first step.
    Chunk(Dispatch),
    /// Once per token, bound to that token's step, in token order (rope, whose table row and
    /// cache row are the token's).
    PerToken(Vec<Dispatch>),
}

/// Where a tensor's bytes go once they arrive.
pub enum Target {
    /// Repacked into a matrix's buffers.
    Matrix(GpuMatrix),
    /// Rows dealt in turn to several matrices, `block` rows at a time (a gated Q's query and
    /// gate rows, which alternate per head).
    Dealt { block: usize, parts: Vec<GpuMatrix> },
    /// Dequantized to f32 at a float offset of a buffer.
    Vector { buffer: wgpu::Buffer, offset: usize },
    /// Llama 3's rope frequency factors, which shape these rope tables.
    RopeTables(Vec<(Rope, wgpu::Buffer)>),
}

/// A tensor whose buffers exist but whose bytes have not been written yet.
pub struct Pending {
    pub ty: GgmlType,
    pub n_elements: usize,
    pub n_bytes: u64,
    pub target: Target,
}

/// The rope (cos, sin) table of `rope` for positions `0..max_ctx`, the reference's values.
pub fn rope_table(rope: &Rope, freqs: Option<&[f32]>, max_ctx: usize) -> Vec<f32> {
    (0..max_ctx)
        .flat_map(|pos| rope.cos_sin(pos, freqs))
        .flatten()
        .collect()
}

/// Everything a model's runs use, made at load.
pub struct Plan {
    pub steps: Steps,
    /// Embedding lookups, one per part of the table: (first row, rows, launch).
    pub embed: Vec<(usize, usize, Dispatch)>,
    pub decode: Vec<Dispatch>,
    pub prompt: Vec<PromptOp>,
    pub head: Vec<Dispatch>,
    /// Argmax over every token, and over the tokens in `mask`.
    pub argmax: [Dispatch; 2],
    /// An output format's mask, written before a step that uses it.
    pub mask: wgpu::Buffer,
    pub top: TopLaunches,
    pub top_read: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub logits_read: wgpu::Buffer,
    pub result: wgpu::Buffer,
    pub result_read: wgpu::Buffer,
    pub recurrent: RecurrentState,
    /// The recurrence launches (each delta-net layer's convolution and delta rule) of the
    /// decode plan and of the prompt plan, also in `decode` and `prompt`: timed on their own,
    /// they give the recurrence's share of a step or a chunk.
    pub recurrence: Recurrence,
    pub weight_bytes_per_token: u64,
    pub held_bytes: u64,
    pub pending: BTreeMap<String, Pending>,
}

/// The recurrence's launches in each plan.
#[derive(Default)]
pub struct Recurrence {
    pub decode: Vec<Dispatch>,
    /// Over a chunk, bound to its first step.
    pub prompt: Vec<Dispatch>,
}

/// Allocates buffers, counts the bytes they hold, and notes which tensor fills which.
struct Held<'a> {
    gpu: &'a Gpu,
    header: &'a Gguf,
    bytes: u64,
    matrix_bytes: u64,
    pending: BTreeMap<String, Pending>,
}

impl<'a> Held<'a> {
    fn buffer(&mut self, b: wgpu::Buffer) -> wgpu::Buffer {
        self.bytes += b.size();
        b
    }

    fn f32s(&mut self, v: &[f32]) -> wgpu::Buffer {
        let b = kernels::storage_f32(self.gpu, v);
        self.buffer(b)
    }

    fn scratch(&mut self, n: usize) -> wgpu::Buffer {
        let b = kernels::scratch(self.gpu, n);
        self.buffer(b)
    }

    fn info(&self, id: TensorId) -> Result<&'a TensorInfo, GpuError> {
        let name = id.name();
        Ok(self
            .header
            .tensor(&name)
            .ok_or(ModelError::MissingTensor(name))?)
    }

    /// Notes that tensor `id` fills `target`.
    fn expect(&mut self, id: TensorId, target: Target) -> Result<(), GpuError> {
        let info = self.info(id)?;
        let pending = Pending {
            ty: info.ty,
            n_elements: info.n_elements() as usize,
            n_bytes: info.n_bytes,
            target,
        };
        self.pending.insert(id.name(), pending);
        Ok(())
    }

    fn shape(&self, id: TensorId) -> Result<(usize, usize, GgmlType), GpuError> {
        let info = self.info(id)?;
        let cols = info.dims[0] as usize;
        Ok((
            (info.n_elements() / info.dims[0].max(1)) as usize,
            cols,
            info.ty,
        ))
    }

    fn allocate(
        &mut self,
        id: TensorId,
        rows: usize,
        cols: usize,
        ty: GgmlType,
    ) -> Result<GpuMatrix, GpuError> {
        let m = GpuMatrix::allocate(self.gpu, &id.name(), ty, rows, cols)?;
        self.bytes += m.bytes();
        self.matrix_bytes += m.bytes();
        Ok(m)
    }

    /// A weight matrix, to be filled with tensor `id`.
    fn matrix(&mut self, id: TensorId) -> Result<GpuMatrix, GpuError> {
        let (rows, cols, ty) = self.shape(id)?;
        let m = self.allocate(id, rows, cols, ty)?;
        self.expect(id, Target::Matrix(m.clone()))?;
        Ok(m)
    }

    /// Layer `l`'s matrices of `roles`, in order.
    fn matrices<const N: usize>(
        &mut self,
        l: usize,
        roles: [Role; N],
    ) -> Result<[GpuMatrix; N], GpuError> {
        let ms = roles
            .iter()
            .map(|&r| self.matrix(TensorId::layer(l, r)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ms
            .try_into()
            .unwrap_or_else(|_| unreachable!("one matrix per role")))
    }

    /// `n` matrices dealt the rows of tensor `id` in turn, `block` rows each time.
    fn dealt(&mut self, id: TensorId, block: usize, n: usize) -> Result<Vec<GpuMatrix>, GpuError> {
        let (rows, cols, ty) = self.shape(id)?;
        let parts = (0..n)
            .map(|_| self.allocate(id, rows / n, cols, ty))
            .collect::<Result<Vec<_>, _>>()?;
        self.expect(
            id,
            Target::Dealt {
                block,
                parts: parts.clone(),
            },
        )?;
        Ok(parts)
    }

    /// An f32 vector, to be filled with tensor `id`.
    fn vector(&mut self, id: TensorId) -> Result<wgpu::Buffer, GpuError> {
        let b = self.scratch(self.info(id)?.n_elements() as usize);
        self.vector_at(id, &b, 0)?;
        Ok(b)
    }

    /// Tensor `id` as f32s at float `offset` of `buffer`.
    fn vector_at(
        &mut self,
        id: TensorId,
        buffer: &wgpu::Buffer,
        offset: usize,
    ) -> Result<(), GpuError> {
        let target = Target::Vector {
            buffer: buffer.clone(),
            offset,
        };
        self.expect(id, target)
    }
}

/// The decode plan and the prompt plan, built side by side.
#[derive(Default)]
struct Plans {
    decode: Vec<Dispatch>,
    prompt: Vec<PromptOp>,
}

impl Plans {
    /// An operation over `rows` tokens, lowered for a decode step (1) and a prompt chunk.
    fn both(
        &mut self,
        op: impl Fn(usize) -> Result<Vec<Dispatch>, GpuError>,
    ) -> Result<(), GpuError> {
        self.decode.extend(op(1)?);
        self.prompt
            .extend(op(CHUNK)?.into_iter().map(PromptOp::Chunk));
        Ok(())
    }

    /// Launches run once per token, bound to its step.
    fn per_token(&mut self, launches: Vec<Dispatch>) {
        self.decode.extend(launches.iter().cloned());
        self.prompt.push(PromptOp::PerToken(launches));
    }
}

/// Activation buffers shared by every layer, a row per token of a chunk (decode uses row 0).
struct Acts {
    x: wgpu::Buffer,
    h: wgpu::Buffer,
    q: wgpu::Buffer,
    /// Attention output, or the delta net's normed heads.
    att: wgpu::Buffer,
    ffn: wgpu::Buffer,
    /// The delta net's projections.
    qkv: wgpu::Buffer,
    z: wgpu::Buffer,
    beta: wgpu::Buffer,
    alpha: wgpu::Buffer,
    /// The chunked delta rule's records.
    wy: wgpu::Buffer,
    /// The f16 KV path's f32 K and V rows of a chunk.
    kv_rows: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

impl Acts {
    fn new(b: &mut Held, s: &ModelSpec, f16_kv: bool) -> Self {
        let max = |f: &dyn Fn(&Attention) -> usize, g: &dyn Fn(&DeltaNet) -> usize| {
            let a = s.attention_layers().map(f).max().unwrap_or(0);
            a.max(s.delta_net_layers().map(g).max().unwrap_or(0))
        };
        let n_ff = s
            .layers
            .iter()
            .map(|l| match l.ffn {
                Ffn::SiluGated { n_ff } => n_ff,
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
            qkv: rows(max(&|_| 0, &DeltaNet::conv_dim)),
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

/// A matrix product as (matrix, input, output, bias, output mode, KV cache stride).
type Product<'a> = (
    &'a GpuMatrix,
    &'a wgpu::Buffer,
    &'a wgpu::Buffer,
    Option<&'a wgpu::Buffer>,
    Output,
    usize,
);

/// What lowering a layer needs besides the layer.
struct Lowering<'a> {
    gpu: &'a Gpu,
    k: &'a Kernels,
    spec: &'a ModelSpec,
    acts: Acts,
    max_ctx: usize,
    /// Rope tables by rope, shared by the layers with the same one.
    tables: Vec<(Rope, wgpu::Buffer)>,
    norm: NormParams,
    recurrence: Recurrence,
}

impl Lowering<'_> {
    fn products(&self, plans: &mut Plans, list: &[Product]) -> Result<(), GpuError> {
        for &(m, x, y, bias, mode, stride) in list {
            plans.both(|rows| {
                self.k
                    .product_launches(self.gpu, m, rows, x, y, bias, mode, stride)
            })?;
        }
        Ok(())
    }

    fn norm(&self, plans: &mut Plans, weight: &wgpu::Buffer) -> Result<(), GpuError> {
        let (gpu, a) = (self.gpu, &self.acts);
        plans.both(|rows| {
            Ok(vec![self
                .k
                .rms_norm_launch(gpu, self.norm, rows, &a.x, weight, &a.h)])
        })
    }

    /// The rope table of `rope`, made once for all the layers that share it.
    fn table(&mut self, b: &mut Held, rope: &Rope) -> wgpu::Buffer {
        if let Some((_, t)) = self.tables.iter().find(|(r, _)| r == rope) {
            return t.clone();
        }
        let t = if rope.freqs {
            // Written once the factors arrive.
            b.scratch(self.max_ctx * rope.dim)
        } else {
            b.f32s(&rope_table(rope, None, self.max_ctx))
        };
        self.tables.push((*rope, t.clone()));
        t
    }

    fn attention(
        &mut self,
        b: &mut Held,
        plans: &mut Plans,
        l: usize,
        a: &Attention,
    ) -> Result<(), GpuError> {
        let id = |role| TensorId::layer(l, role);
        let gpu = self.gpu;
        let (s, f16_kv) = (self.spec, gpu.paths.f16_kv);
        let (wq, wgate) = if a.output_gate {
            let mut parts = b.dealt(id(Role::AttnQ), a.head_dim, 2)?.into_iter();
            (parts.next().unwrap(), parts.next())
        } else {
            (b.matrix(id(Role::AttnQ))?, None)
        };
        let [wk, wv, wo] = b.matrices(l, [Role::AttnK, Role::AttnV, Role::AttnOutput])?;
        let mut opt = |on: bool, role| on.then(|| b.vector(id(role))).transpose();
        let bq = opt(a.qkv_bias, Role::AttnQBias)?;
        let bk = opt(a.qkv_bias, Role::AttnKBias)?;
        let bv = opt(a.qkv_bias, Role::AttnVBias)?;
        let q_norm = opt(a.qk_norm, Role::AttnQNorm)?;
        let k_norm = opt(a.qk_norm, Role::AttnKNorm)?;
        let kv_value_bytes = if f16_kv { 2 } else { 4 };
        let kv_bytes = (self.max_ctx * a.k_dim().max(a.v_dim()) * kv_value_bytes) as u64;
        if kv_bytes > gpu.max_binding {
            return Err(GpuError::TooLarge {
                what: format!("the KV cache of one layer for {} positions", self.max_ctx),
                bytes: kv_bytes,
                limit: gpu.max_binding,
            });
        }
        // f16 values are stored two to a word.
        let mut cache = |n: usize| b.scratch(n.div_ceil(4 / kv_value_bytes));
        let kc = cache(self.max_ctx * a.k_dim());
        let vc = cache(self.max_ctx * a.v_dim());
        let table = self.table(b, &a.rope);

        let acts = &self.acts;
        // Where the K and V products go: the cache at the token's position, or a row of the
        // f16 path's staging buffers.
        let (k_out, v_out, k_stride, v_stride) = match &acts.kv_rows {
            Some((kr, vr)) => (kr, vr, 0, 0),
            None => (&kc, &vc, a.k_dim(), a.v_dim()),
        };
        self.products(
            plans,
            &[
                (&wq, &acts.h, &acts.q, bq.as_ref(), Output::Store, 0),
                (&wk, &acts.h, k_out, bk.as_ref(), Output::Store, k_stride),
                (&wv, &acts.h, v_out, bv.as_ref(), Output::Store, v_stride),
            ],
        )?;
        let rope_params = RopeParams {
            head_dim: a.head_dim as u32,
            rope_dim: a.rope.dim as u32,
            neox: (a.rope.style == RopeStyle::Neox) as u32,
            has_norm: 0,
            eps: s.rms_eps,
            pos_stride: 0,
            row_stride: a.q_dim() as u32,
            _pad: 0,
        };
        // K is roped where it lies: in the cache (f32), or in its chunk row before it is
        // rounded into the cache (f16).
        let k_rope_params = RopeParams {
            pos_stride: if f16_kv { 0 } else { a.k_dim() as u32 },
            row_stride: if f16_kv { a.k_dim() as u32 } else { 0 },
            ..rope_params
        };
        let k = self.k;
        plans.per_token(vec![
            k.rope_launch(gpu, rope_params, a.n_head, &acts.q, q_norm.as_ref(), &table),
            k.rope_launch(
                gpu,
                k_rope_params,
                a.n_head_kv,
                k_out,
                k_norm.as_ref(),
                &table,
            ),
        ]);
        if let Some((kr, vr)) = &acts.kv_rows {
            plans.both(|rows| {
                Ok(vec![k.kv_store_launch(
                    gpu,
                    a.k_dim(),
                    a.v_dim(),
                    rows,
                    [kr, vr, &kc, &vc],
                )])
            })?;
        }
        let params = uniform(
            gpu,
            &AttnParams {
                n_head: a.n_head as u32,
                group: (a.n_head / a.n_head_kv) as u32,
                head_dim: a.head_dim as u32,
                head_dim_v: a.head_dim_v as u32,
                k_dim: a.k_dim() as u32,
                v_dim: a.v_dim() as u32,
                _pad: 0,
                scale: 1.0 / (a.head_dim as f32).sqrt(),
            },
        );
        plans.both(|rows| {
            Ok(vec![k.attention_launch(
                gpu,
                (&params, a.head_dim_v),
                a.n_head,
                rows,
                [&acts.q, &kc, &vc, &acts.att],
            )])
        })?;
        if let Some(wgate) = &wgate {
            let gate = (wgate, &acts.h, &acts.att, None, Output::SigmoidGate, 0);
            self.products(plans, &[gate])?;
        }
        self.products(plans, &[(&wo, &acts.att, &acts.x, None, Output::Add, 0)])
    }

    fn delta_net(
        &mut self,
        b: &mut Held,
        plans: &mut Plans,
        l: usize,
        d: &DeltaNet,
        (conv_state, delta_state): &(wgpu::Buffer, wgpu::Buffer),
    ) -> Result<(), GpuError> {
        let id = |role| TensorId::layer(l, role);
        let gpu = self.gpu;
        let [wqkv, wz, wbeta, walpha, wout] = b.matrices(
            l,
            [
                Role::AttnQkv,
                Role::AttnGate,
                Role::SsmBeta,
                Role::SsmAlpha,
                Role::SsmOut,
            ],
        )?;
        let conv_w = b.vector(id(Role::SsmConv1d))?;
        let nv = d.n_v_heads;
        let params = b.scratch(2 * nv + d.head_v_dim);
        b.vector_at(id(Role::SsmDt), &params, 0)?;
        b.vector_at(id(Role::SsmA), &params, nv)?;
        b.vector_at(id(Role::SsmNorm), &params, 2 * nv)?;
        let a = &self.acts;
        self.products(
            plans,
            &[
                (&wqkv, &a.h, &a.qkv, None, Output::Store, 0),
                (&wz, &a.h, &a.z, None, Output::Store, 0),
                (&wbeta, &a.h, &a.beta, None, Output::Store, 0),
                (&walpha, &a.h, &a.alpha, None, Output::Store, 0),
            ],
        )?;
        let k = self.k;
        let eps = self.spec.rms_eps;
        let first = (plans.decode.len(), plans.prompt.len());
        // The convolution walks the rows of the chunk it is bound to.
        plans.both(|rows| {
            let mut launches = vec![k.conv_launch(gpu, d, [&a.qkv, &conv_w, conv_state])];
            launches.extend(k.delta_launches(
                gpu,
                d,
                eps,
                rows,
                [
                    &a.qkv,
                    &a.z,
                    &a.beta,
                    &a.alpha,
                    &params,
                    delta_state,
                    &a.att,
                    &a.wy,
                ],
            )?);
            Ok(launches)
        })?;
        let r = &mut self.recurrence;
        r.decode.extend(plans.decode[first.0..].iter().cloned());
        r.prompt
            .extend(plans.prompt[first.1..].iter().map(|op| match op {
                PromptOp::Chunk(d) => d.clone(),
                PromptOp::PerToken(_) => unreachable!("the recurrence runs over whole chunks"),
            }));
        self.products(plans, &[(&wout, &a.att, &a.x, None, Output::Add, 0)])
    }

    fn feed_forward(
        &mut self,
        b: &mut Held,
        plans: &mut Plans,
        l: usize,
        ffn: &Ffn,
    ) -> Result<(), GpuError> {
        match ffn {
            Ffn::SiluGated { .. } => {
                let [gate, up, down] =
                    b.matrices(l, [Role::FfnGate, Role::FfnUp, Role::FfnDown])?;
                let a = &self.acts;
                self.products(
                    plans,
                    &[
                        (&gate, &a.h, &a.ffn, None, Output::Store, 0),
                        (&up, &a.h, &a.ffn, None, Output::SiluGate, 0),
                        (&down, &a.ffn, &a.x, None, Output::Add, 0),
                    ],
                )
            }
        }
    }
}

/// Makes every buffer and launch of `spec` for up to `max_ctx` positions.
pub fn build(gpu: &Gpu, header: &Gguf, spec: &ModelSpec, max_ctx: usize) -> Result<Plan, GpuError> {
    let s = spec;
    let kernels = Kernels::new(gpu);
    let k = &kernels;
    let mut b = Held {
        gpu,
        header,
        bytes: 0,
        matrix_bytes: 0,
        pending: BTreeMap::new(),
    };
    let acts = Acts::new(&mut b, s, gpu.paths.f16_kv);
    let logits = b.scratch(s.n_vocab);
    let result = b.buffer(gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("result"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    }));
    let read_buffer = |size: u64| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let logits_read = read_buffer((s.n_vocab * 4) as u64);
    let result_read = read_buffer(16);
    let steps = Steps::new(gpu, k, CHUNK);

    let token_embd = b.matrix(TensorId::global(Role::TokenEmbd))?;
    let embed = k.embed_launches(gpu, &token_embd, &acts.x)?;
    let output_norm = b.vector(TensorId::global(Role::OutputNorm))?;
    let head_matrix = if s.tied_output() {
        token_embd.clone()
    } else {
        b.matrix(TensorId::global(Role::Output))?
    };
    let recurrent = RecurrentState::new(gpu, &s.delta_net_layers().collect::<Vec<_>>())?;
    b.bytes += recurrent.bytes();
    let norm = NormParams {
        n: s.n_embd as u32,
        eps: s.rms_eps,
        step_row: 0,
        _pad: 0,
    };
    let mut lower = Lowering {
        gpu,
        k,
        spec: s,
        acts,
        max_ctx,
        tables: Vec::new(),
        norm,
        recurrence: Recurrence::default(),
    };
    let mut plans = Plans::default();
    let mut states = recurrent.layers.iter();
    for (l, layer) in s.layers.iter().enumerate() {
        let attn_norm = b.vector(TensorId::layer(l, Role::AttnNorm))?;
        lower.norm(&mut plans, &attn_norm)?;
        match &layer.mixer {
            Mixer::Attention(a) => lower.attention(&mut b, &mut plans, l, a)?,
            Mixer::DeltaNet(d) => {
                let state = states.next().expect("a state per delta-net layer");
                lower.delta_net(&mut b, &mut plans, l, d, state)?
            }
        }
        let ffn_norm = b.vector(TensorId::layer(l, layer.ffn_norm))?;
        lower.norm(&mut plans, &ffn_norm)?;
        lower.feed_forward(&mut b, &mut plans, l, &layer.ffn)?;
    }
    if s.rope_freqs {
        let tables = lower
            .tables
            .iter()
            .filter(|(r, _)| r.freqs)
            .cloned()
            .collect();
        b.expect(
            TensorId::global(Role::RopeFreqs),
            Target::RopeTables(tables),
        )?;
    }

    let a = &lower.acts;
    // The output norm reads the row of the step it is bound to: a chunk's last token.
    let head_norm = NormParams {
        step_row: 1,
        ..norm
    };
    let mut head = vec![k.rms_norm_launch(gpu, head_norm, 1, &a.x, &output_norm, &a.h)];
    head.extend(k.product_launches(gpu, &head_matrix, 1, &a.h, &logits, None, Output::Store, 0)?);
    let mask = token_mask(gpu, s.n_vocab);
    let argmax =
        [false, true].map(|m| k.argmax_launch(gpu, s.n_vocab, &logits, &result, (&mask, m)));
    let top = k.top_launches(gpu, s.n_vocab, &logits, &mask);
    let top_read = read_buffer((TOP_K * 8) as u64);
    // Every matrix is read once a token except the embedding, of which one row is, unless it
    // is also the head.
    let weight_bytes_per_token = if s.tied_output() {
        b.matrix_bytes
    } else {
        b.matrix_bytes - token_embd.bytes()
    };
    let held_bytes = b.bytes
        + steps.bytes()
        + logits_read.size()
        + result_read.size()
        + top.result.size()
        + top_read.size()
        + mask.size();
    Ok(Plan {
        steps,
        embed,
        decode: plans.decode,
        prompt: plans.prompt,
        head,
        argmax,
        mask,
        top,
        top_read,
        logits,
        logits_read,
        result,
        result_read,
        recurrent,
        recurrence: lower.recurrence,
        weight_bytes_per_token,
        held_bytes,
        pending: b.pending,
    })
}
