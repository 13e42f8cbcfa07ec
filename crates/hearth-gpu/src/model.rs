//! A transformer on the GPU: weights, per-sequence state (KV cache and recurrent state) and
//! one plan of kernel launches, lowered once from the model's description ([`crate::plan`]).
//!
//! A decode step runs one token: embedding, every layer, then the output norm, head and argmax.
//! A prompt runs in chunks of up to [`CHUNK`] tokens layer by layer: the matrix products take
//! the whole chunk at once (each weight decoded once per tile of tokens), and so do rope (a
//! workgroup per head and token) and attention (flash-style); a delta-net layer's delta rule
//! takes the chunked (WY) form, its state-free part in parallel over sub-chunks and
//! then one walk over the sub-chunks. All bind groups are made at load; a step's only
//! per-token inputs are its position, token id and row in the chunk, a 16-byte [`Step`] at a dynamic offset, so a whole chunk goes
//! into one command buffer and a decode step is one submission that reads back four bytes.
//!
//! Loading is two steps so that weights can be written as their bytes arrive, in any order:
//! [`GpuModel::allocate`] makes every buffer and launch from the header alone (so a model that
//! does not fit fails before anything is downloaded), then [`GpuModel::fill`] writes each
//! tensor.

use hearth_core::gguf::{ByteSource, Gguf, GgufFile};
use hearth_core::model::{ModelError, ModelSpec};
use hearth_core::quant::dequantize;

use crate::kernels::Step;
use crate::plan::{self, kv_slots, Plan, Target, CHUNK};
use crate::{Gpu, GpuError};

/// What a run leaves to read back after the last token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Readback {
    /// The most likely token's id, among those in the token mask where `masked`.
    Greedy { masked: bool },
    /// The [`crate::kernels::TOP_K`] most likely tokens and their logits, among those in the
    /// token mask where `masked`.
    Top { masked: bool },
    /// Every logit.
    Logits,
}

pub struct GpuModel {
    pub spec: ModelSpec,
    gpu: Gpu,
    plan: Plan,
    len: usize,
    max_ctx: usize,
}

fn dequantized(
    name: &str,
    ty: hearth_core::quant::GgmlType,
    bytes: &[u8],
    n: usize,
) -> Result<Vec<f32>, GpuError> {
    let mut out = vec![0.0; n];
    dequantize(ty, bytes, &mut out).map_err(|source| ModelError::Quant {
        name: name.to_string(),
        source,
    })?;
    Ok(out)
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
            .filter(|t| model.plan.pending.contains_key(&t.name))
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
        let plan = plan::build(gpu, header, &spec, max_ctx)?;
        Ok(GpuModel {
            spec,
            gpu: gpu.clone(),
            plan,
            len: 0,
            max_ctx,
        })
    }

    /// Writes tensor `name`'s GGUF bytes where [`GpuModel::allocate`] put its buffers. Each
    /// tensor is written once; the writes are queued, so the bytes can be dropped at once.
    pub fn fill(&mut self, name: &str, bytes: &[u8]) -> Result<(), GpuError> {
        let p = self
            .plan
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
            Target::Dealt { block, parts } => {
                // Deal the rows out in blocks, in turn, to each part.
                let row_bytes = bytes.len() / (parts[0].rows * parts.len());
                let mut dealt = vec![Vec::with_capacity(bytes.len() / parts.len()); parts.len()];
                for (i, rows) in bytes.chunks(block * row_bytes).enumerate() {
                    dealt[i % parts.len()].extend_from_slice(rows);
                }
                for (m, data) in parts.iter().zip(&dealt) {
                    m.write(&self.gpu, data)?;
                }
            }
            Target::Split(parts) => {
                let rows: usize = parts.iter().map(|m| m.rows).sum();
                let row_bytes = bytes.len() / rows;
                let mut rest = bytes;
                for m in &parts {
                    let (part, tail) = rest.split_at(m.rows * row_bytes);
                    m.write(&self.gpu, part)?;
                    rest = tail;
                }
            }
            Target::SplitVector(parts) => {
                let v = dequantized(name, p.ty, bytes, p.n_elements)?;
                let mut rest = v.as_slice();
                for (buffer, n) in parts {
                    let (part, tail) = rest.split_at(n);
                    queue.write_buffer(&buffer, 0, bytemuck::cast_slice(part));
                    rest = tail;
                }
            }
            Target::Vector { buffer, offset } => {
                let v = dequantized(name, p.ty, bytes, p.n_elements)?;
                queue.write_buffer(&buffer, (offset * 4) as u64, bytemuck::cast_slice(&v));
            }
            Target::RopeTables(tables) => {
                let freqs = dequantized(name, p.ty, bytes, p.n_elements)?;
                for (rope, buffer) in tables {
                    let table = plan::rope_table(&rope, Some(&freqs), self.max_ctx);
                    queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&table));
                }
            }
        }
        Ok(())
    }

    /// Names of the tensors [`GpuModel::fill`] still waits for.
    pub fn pending(&self) -> impl Iterator<Item = &str> {
        self.plan.pending.keys().map(String::as_str)
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
    /// Keeps at most the first `len` positions and returns how many it kept: `len` where
    /// every layer is attention (later tokens overwrite the cache in place); with recurrent
    /// layers, the latest [`GpuModel::checkpoint`] at or before `len`, restored (0 without
    /// one); 0 where a sliding window's ring no longer holds what `len` needs. The caller runs
    /// the tokens from there on again.
    pub fn truncate(&mut self, len: usize) -> usize {
        // Once a sliding window's ring has overwritten what `len` needs, nothing is kept.
        let kept = self
            .spec
            .attention_layers()
            .all(|a| a.cache_keeps(kv_slots(a, self.max_ctx), self.len, len));
        let len = if kept { len } else { 0 };
        if len < self.len {
            self.len = if self.plan.recurrent.is_empty() {
                len
            } else {
                self.plan.recurrent.restore(&self.gpu, len)
            };
        }
        self.len
    }

    /// Snapshots the recurrent state here, so that [`GpuModel::truncate`] can come back to
    /// this position; nothing to do for attention alone.
    pub fn checkpoint(&mut self) {
        self.plan.recurrent.checkpoint(&self.gpu, self.len);
    }

    /// Bytes of per-sequence state: (KV cache, recurrent state with its snapshots).
    pub fn state_bytes(&self) -> (u64, u64) {
        let kv_bytes = if self.gpu.paths.f16_kv { 2 } else { 4 };
        let (kv, _) = self.spec.state_bytes(self.max_ctx, kv_bytes, CHUNK);
        (kv, self.plan.recurrent.bytes())
    }

    /// Runs only the recurrence (every delta-net layer's convolution and delta-rule launches,
    /// on whatever their inputs hold) `runs` times in one submission, and waits: a decode
    /// step's where `chunk` is false, else a whole prompt chunk's ([`CHUNK`] tokens). Timed
    /// against decode steps or prefill, the share of their time the recurrence takes. The state
    /// it leaves belongs to no sequence, so the model is then cut back to its latest checkpoint
    /// as by [`GpuModel::truncate`]; returns the positions kept. Nothing to run (and nothing
    /// lost) where every layer is attention.
    pub async fn run_recurrence(&mut self, runs: usize, chunk: bool) -> Result<usize, GpuError> {
        let (launches, count) = if chunk {
            (&self.plan.recurrence.prompt, CHUNK as u32)
        } else {
            (&self.plan.recurrence.decode, 1)
        };
        if launches.is_empty() {
            return Ok(self.len);
        }
        let step = Step {
            pos: self.len as u32,
            token: 0,
            row: 0,
            count,
        };
        self.plan.steps.write(&self.gpu, &[step]);
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            self.plan.steps.set(&mut pass, 0);
            for _ in 0..runs {
                for d in launches {
                    d.record(&mut pass);
                }
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
        self.gpu.finish().await?;
        self.len = self.plan.recurrent.restore(&self.gpu, self.len);
        Ok(self.len)
    }

    /// Weight bytes one decode step reads (every layer's matrices and the output head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        self.plan.weight_bytes_per_token
    }

    /// Bytes of GPU memory this model holds: weights, KV cache, activations and read-back.
    pub fn held_bytes(&self) -> u64 {
        self.plan.held_bytes
    }

    /// Records and submits `tokens` at the next positions; the last token's logits end in
    /// `self.plan.logits`, and what `readback` asks for in its read-back buffer.
    fn run(&mut self, tokens: &[u32], readback: Readback) -> Result<(), GpuError> {
        let s = &self.spec;
        if tokens.is_empty() {
            return Err(GpuError::NoTokens);
        }
        if !self.plan.pending.is_empty() {
            return Err(GpuError::NotLoaded(self.plan.pending.len()));
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
            self.plan.steps.write(&self.gpu, &steps);
            let last = c + 1 == n_chunks;
            let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                for (t, &token) in chunk.iter().enumerate() {
                    self.plan.steps.set(&mut pass, t);
                    let (_, _, embed) = self
                        .plan
                        .embed
                        .iter()
                        .find(|(first, rows, _)| (*first..first + rows).contains(&(token as usize)))
                        .expect("the embedding parts cover the vocabulary");
                    embed.record(&mut pass);
                    let pos = self.len + t;
                    let position = self
                        .plan
                        .positions
                        .iter()
                        .find(|(first, rows, _)| (*first..first + rows).contains(&pos));
                    if let Some((_, _, add)) = position {
                        add.record(&mut pass);
                    }
                    if !batched {
                        for d in &self.plan.decode {
                            d.record(&mut pass);
                        }
                    }
                }
                if batched {
                    self.plan.steps.set(&mut pass, 0);
                    for d in &self.plan.prompt {
                        d.record(&mut pass);
                    }
                }
                if last {
                    self.plan.steps.set(&mut pass, chunk.len() - 1);
                    for d in &self.plan.head {
                        d.record(&mut pass);
                    }
                    match readback {
                        Readback::Greedy { masked } => {
                            self.plan.argmax[masked as usize].record(&mut pass)
                        }
                        Readback::Top { masked } => {
                            for d in self.plan.top.stages(masked) {
                                d.record(&mut pass);
                            }
                        }
                        Readback::Logits => {}
                    }
                }
            }
            if last {
                let (src, dst) = match readback {
                    Readback::Greedy { .. } => (&self.plan.result, &self.plan.result_read),
                    Readback::Top { .. } => (&self.plan.top.result, &self.plan.top_read),
                    Readback::Logits => (&self.plan.logits, &self.plan.logits_read),
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
        let n = self.plan.logits_read.size();
        encoder.copy_buffer_to_buffer(&self.plan.logits, 0, &self.plan.logits_read, 0, n);
        self.gpu.queue.submit([encoder.finish()]);
        self.read_logits().await
    }

    async fn read_logits(&self) -> Result<Vec<f32>, GpuError> {
        let n = self.plan.logits_read.size();
        self.gpu
            .read(&self.plan.logits_read, n, |b| {
                bytemuck::cast_slice::<u8, f32>(b).to_vec()
            })
            .await
    }

    /// Runs `tokens` and returns the [`crate::kernels::TOP_K`] most likely next tokens with
    /// their logits, most likely first (ties: the lower id first), reading back only those.
    /// With `mask` (a bit per token, as [`hearth_core::constrain::TokenMask::words`]), tokens
    /// outside it count as -inf.
    pub async fn forward_top(
        &mut self,
        tokens: &[u32],
        mask: Option<&[u32]>,
    ) -> Result<Vec<(u32, f32)>, GpuError> {
        self.write_mask(mask);
        self.run(
            tokens,
            Readback::Top {
                masked: mask.is_some(),
            },
        )?;
        let n_vocab = self.spec.n_vocab;
        self.gpu
            .read(&self.plan.top_read, self.plan.top_read.size(), |b| {
                bytemuck::cast_slice::<u8, u32>(b)
                    .chunks_exact(2)
                    .map(|p| (p[1], f32::from_bits(p[0])))
                    // Fewer tokens than pairs: the rest is padding.
                    .filter(|&(id, _)| (id as usize) < n_vocab)
                    .collect()
            })
            .await
    }

    /// Writes an output format's mask (a bit per token, as
    /// [`hearth_core::constrain::TokenMask::words`]) for the step about to run.
    fn write_mask(&self, mask: Option<&[u32]>) {
        if let Some(words) = mask {
            let buffer = &self.plan.mask;
            let mut bytes = vec![0u8; buffer.size() as usize];
            let n = (words.len() * 4).min(bytes.len());
            bytes[..n].copy_from_slice(&bytemuck::cast_slice(words)[..n]);
            self.gpu.queue.write_buffer(buffer, 0, &bytes);
        }
    }

    /// Runs `tokens` and returns the most likely next token (within `mask`, as for
    /// [`GpuModel::forward_top`]), reading back only its id.
    pub async fn forward_greedy(
        &mut self,
        tokens: &[u32],
        mask: Option<&[u32]>,
    ) -> Result<u32, GpuError> {
        self.write_mask(mask);
        self.run(
            tokens,
            Readback::Greedy {
                masked: mask.is_some(),
            },
        )?;
        self.gpu
            .read(&self.plan.result_read, 16, |b| {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            })
            .await
    }
}
