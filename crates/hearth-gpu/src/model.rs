//! A transformer on the GPU: weights, KV cache and one plan of kernel launches, built once.
//!
//! A decode step runs one token: embedding, every layer, then the output norm, head and argmax.
//! A prompt runs in chunks of up to [`CHUNK`] tokens layer by layer: the matrix products take
//! the whole chunk at once (each weight decoded once per tile of tokens), rope runs per token,
//! and attention takes every token of the chunk in one launch, flash-style. All bind groups are made at load; a step's only per-token inputs are its position,
//! token id and row in the chunk, a 16-byte [`Step`] at a dynamic offset, so a whole chunk goes
//! into one command buffer and a decode step is one submission that reads back four bytes.
//!
//! Loading is two steps so that weights can be written as their bytes arrive, in any order:
//! [`GpuModel::allocate`] makes every buffer and launch from the header alone (so a model that
//! does not fit fails before anything is downloaded), then [`GpuModel::fill`] writes each
//! tensor.

use std::collections::BTreeMap;

use hearth_core::gguf::{ByteSource, Gguf, GgufFile, TensorInfo};
use hearth_core::model::arch::names;
use hearth_core::model::{ModelError, ModelSpec, RopeStyle};
use hearth_core::quant::{dequantize, GgmlType};

use crate::kernels::{
    self, uniform, AttnParams, Dispatch, Kernels, NormParams, Output, RopeParams, Step, Steps,
    TopLaunches, TOP_K,
};
use crate::weights::GpuMatrix;
use crate::{Gpu, GpuError};

/// Tokens whose steps share one command buffer while a prompt runs.
const CHUNK: usize = 64;

/// One launch of a prompt chunk's plan.
enum PromptOp {
    /// Over the whole chunk, bound to its first step.
    Chunk(Dispatch),
    /// Once per token, bound to that token's step, in token order (rope, whose table row and
    /// cache row are the token's).
    PerToken(Vec<Dispatch>),
}

/// What a run leaves to read back after the last token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readback {
    /// The most likely token's id.
    Greedy,
    /// The [`TOP_K`] most likely tokens and their logits.
    Top,
    /// Every logit.
    Logits,
}

pub struct GpuModel {
    pub spec: ModelSpec,
    gpu: Gpu,
    steps: Steps,
    /// Embedding lookups, one per part of the table: (first row, rows, launch).
    embed: Vec<(usize, usize, Dispatch)>,
    layers: Vec<Dispatch>,
    prompt: Vec<PromptOp>,
    head: Vec<Dispatch>,
    argmax: Dispatch,
    top: TopLaunches,
    top_read: wgpu::Buffer,
    logits: wgpu::Buffer,
    logits_read: wgpu::Buffer,
    result: wgpu::Buffer,
    result_read: wgpu::Buffer,
    len: usize,
    max_ctx: usize,
    weight_bytes_per_token: u64,
    held_bytes: u64,
    /// Tensors whose bytes have not been written yet, by name.
    pending: BTreeMap<String, Pending>,
}

/// Where a tensor's bytes go once they arrive.
enum Target {
    /// Repacked into a matrix's buffers.
    Matrix(GpuMatrix),
    /// Dequantized to f32.
    Vector(wgpu::Buffer),
    /// Llama 3's rope frequency factors, which shape the rope table.
    RopeTable(wgpu::Buffer),
}

/// A tensor whose buffers exist but whose bytes have not been written yet.
struct Pending {
    ty: GgmlType,
    n_elements: usize,
    n_bytes: u64,
    target: Target,
}

fn dequantized(name: &str, ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, GpuError> {
    let mut out = vec![0.0; n];
    dequantize(ty, bytes, &mut out).map_err(|source| ModelError::Quant {
        name: name.to_string(),
        source,
    })?;
    Ok(out)
}

/// The rope (cos, sin) table for positions `0..max_ctx`, computed as the CPU reference does.
fn rope_table(spec: &ModelSpec, freqs: Option<&[f32]>, max_ctx: usize) -> Vec<f32> {
    let half = spec.rope_dim / 2;
    let mut out = Vec::with_capacity(max_ctx * half * 2);
    for pos in 0..max_ctx {
        for i in 0..half {
            let mut theta = (spec.rope_base as f64).powf(-2.0 * i as f64 / spec.rope_dim as f64);
            if let Some(f) = freqs {
                theta /= f[i] as f64;
            }
            let angle = pos as f64 * spec.rope_freq_scale as f64 * theta;
            out.push(angle.cos() as f32);
            out.push(angle.sin() as f32);
        }
    }
    out
}

/// Allocates buffers, counts the bytes they hold, and notes which tensor fills which.
struct Held<'a> {
    gpu: &'a Gpu,
    header: &'a Gguf,
    bytes: u64,
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

    /// Tensor `name` of the header.
    fn info(&self, name: &str) -> Result<&'a TensorInfo, GpuError> {
        Ok(self
            .header
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?)
    }

    /// Notes that tensor `name` fills `target`.
    fn expect(&mut self, name: &str, target: Target) -> Result<(), GpuError> {
        let info = self.info(name)?;
        let pending = Pending {
            ty: info.ty,
            n_elements: info.n_elements() as usize,
            n_bytes: info.n_bytes,
            target,
        };
        self.pending.insert(name.to_string(), pending);
        Ok(())
    }

    /// A weight matrix, to be filled with tensor `name`.
    fn matrix(&mut self, name: &str) -> Result<GpuMatrix, GpuError> {
        let info = self.info(name)?;
        let cols = info.dims[0] as usize;
        let rows = (info.n_elements() / info.dims[0].max(1)) as usize;
        let m = GpuMatrix::allocate(self.gpu, name, info.ty, rows, cols)?;
        self.bytes += m.bytes();
        self.expect(name, Target::Matrix(m.clone()))?;
        Ok(m)
    }

    /// An f32 vector, to be filled with tensor `name`.
    fn vector(&mut self, name: &str) -> Result<wgpu::Buffer, GpuError> {
        let b = self.scratch(self.info(name)?.n_elements() as usize);
        self.expect(name, Target::Vector(b.clone()))?;
        Ok(b)
    }
}

impl GpuModel {
    /// Loads a model for up to `max_ctx` positions (at most its context length), streaming
    /// the weights into GPU buffers one tensor at a time, in file order.
    pub async fn load<S: ByteSource>(
        gpu: &Gpu,
        file: &GgufFile<S>,
        max_ctx: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, GpuError> {
        let mut model = Self::allocate(gpu, &file.header, max_ctx).await?;
        let mut tensors: Vec<_> = file
            .header
            .tensors()
            .iter()
            .filter(|t| model.pending.contains_key(&t.name))
            .collect();
        tensors.sort_by_key(|t| t.offset);
        let total: u64 = tensors.iter().map(|t| t.n_bytes).sum();
        let mut loaded = 0;
        for t in tensors {
            let bytes = file.tensor_bytes(t).map_err(ModelError::from)?;
            model.fill(&t.name, &bytes)?;
            loaded += t.n_bytes;
            progress(loaded, total);
        }
        gpu.finish().await?;
        Ok(model)
    }

    /// Makes every buffer and launch of the model described by `header`, for up to `max_ctx`
    /// positions; the weights are then written with [`GpuModel::fill`]. Fails here, before any
    /// weight is read, when the device cannot hold the model.
    pub async fn allocate(gpu: &Gpu, header: &Gguf, max_ctx: usize) -> Result<Self, GpuError> {
        let spec = ModelSpec::from_gguf(header)?;
        spec.check_tensors(header)?;
        let max_ctx = max_ctx.min(spec.context_length).max(1);
        gpu.scoped(|| Self::build(gpu, header, spec, max_ctx))
            .await?
    }

    fn build(gpu: &Gpu, header: &Gguf, spec: ModelSpec, max_ctx: usize) -> Result<Self, GpuError> {
        let s = &spec;
        let types: Vec<GgmlType> = s
            .expected_tensors()
            .iter()
            .filter_map(|(n, _)| header.tensor(n))
            .map(|t| t.ty)
            .collect();
        let kernels = Kernels::new(gpu, &types)?;

        if s.head_dim_v > kernels::MAX_HEAD_DIM_V {
            return Err(ModelError::BadHyperParameter(format!(
                "value heads of {} dimensions (the GPU engine takes up to {})",
                s.head_dim_v,
                kernels::MAX_HEAD_DIM_V
            ))
            .into());
        }
        let f16_kv = gpu.paths.f16_kv;
        let kv_value_bytes = if f16_kv { 2 } else { 4 };
        let kv_bytes = (max_ctx * s.k_dim().max(s.v_dim()) * kv_value_bytes) as u64;
        if kv_bytes > gpu.max_binding {
            return Err(GpuError::TooLarge {
                what: format!("the KV cache of one layer for {max_ctx} positions"),
                bytes: kv_bytes,
                limit: gpu.max_binding,
            });
        }

        let k = &kernels;
        let mut b = Held {
            gpu,
            header,
            bytes: 0,
            pending: BTreeMap::new(),
        };
        // Activations: one row per token of a chunk (decode uses row 0).
        let x = b.scratch(CHUNK * s.n_embd);
        let h = b.scratch(CHUNK * s.n_embd);
        let q = b.scratch(CHUNK * s.q_dim());
        let att = b.scratch(CHUNK * s.n_head * s.head_dim_v);
        let ffn = b.scratch(CHUNK * s.n_ff);
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
        let steps = Steps::new(gpu, &kernels, CHUNK);

        let token_embd = b.matrix(names::TOKEN_EMBD)?;
        let embed = k.embed_launches(gpu, &token_embd, &x)?;
        let output_norm = b.vector(names::OUTPUT_NORM)?;
        let output = if s.tied_output {
            None
        } else {
            Some(b.matrix(names::OUTPUT)?)
        };
        let table = if s.has_rope_freqs {
            // Written once the factors arrive.
            let t = b.scratch(max_ctx * s.rope_dim);
            b.expect(names::ROPE_FREQS, Target::RopeTable(t.clone()))?;
            t
        } else {
            b.f32s(&rope_table(s, None, max_ctx))
        };
        let attn_params = uniform(
            gpu,
            &AttnParams {
                n_head: s.n_head as u32,
                group: (s.n_head / s.n_head_kv) as u32,
                head_dim: s.head_dim as u32,
                head_dim_v: s.head_dim_v as u32,
                k_dim: s.k_dim() as u32,
                v_dim: s.v_dim() as u32,
                _pad: 0,
                scale: 1.0 / (s.head_dim as f32).sqrt(),
            },
        );
        let rope_params = RopeParams {
            head_dim: s.head_dim as u32,
            rope_dim: s.rope_dim as u32,
            neox: (s.rope_style == RopeStyle::Neox) as u32,
            has_norm: 0,
            eps: s.rms_eps,
            pos_stride: 0,
            row_stride: s.q_dim() as u32,
            _pad: 0,
        };
        // K is roped where it lies: in the cache (f32), or in its chunk row before it is
        // rounded into the cache (f16).
        let k_rope_params = RopeParams {
            pos_stride: if f16_kv { 0 } else { s.k_dim() as u32 },
            row_stride: if f16_kv { s.k_dim() as u32 } else { 0 },
            ..rope_params
        };
        // The f16 path's f32 K and V rows of a chunk.
        let kv_rows = f16_kv.then(|| (b.scratch(CHUNK * s.k_dim()), b.scratch(CHUNK * s.v_dim())));
        let norm_params = NormParams {
            n: s.n_embd as u32,
            eps: s.rms_eps,
            step_row: 0,
            _pad: 0,
        };
        let mut layers = Vec::new();
        let mut prompt = Vec::new();
        let mut weight_bytes = 0;
        for l in 0..s.n_layer {
            let n = |what: &str| names::layer(l, what);
            let opt = |b: &mut Held,
                       present: bool,
                       name: &str|
             -> Result<Option<wgpu::Buffer>, GpuError> {
                Ok(if present { Some(b.vector(name)?) } else { None })
            };
            let attn_norm = b.vector(&n("attn_norm.weight"))?;
            let ffn_norm = b.vector(&n("ffn_norm.weight"))?;
            let bq = opt(&mut b, s.has_qkv_bias, &n("attn_q.bias"))?;
            let bk = opt(&mut b, s.has_qkv_bias, &n("attn_k.bias"))?;
            let bv = opt(&mut b, s.has_qkv_bias, &n("attn_v.bias"))?;
            let q_norm = opt(&mut b, s.has_qk_norm, &n("attn_q_norm.weight"))?;
            let k_norm = opt(&mut b, s.has_qk_norm, &n("attn_k_norm.weight"))?;
            // f16 values are stored two to a word.
            let cache = |b: &mut Held, n: usize| b.scratch(n.div_ceil(4 / kv_value_bytes));
            let kc = cache(&mut b, max_ctx * s.k_dim());
            let vc = cache(&mut b, max_ctx * s.v_dim());
            // Where the K and V products go: the cache at the token's position, or a row of
            // the f16 path's staging buffers.
            let (k_out, v_out, k_stride, v_stride) = match &kv_rows {
                Some((kr, vr)) => (kr, vr, 0, 0),
                None => (&kc, &vc, s.k_dim(), s.v_dim()),
            };
            let mats: Vec<GpuMatrix> = [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ]
            .iter()
            .map(|m| b.matrix(&n(&format!("{m}.weight"))))
            .collect::<Result<_, _>>()?;
            let [wq, wk, wv, wo, gate, up, down] = &mats[..] else {
                unreachable!("seven matrices per layer")
            };
            weight_bytes += mats.iter().map(GpuMatrix::bytes).sum::<u64>();
            // The layer's products, as (matrix, input, output, bias, mode, KV cache stride):
            // before attention, then after it.
            let before = [
                (wq, &h, &q, bq.as_ref(), Output::Store, 0),
                (wk, &h, k_out, bk.as_ref(), Output::Store, k_stride),
                (wv, &h, v_out, bv.as_ref(), Output::Store, v_stride),
            ];
            let after = [
                (gate, &h, &ffn, None, Output::Store, 0),
                (up, &h, &ffn, None, Output::SiluGate, 0),
                (down, &ffn, &x, None, Output::Add, 0),
            ];
            let per_token = vec![
                k.rope_launch(gpu, rope_params, s.n_head, &q, q_norm.as_ref(), &table),
                k.rope_launch(
                    gpu,
                    k_rope_params,
                    s.n_head_kv,
                    k_out,
                    k_norm.as_ref(),
                    &table,
                ),
            ];
            let store = |tokens| {
                kv_rows.as_ref().map(|(kr, vr)| {
                    k.kv_store_launch(gpu, s.k_dim(), s.v_dim(), tokens, [kr, vr, &kc, &vc])
                })
            };
            let attention = |tokens| {
                k.attention_launch(gpu, &attn_params, s.n_head, tokens, [&q, &kc, &vc, &att])
            };

            layers.push(k.rms_norm_launch(gpu, norm_params, 1, &x, &attn_norm, &h));
            for (m, input, out, bias, mode, stride) in before {
                layers.extend(k.matvec_launches(gpu, m, input, out, bias, mode, stride)?);
            }
            layers.extend(per_token.iter().cloned());
            layers.extend(store(1));
            layers.push(attention(1));
            layers.extend(k.matvec_launches(gpu, wo, &att, &x, None, Output::Add, 0)?);
            layers.push(k.rms_norm_launch(gpu, norm_params, 1, &x, &ffn_norm, &h));
            for (m, input, out, bias, mode, stride) in after {
                layers.extend(k.matvec_launches(gpu, m, input, out, bias, mode, stride)?);
            }

            let chunk = |d: Vec<Dispatch>| d.into_iter().map(PromptOp::Chunk);
            let norm = |w| k.rms_norm_launch(gpu, norm_params, CHUNK, &x, w, &h);
            prompt.push(PromptOp::Chunk(norm(&attn_norm)));
            for (m, input, out, bias, mode, stride) in before {
                prompt.extend(chunk(
                    k.matmul_launches(gpu, m, CHUNK, input, out, bias, mode, stride)?,
                ));
            }
            prompt.push(PromptOp::PerToken(per_token));
            prompt.extend(store(CHUNK).map(PromptOp::Chunk));
            prompt.push(PromptOp::Chunk(attention(CHUNK)));
            prompt.extend(chunk(k.matmul_launches(
                gpu,
                wo,
                CHUNK,
                &att,
                &x,
                None,
                Output::Add,
                0,
            )?));
            prompt.push(PromptOp::Chunk(norm(&ffn_norm)));
            for (m, input, out, bias, mode, stride) in after {
                prompt.extend(chunk(
                    k.matmul_launches(gpu, m, CHUNK, input, out, bias, mode, stride)?,
                ));
            }
        }

        let head_matrix = output.as_ref().unwrap_or(&token_embd);
        // The output norm reads the row of the step it is bound to: a chunk's last token.
        let head_norm = NormParams {
            step_row: 1,
            ..norm_params
        };
        let mut head = vec![k.rms_norm_launch(gpu, head_norm, 1, &x, &output_norm, &h)];
        head.extend(k.matvec_launches(gpu, head_matrix, &h, &logits, None, Output::Store, 0)?);
        weight_bytes += head_matrix.bytes();
        let argmax = k.argmax_launch(gpu, s.n_vocab, &logits, &result);
        let top = k.top_launches(gpu, s.n_vocab, &logits);
        let top_read = read_buffer((TOP_K * 8) as u64);
        let held_bytes = b.bytes
            + steps.bytes()
            + logits_read.size()
            + result_read.size()
            + top.result.size()
            + top_read.size();
        Ok(GpuModel {
            spec,
            gpu: gpu.clone(),
            steps,
            embed,
            layers,
            prompt,
            head,
            argmax,
            top,
            top_read,
            logits,
            logits_read,
            result,
            result_read,
            len: 0,
            max_ctx,
            weight_bytes_per_token: weight_bytes,
            held_bytes,
            pending: b.pending,
        })
    }

    /// Writes tensor `name`'s GGUF bytes where [`GpuModel::allocate`] put its buffers. Each
    /// tensor is written once; the writes are queued, so the bytes can be dropped at once.
    pub fn fill(&mut self, name: &str, bytes: &[u8]) -> Result<(), GpuError> {
        let p = self
            .pending
            .remove(name)
            .ok_or_else(|| GpuError::UnexpectedTensor(name.to_string()))?;
        if bytes.len() as u64 != p.n_bytes {
            return Err(GpuError::TensorSize {
                got: bytes.len() as u64,
                want: p.n_bytes,
            });
        }
        let queue = &self.gpu.queue;
        match p.target {
            Target::Matrix(m) => m.write(&self.gpu, bytes)?,
            Target::Vector(buffer) => {
                let v = dequantized(name, p.ty, bytes, p.n_elements)?;
                queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&v));
            }
            Target::RopeTable(buffer) => {
                let freqs = dequantized(name, p.ty, bytes, p.n_elements)?;
                let table = rope_table(&self.spec, Some(&freqs), self.max_ctx);
                queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&table));
            }
        }
        Ok(())
    }

    /// Names of the tensors [`GpuModel::fill`] still waits for.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.pending.keys().map(String::as_str)
    }

    /// Positions held in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions the KV cache holds.
    pub fn capacity(&self) -> usize {
        self.max_ctx
    }

    /// Forgets every position from `len` on; later tokens overwrite them in place.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Weight bytes one decode step reads (every layer's matrices and the output head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.weight_bytes_per_token
    }

    /// Bytes of GPU memory this model holds: weights, KV cache, activations and read-back.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Records and submits `tokens` at the next positions; the last token's logits end in
    /// `self.logits`, and what `readback` asks for in its read-back buffer.
    fn run(&mut self, tokens: &[u32], readback: Readback) -> Result<(), GpuError> {
        let s = &self.spec;
        if tokens.is_empty() {
            return Err(GpuError::NoTokens);
        }
        if !self.pending.is_empty() {
            return Err(GpuError::NotLoaded(self.pending.len()));
        }
        if self.len + tokens.len() > self.max_ctx {
            return Err(ModelError::ContextFull {
                len: self.len + tokens.len(),
                max: self.max_ctx,
            }
            .into());
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= s.n_vocab) {
            return Err(ModelError::TokenOutOfRange {
                id,
                n_vocab: s.n_vocab,
            }
            .into());
        }
        let n_chunks = tokens.len().div_ceil(CHUNK);
        for (c, chunk) in tokens.chunks(CHUNK).enumerate() {
            // A single token (a decode step) runs the decode plan, row 0.
            let batched = chunk.len() > 1;
            let steps: Vec<Step> = chunk
                .iter()
                .enumerate()
                .map(|(t, &token)| Step {
                    pos: (self.len + t) as u32,
                    token,
                    row: if batched { t as u32 } else { 0 },
                    count: chunk.len() as u32,
                })
                .collect();
            self.steps.write(&self.gpu, &steps);
            let last = c + 1 == n_chunks;
            let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for (t, &token) in chunk.iter().enumerate() {
                    self.steps.set(&mut pass, t);
                    let (_, _, embed) = self
                        .embed
                        .iter()
                        .find(|(first, rows, _)| (*first..first + rows).contains(&(token as usize)))
                        .expect("the embedding parts cover the vocabulary");
                    embed.record(&mut pass);
                    if !batched {
                        for d in &self.layers {
                            d.record(&mut pass);
                        }
                    }
                }
                if batched {
                    for op in &self.prompt {
                        match op {
                            PromptOp::Chunk(d) => {
                                self.steps.set(&mut pass, 0);
                                d.record(&mut pass);
                            }
                            PromptOp::PerToken(ds) => {
                                for t in 0..chunk.len() {
                                    self.steps.set(&mut pass, t);
                                    for d in ds {
                                        d.record(&mut pass);
                                    }
                                }
                            }
                        }
                    }
                }
                if last {
                    self.steps.set(&mut pass, chunk.len() - 1);
                    for d in &self.head {
                        d.record(&mut pass);
                    }
                    match readback {
                        Readback::Greedy => self.argmax.record(&mut pass),
                        Readback::Top => {
                            for d in &self.top.launches {
                                d.record(&mut pass);
                            }
                        }
                        Readback::Logits => {}
                    }
                }
            }
            if last {
                let (src, dst) = match readback {
                    Readback::Greedy => (&self.result, &self.result_read),
                    Readback::Top => (&self.top.result, &self.top_read),
                    Readback::Logits => (&self.logits, &self.logits_read),
                };
                encoder.copy_buffer_to_buffer(src, 0, dst, 0, dst.size());
            }
            self.gpu.queue.submit([encoder.finish()]);
            self.len += chunk.len();
        }
        Ok(())
    }

    /// Runs `tokens` at the next positions and returns the logits of the last one.
    pub async fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        self.run(tokens, Readback::Logits)?;
        self.read_logits().await
    }

    /// The logits of the last token run, read back again (after [`GpuModel::forward_top`]
    /// left a sampler short of candidates).
    pub async fn last_logits(&mut self) -> Result<Vec<f32>, GpuError> {
        if self.len == 0 {
            return Err(GpuError::NoTokens);
        }
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        let n = self.logits_read.size();
        encoder.copy_buffer_to_buffer(&self.logits, 0, &self.logits_read, 0, n);
        self.gpu.queue.submit([encoder.finish()]);
        self.read_logits().await
    }

    async fn read_logits(&self) -> Result<Vec<f32>, GpuError> {
        let n = self.logits_read.size();
        self.gpu
            .read(&self.logits_read, n, |b| {
                bytemuck::cast_slice::<u8, f32>(b).to_vec()
            })
            .await
    }

    /// Runs `tokens` and returns the [`TOP_K`] most likely next tokens with their logits, most
    /// likely first (ties: the lower id first), reading back only those.
    pub async fn forward_top(&mut self, tokens: &[u32]) -> Result<Vec<(u32, f32)>, GpuError> {
        self.run(tokens, Readback::Top)?;
        let n_vocab = self.spec.n_vocab;
        self.gpu
            .read(&self.top_read, self.top_read.size(), |b| {
                bytemuck::cast_slice::<u8, u32>(b)
                    .chunks_exact(2)
                    .map(|p| (p[1], f32::from_bits(p[0])))
                    // Fewer tokens than pairs: the rest is padding.
                    .filter(|&(id, _)| (id as usize) < n_vocab)
                    .collect()
            })
            .await
    }

    /// Runs `tokens` and returns the most likely next token, reading back only its id.
    pub async fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32, GpuError> {
        self.run(tokens, Readback::Greedy)?;
        self.gpu
            .read(&self.result_read, 16, |b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            })
            .await
    }
}
