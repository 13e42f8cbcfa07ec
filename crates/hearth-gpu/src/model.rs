//! A transformer on the GPU: weights, KV cache and one plan of kernel launches, built once.
//!
//! A step runs one token: embedding, every layer, and (for the last token of a call) the output
//! norm, head and argmax. All bind groups are made at load; a step's only per-token inputs are
//! its position and token id, a 16-byte [`Step`] at a dynamic offset, so the steps of a whole
//! prompt chunk go into one command buffer and a decode step is one submission that reads back
//! four bytes.

use std::borrow::Cow;

use hearth_core::gguf::{ByteSource, GgufFile};
use hearth_core::model::arch::names;
use hearth_core::model::{ModelError, ModelSpec, RopeStyle};
use hearth_core::quant::{dequantize, GgmlType};

use crate::kernels::{
    self, uniform, AttnParams, Dispatch, Kernels, NormParams, Output, RopeParams, Step, Steps,
};
use crate::weights::GpuMatrix;
use crate::{Gpu, GpuError};

/// Tokens whose steps share one command buffer while a prompt runs.
const CHUNK: usize = 64;

pub struct GpuModel {
    pub spec: ModelSpec,
    gpu: Gpu,
    steps: Steps,
    /// Embedding lookups, one per part of the table: (first row, rows, launch).
    embed: Vec<(usize, usize, Dispatch)>,
    layers: Vec<Dispatch>,
    head: Vec<Dispatch>,
    argmax: Dispatch,
    logits: wgpu::Buffer,
    logits_read: wgpu::Buffer,
    result: wgpu::Buffer,
    result_read: wgpu::Buffer,
    len: usize,
    max_ctx: usize,
    weight_bytes_per_token: u64,
    held_bytes: u64,
}

/// A tensor's type, rows, columns and GGUF bytes.
type RawTensor<'a> = (GgmlType, usize, usize, Cow<'a, [u8]>);

/// Reads tensors one at a time, so no more than one is ever held in CPU memory.
struct Reader<'a, S> {
    file: &'a GgufFile<S>,
}

impl<S: ByteSource> Reader<'_, S> {
    fn raw(&self, name: &str) -> Result<RawTensor<'_>, ModelError> {
        let info = self
            .file
            .header
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let cols = info.dims[0] as usize;
        let rows = (info.n_elements() / info.dims[0].max(1)) as usize;
        Ok((info.ty, rows, cols, self.file.tensor_bytes(info)?))
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let (ty, rows, cols, bytes) = self.raw(name)?;
        let mut out = vec![0.0; rows * cols];
        dequantize(ty, &bytes, &mut out).map_err(|source| ModelError::Quant {
            name: name.to_string(),
            source,
        })?;
        Ok(out)
    }
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

/// Allocates buffers and counts the bytes they hold.
struct Held<'a> {
    gpu: &'a Gpu,
    bytes: u64,
}

impl Held<'_> {
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
}

impl GpuModel {
    /// Loads a model for up to `max_ctx` positions (at most its context length), streaming
    /// the weights into GPU buffers one tensor at a time.
    pub async fn load<S: ByteSource>(
        gpu: &Gpu,
        file: &GgufFile<S>,
        max_ctx: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, GpuError> {
        let spec = ModelSpec::from_gguf(&file.header)?;
        spec.check_tensors(&file.header)?;
        let max_ctx = max_ctx.min(spec.context_length).max(1);
        gpu.scoped(|| Self::build(gpu, file, spec, max_ctx, progress))
            .await?
    }

    fn build<S: ByteSource>(
        gpu: &Gpu,
        file: &GgufFile<S>,
        spec: ModelSpec,
        max_ctx: usize,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, GpuError> {
        let s = &spec;
        let expected = s.expected_tensors();
        let types: Vec<GgmlType> = expected
            .iter()
            .filter_map(|(n, _)| file.header.tensor(n))
            .map(|t| t.ty)
            .collect();
        let total: u64 = expected
            .iter()
            .filter_map(|(n, _)| file.header.tensor(n))
            .map(|t| t.n_bytes)
            .sum();
        let mut loaded = 0u64;
        let kernels = Kernels::new(gpu, &types)?;
        let rd = Reader { file };
        let mut matrix = |name: &str| -> Result<GpuMatrix, GpuError> {
            let (ty, rows, cols, bytes) = rd.raw(name)?;
            let m = GpuMatrix::upload(gpu, name, ty, rows, cols, &bytes)?;
            loaded += bytes.len() as u64;
            progress(loaded, total);
            Ok(m)
        };

        let kv_bytes = (max_ctx * s.k_dim().max(s.v_dim()) * 4) as u64;
        if kv_bytes > gpu.max_binding {
            return Err(GpuError::TooLarge {
                what: format!("the KV cache of one layer for {max_ctx} positions"),
                bytes: kv_bytes,
                limit: gpu.max_binding,
            });
        }

        let k = &kernels;
        let mut b = Held { gpu, bytes: 0 };
        let x = b.scratch(s.n_embd);
        let h = b.scratch(s.n_embd);
        let q = b.scratch(s.q_dim());
        let att = b.scratch(s.n_head * s.head_dim_v);
        let ffn = b.scratch(s.n_ff);
        let scores = b.scratch(s.n_head * max_ctx);
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

        let token_embd = matrix(names::TOKEN_EMBD)?;
        let embed = k.embed_launches(gpu, &token_embd, &x)?;
        let output_norm = b.f32s(&rd.vector(names::OUTPUT_NORM)?);
        let output = if s.tied_output {
            None
        } else {
            Some(matrix(names::OUTPUT)?)
        };
        let freqs = if s.has_rope_freqs {
            Some(rd.vector(names::ROPE_FREQS)?)
        } else {
            None
        };
        let table = b.f32s(&rope_table(s, freqs.as_deref(), max_ctx));
        let attn_params = uniform(
            gpu,
            &AttnParams {
                n_head: s.n_head as u32,
                group: (s.n_head / s.n_head_kv) as u32,
                head_dim: s.head_dim as u32,
                head_dim_v: s.head_dim_v as u32,
                k_dim: s.k_dim() as u32,
                v_dim: s.v_dim() as u32,
                max_ctx: max_ctx as u32,
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
            _pad: [0; 2],
        };
        let k_rope_params = RopeParams {
            pos_stride: s.k_dim() as u32,
            ..rope_params
        };
        let norm_params = NormParams {
            n: s.n_embd as u32,
            eps: s.rms_eps,
            _pad: [0; 2],
        };
        let mut layers = Vec::new();
        let mut weight_bytes = 0;
        for l in 0..s.n_layer {
            let n = |what: &str| names::layer(l, what);
            let opt = |b: &mut Held,
                       present: bool,
                       name: &str|
             -> Result<Option<wgpu::Buffer>, GpuError> {
                Ok(if present {
                    Some(b.f32s(&rd.vector(name)?))
                } else {
                    None
                })
            };
            let attn_norm = b.f32s(&rd.vector(&n("attn_norm.weight"))?);
            let ffn_norm = b.f32s(&rd.vector(&n("ffn_norm.weight"))?);
            let bq = opt(&mut b, s.has_qkv_bias, &n("attn_q.bias"))?;
            let bk = opt(&mut b, s.has_qkv_bias, &n("attn_k.bias"))?;
            let bv = opt(&mut b, s.has_qkv_bias, &n("attn_v.bias"))?;
            let q_norm = opt(&mut b, s.has_qk_norm, &n("attn_q_norm.weight"))?;
            let k_norm = opt(&mut b, s.has_qk_norm, &n("attn_k_norm.weight"))?;
            let kc = b.scratch(max_ctx * s.k_dim());
            let vc = b.scratch(max_ctx * s.v_dim());
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
            .map(|m| matrix(&n(&format!("{m}.weight"))))
            .collect::<Result<_, _>>()?;
            let [wq, wk, wv, wo, gate, up, down] = &mats[..] else {
                unreachable!("seven matrices per layer")
            };
            for m in &mats {
                b.bytes += m.bytes();
                weight_bytes += m.bytes();
            }
            layers.push(k.rms_norm_launch(gpu, norm_params, 1, &x, &attn_norm, &h));
            layers.extend(k.matvec_launches(gpu, wq, &h, &q, bq.as_ref(), Output::Store, 0)?);
            layers.extend(k.matvec_launches(
                gpu,
                wk,
                &h,
                &kc,
                bk.as_ref(),
                Output::Store,
                s.k_dim(),
            )?);
            layers.extend(k.matvec_launches(
                gpu,
                wv,
                &h,
                &vc,
                bv.as_ref(),
                Output::Store,
                s.v_dim(),
            )?);
            layers.push(k.rope_launch(gpu, rope_params, s.n_head, &q, q_norm.as_ref(), &table));
            layers.push(k.rope_launch(
                gpu,
                k_rope_params,
                s.n_head_kv,
                &kc,
                k_norm.as_ref(),
                &table,
            ));
            layers.push(k.attention_launch(
                gpu,
                &attn_params,
                s.n_head,
                [&q, &kc, &vc, &scores, &att],
            ));
            layers.extend(k.matvec_launches(gpu, wo, &att, &x, None, Output::Add, 0)?);
            layers.push(k.rms_norm_launch(gpu, norm_params, 1, &x, &ffn_norm, &h));
            layers.extend(k.matvec_launches(gpu, gate, &h, &ffn, None, Output::Store, 0)?);
            layers.extend(k.matvec_launches(gpu, up, &h, &ffn, None, Output::SiluGate, 0)?);
            layers.extend(k.matvec_launches(gpu, down, &ffn, &x, None, Output::Add, 0)?);
        }

        let head_matrix = output.as_ref().unwrap_or(&token_embd);
        let mut head = vec![k.rms_norm_launch(gpu, norm_params, 1, &x, &output_norm, &h)];
        head.extend(k.matvec_launches(gpu, head_matrix, &h, &logits, None, Output::Store, 0)?);
        weight_bytes += head_matrix.bytes();
        b.bytes += token_embd.bytes() + output.as_ref().map_or(0, |m| m.bytes());
        let argmax = k.argmax_launch(gpu, s.n_vocab, &logits, &result);
        let held_bytes = b.bytes + steps.bytes() + logits_read.size() + result_read.size();
        Ok(GpuModel {
            spec,
            gpu: gpu.clone(),
            steps,
            embed,
            layers,
            head,
            argmax,
            logits,
            logits_read,
            result,
            result_read,
            len: 0,
            max_ctx,
            weight_bytes_per_token: weight_bytes,
            held_bytes,
        })
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
    /// `self.logits` and, with `greedy`, their argmax in `self.result`. Returns what to read.
    fn run(&mut self, tokens: &[u32], greedy: bool) -> Result<(), GpuError> {
        let s = &self.spec;
        if tokens.is_empty() {
            return Err(GpuError::NoTokens);
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
            let steps: Vec<Step> = chunk
                .iter()
                .enumerate()
                .map(|(t, &token)| Step {
                    pos: (self.len + t) as u32,
                    token,
                    _pad: [0; 2],
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
                    for d in &self.layers {
                        d.record(&mut pass);
                    }
                }
                if last {
                    for d in &self.head {
                        d.record(&mut pass);
                    }
                    if greedy {
                        self.argmax.record(&mut pass);
                    }
                }
            }
            if last {
                if greedy {
                    encoder.copy_buffer_to_buffer(&self.result, 0, &self.result_read, 0, 16);
                } else {
                    encoder.copy_buffer_to_buffer(
                        &self.logits,
                        0,
                        &self.logits_read,
                        0,
                        self.logits_read.size(),
                    );
                }
            }
            self.gpu.queue.submit([encoder.finish()]);
            self.len += chunk.len();
        }
        Ok(())
    }

    /// Runs `tokens` at the next positions and returns the logits of the last one.
    pub async fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        self.run(tokens, false)?;
        let n = self.logits_read.size();
        self.gpu
            .read(&self.logits_read, n, |b| {
                bytemuck::cast_slice::<u8, f32>(b).to_vec()
            })
            .await
    }

    /// Runs `tokens` and returns the most likely next token, reading back only its id.
    pub async fn forward_greedy(&mut self, tokens: &[u32]) -> Result<u32, GpuError> {
        self.run(tokens, true)?;
        self.gpu
            .read(&self.result_read, 16, |b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            })
            .await
    }
}
