//! The CPU reference forward pass: f32 math on weights decoded row by row, written for
//! clarity. It is the oracle for every GPU kernel and the fallback where there is no GPU.

use super::spec::{ModelSpec, RopeStyle};
use super::weights::{dot, LayerWeights, Weights};
use super::ModelError;
use crate::gguf::{ByteSource, GgufFile};

/// Keys and values of every position seen so far, per layer.
#[derive(Clone, Debug)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
    max: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this cache may hold.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Forgets every position from `len` on, keeping a shared prefix for reuse.
    pub fn truncate(&mut self, len: usize, spec: &ModelSpec) {
        if len < self.len {
            for layer in &mut self.k {
                layer.truncate(len * spec.k_dim());
            }
            for layer in &mut self.v {
                layer.truncate(len * spec.v_dim());
            }
            self.len = len;
        }
    }
}

pub struct CpuModel {
    pub spec: ModelSpec,
    pub weights: Weights,
}

/// `x * w / rms(x)`, in place, as Hugging Face's `RMSNorm` computes it.
fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for (v, w) in x.iter_mut().zip(w) {
        *v = *v * scale * w;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

impl CpuModel {
    /// Reads the spec, checks every tensor, and loads the weights.
    pub fn load<S: ByteSource>(
        file: &GgufFile<S>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, ModelError> {
        let spec = ModelSpec::from_gguf(&file.header)?;
        spec.check_tensors(&file.header)?;
        let weights = Weights::load(file, &spec, progress)?;
        Ok(CpuModel { spec, weights })
    }

    /// An empty cache for up to `max_len` positions (at most the model's context length).
    pub fn new_cache(&self, max_len: usize) -> KvCache {
        let n = self.spec.n_layer;
        KvCache {
            k: vec![Vec::new(); n],
            v: vec![Vec::new(); n],
            len: 0,
            max: max_len.min(self.spec.context_length),
        }
    }

    /// Runs `tokens` at the next positions of `cache` and returns the logits of the last one.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.run(cache, tokens, false)
    }

    /// As [`forward`](Self::forward), returning the logits of every position, one after another.
    pub fn forward_all(&self, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.run(cache, tokens, true)
    }

    fn run(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let s = &self.spec;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        if cache.len + tokens.len() > cache.max {
            return Err(ModelError::ContextFull {
                len: cache.len + tokens.len(),
                max: cache.max,
            });
        }
        let n = tokens.len();
        let e = s.n_embd;
        let mut x = vec![0.0; n * e];
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= s.n_vocab {
                return Err(ModelError::TokenOutOfRange {
                    id,
                    n_vocab: s.n_vocab,
                });
            }
            self.weights
                .token_embd
                .row(id as usize, &mut x[t * e..(t + 1) * e]);
        }
        for (l, layer) in self.weights.layers.iter().enumerate() {
            self.attention(layer, l, cache, &mut x);
            self.feed_forward(layer, &mut x);
        }
        cache.len += n;

        let first = if all_logits { 0 } else { n - 1 };
        let mut h = x[first * e..].to_vec();
        for row in h.chunks_exact_mut(e) {
            rms_norm(row, &self.weights.output_norm, s.rms_eps);
        }
        let mut logits = vec![0.0; (n - first) * s.n_vocab];
        self.weights.head().matmul(&h, None, &mut logits);
        Ok(logits)
    }

    /// Self-attention over the cache and the new positions; adds its output to `x`.
    fn attention(&self, w: &LayerWeights, l: usize, cache: &mut KvCache, x: &mut [f32]) {
        let s = &self.spec;
        let (e, n) = (s.n_embd, x.len() / s.n_embd);
        let mut h = x.to_vec();
        for row in h.chunks_exact_mut(e) {
            rms_norm(row, &w.attn_norm, s.rms_eps);
        }
        let mut q = vec![0.0; n * s.q_dim()];
        let mut k = vec![0.0; n * s.k_dim()];
        let mut v = vec![0.0; n * s.v_dim()];
        w.wq.matmul(&h, w.bq.as_deref(), &mut q);
        w.wk.matmul(&h, w.bk.as_deref(), &mut k);
        w.wv.matmul(&h, w.bv.as_deref(), &mut v);
        for (norm, m) in [(&w.q_norm, &mut q), (&w.k_norm, &mut k)] {
            if let Some(norm) = norm {
                for head in m.chunks_exact_mut(s.head_dim) {
                    rms_norm(head, norm, s.rms_eps);
                }
            }
        }
        for t in 0..n {
            let pos = cache.len + t;
            for head in q[t * s.q_dim()..(t + 1) * s.q_dim()].chunks_exact_mut(s.head_dim) {
                self.rope(head, pos);
            }
            for head in k[t * s.k_dim()..(t + 1) * s.k_dim()].chunks_exact_mut(s.head_dim) {
                self.rope(head, pos);
            }
        }
        cache.k[l].extend_from_slice(&k);
        cache.v[l].extend_from_slice(&v);

        let (keys, values) = (&cache.k[l], &cache.v[l]);
        let group = s.n_head / s.n_head_kv;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let out_dim = s.n_head * s.head_dim_v;
        let mut out = vec![0.0; n * out_dim];
        for t in 0..n {
            let visible = cache.len + t + 1;
            let mut scores = vec![0.0; visible];
            for hd in 0..s.n_head {
                let kv = hd / group;
                let qh = &q[t * s.q_dim() + hd * s.head_dim..][..s.head_dim];
                for (p, score) in scores.iter_mut().enumerate() {
                    let kh = &keys[p * s.k_dim() + kv * s.head_dim..][..s.head_dim];
                    *score = dot(qh, kh) * scale;
                }
                softmax(&mut scores);
                let oh = &mut out[t * out_dim + hd * s.head_dim_v..][..s.head_dim_v];
                for (p, &a) in scores.iter().enumerate() {
                    let vh = &values[p * s.v_dim() + kv * s.head_dim_v..][..s.head_dim_v];
                    for (o, v) in oh.iter_mut().zip(vh) {
                        *o += a * v;
                    }
                }
            }
        }
        let mut proj = vec![0.0; n * e];
        w.wo.matmul(&out, None, &mut proj);
        for (xi, p) in x.iter_mut().zip(&proj) {
            *xi += p;
        }
    }

    /// Rotates the first `rope_dim` dimensions of one head for position `pos`.
    fn rope(&self, head: &mut [f32], pos: usize) {
        let s = &self.spec;
        let half = s.rope_dim / 2;
        for i in 0..half {
            let mut theta = (s.rope_base as f64).powf(-2.0 * i as f64 / s.rope_dim as f64);
            if let Some(f) = &self.weights.rope_freqs {
                theta /= f[i] as f64;
            }
            let angle = pos as f64 * s.rope_freq_scale as f64 * theta;
            let (sin, cos) = (angle.sin() as f32, angle.cos() as f32);
            let (a, b) = match s.rope_style {
                RopeStyle::Norm => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }

    /// The SiLU-gated MLP; adds its output to `x`.
    fn feed_forward(&self, w: &LayerWeights, x: &mut [f32]) {
        let s = &self.spec;
        let n = x.len() / s.n_embd;
        let mut h = x.to_vec();
        for row in h.chunks_exact_mut(s.n_embd) {
            rms_norm(row, &w.ffn_norm, s.rms_eps);
        }
        let mut gate = vec![0.0; n * s.n_ff];
        let mut up = vec![0.0; n * s.n_ff];
        w.w_gate.matmul(&h, None, &mut gate);
        w.w_up.matmul(&h, None, &mut up);
        for (g, u) in gate.iter_mut().zip(&up) {
            *g = silu(*g) * u;
        }
        let mut down = vec![0.0; n * s.n_embd];
        w.w_down.matmul(&gate, None, &mut down);
        for (xi, d) in x.iter_mut().zip(&down) {
            *xi += d;
        }
    }
}
