//! The CPU forward pass: f32 math written for clarity and lowered layer by layer from the
//! model's description, with its matrix products taken by fast integer kernels where the
//! weights' format has one ([`products`]). With [`Products::Reference`] every product decodes
//! its weights row by row to f32: that pass is the oracle for every GPU kernel and for the fast
//! kernels. It is also the fallback where there is no GPU.

pub mod ops;
pub mod products;
pub mod simd;
mod state;

pub use state::{State, RING_SLACK, SNAPSHOTS};

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use self::ops::{attend, rms_norm_rows};
use super::spec::{Attention, DeltaNet, Ffn, Mixer, ModelSpec, ShortConv};
use super::tensor::{Role, TensorId};
use super::weights::{LayerWeights, Products, Weights};
use super::ModelError;
use crate::gguf::{ByteSource, GgufFile};

pub struct CpuModel {
    pub spec: ModelSpec,
    pub weights: Weights,
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

    /// Takes every product as `products` says from now on.
    pub fn set_products(&mut self, products: Products) {
        self.weights.products = products;
    }

    /// An empty state for up to `max_len` positions (at most the model's context length).
    pub fn new_state(&self, max_len: usize) -> State {
        State::new(&self.spec, max_len.min(self.spec.context_length))
    }

    /// Runs `tokens` at the next positions of `state` and returns the logits of the last one.
    /// A split model whose peers answer later (by message) runs with
    /// [`forward_async`](Self::forward_async) instead.
    pub fn forward(&self, state: &mut State, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        at_once(self.run(state, tokens, false))
    }

    /// As [`forward`](Self::forward), returning the logits of every position, one after another.
    pub fn forward_all(&self, state: &mut State, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        at_once(self.run(state, tokens, true))
    }

    /// As [`forward`](Self::forward), awaiting the other shards' answers where they come later.
    pub async fn forward_async(
        &self,
        state: &mut State,
        tokens: &[u32],
    ) -> Result<Vec<f32>, ModelError> {
        self.run(state, tokens, false).await
    }

    async fn run(
        &self,
        state: &mut State,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>, ModelError> {
        let s = &self.spec;
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        if state.len() + tokens.len() > state.capacity() {
            return Err(ModelError::ContextFull {
                len: state.len() + tokens.len(),
                max: state.capacity(),
            });
        }
        let (n, e) = (tokens.len(), s.n_embd);
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= s.n_vocab) {
            return Err(ModelError::TokenOutOfRange {
                id,
                n_vocab: s.n_vocab,
            });
        }
        let mut x = vec![0.0; n * e];
        self.weights
            .rows_of(TensorId::global(Role::TokenEmbd), tokens, &mut x)
            .await;
        if s.embd_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= s.embd_scale);
        }
        if s.arch.learned_positions {
            // The state holds at most the context, which is the table's rows.
            let table = self.weights.matrix(TensorId::global(Role::PositionEmbd));
            let mut row = vec![0.0; e];
            for (t, x) in x.chunks_exact_mut(e).enumerate() {
                table.row(state.len() + t, &mut row);
                add(x, &row);
            }
        }
        for (l, layer) in s.layers.iter().enumerate() {
            let w = self.weights.layer(l);
            let mut h = x.clone();
            self.norm(&mut h, TensorId::layer(l, Role::AttnNorm));
            let mut out = match &layer.mixer {
                Mixer::Attention(a) => self.attention(a, w, state, l, &h).await,
                Mixer::DeltaNet(d) => self.delta_net(d, w, state, l, &h).await,
                Mixer::ShortConv(c) => short_conv(c, w, state, l, &h).await,
            };
            if layer.post_norms {
                self.norm(&mut out, TensorId::layer(l, Role::PostAttnNorm));
            }
            add(&mut x, &out);
            let mut h = x.clone();
            self.norm(&mut h, TensorId::layer(l, layer.ffn_norm));
            let mut out = feed_forward(&layer.ffn, w, &h).await;
            if layer.post_norms {
                self.norm(&mut out, TensorId::layer(l, Role::FfnPostNorm));
            }
            add(&mut x, &out);
        }
        state.advance(n);

        let first = if all_logits { 0 } else { n - 1 };
        let mut h = x[first * e..].to_vec();
        self.norm(&mut h, TensorId::global(s.output_norm));
        Ok(self.weights.head_times(s, &h).await)
    }

    /// The model's norm `id` over each row of `h`: RMS, or LayerNorm with its bias.
    fn norm(&self, h: &mut [f32], id: TensorId) {
        let s = &self.spec;
        let loaded = |id: TensorId| {
            self.weights
                .vector(id)
                .unwrap_or_else(|| panic!("{} is loaded", id.name()))
        };
        let w = loaded(id);
        match s.norm_bias(id) {
            Some(bias) => {
                let b = loaded(bias);
                for row in h.chunks_exact_mut(s.n_embd) {
                    ops::layer_norm(row, w, b, s.rms_eps);
                }
            }
            None => rms_norm_rows(h, s.n_embd, w, s.rms_eps),
        }
    }

    /// Self-attention of the `h` rows over the cache and themselves.
    async fn attention(
        &self,
        a: &Attention,
        w: LayerWeights<'_>,
        state: &mut State,
        l: usize,
        h: &[f32],
    ) -> Vec<f32> {
        let s = &self.spec;
        let n = h.len() / s.n_embd;
        let (qd, kd, vd, hd) = (a.q_dim(), a.k_dim(), a.v_dim(), a.head_dim);
        let [q_full, mut k, v] = w
            .times_each(
                [
                    (Role::AttnQ, w.optional(Role::AttnQBias)),
                    (Role::AttnK, w.optional(Role::AttnKBias)),
                    (Role::AttnV, w.optional(Role::AttnVBias)),
                ],
                h,
            )
            .await;
        // A gated Q holds [query | gate] per head.
        let (mut q, gate) = if a.output_gate {
            let (mut q, mut g) = (Vec::with_capacity(n * qd), Vec::with_capacity(n * qd));
            for head in q_full.chunks_exact(2 * hd) {
                q.extend_from_slice(&head[..hd]);
                g.extend_from_slice(&head[hd..]);
            }
            (q, Some(g))
        } else {
            (q_full, None)
        };
        for (norm, m) in [(Role::AttnQNorm, &mut q), (Role::AttnKNorm, &mut k)] {
            if let Some(norm) = w.optional(norm) {
                rms_norm_rows(m, hd, norm, s.rms_eps);
            }
        }
        let pos0 = state.len();
        if let Some(rope) = &a.rope {
            let freqs = rope
                .factors(state.capacity())
                .and_then(|role| self.weights.vector(TensorId::global(role)));
            for t in 0..n {
                let cs: Vec<[f32; 2]> = rope.cos_sin(pos0 + t, freqs).collect();
                for head in q[t * qd..(t + 1) * qd]
                    .chunks_exact_mut(hd)
                    .chain(k[t * kd..(t + 1) * kd].chunks_exact_mut(hd))
                {
                    ops::rope(head, rope, &cs);
                }
            }
        }
        // Position p of the cache is at slot p, or under a window in a ring; the chunk's own
        // rows are read from `k` and `v` and stored once every row has attended, since a row
        // early in the chunk may need a position that a later row overwrites.
        let ring = state.ring(l);
        let slot = |p: usize| ring.map_or(p, |r| p % r);
        let (keys, values) = state.kv(l);
        let key = |p: usize| match p.checked_sub(pos0) {
            Some(t) => &k[t * kd..(t + 1) * kd],
            None => &keys[slot(p) * kd..(slot(p) + 1) * kd],
        };
        let value = |p: usize| match p.checked_sub(pos0) {
            Some(t) => &v[t * vd..(t + 1) * vd],
            None => &values[slot(p) * vd..(slot(p) + 1) * vd],
        };
        let group = a.n_head / a.n_head_kv;
        let (dv, od) = (a.head_dim_v, a.out_dim());
        let mut out = vec![0.0; n * od];
        for t in 0..n {
            let end = pos0 + t + 1;
            let first = end - a.cache_slots(end, 0);
            for head in 0..a.n_head {
                let kv = head / group;
                attend(
                    &q[t * qd + head * hd..][..hd],
                    end - first,
                    |i| &key(first + i)[kv * hd..][..hd],
                    |i| &value(first + i)[kv * dv..][..dv],
                    a.scale,
                    &mut out[t * od + head * dv..][..dv],
                );
            }
        }
        for p in pos0 + n - ring.unwrap_or(n).min(n)..pos0 + n {
            let t = p - pos0;
            let (ks, vs) = (slot(p) * kd, slot(p) * vd);
            if keys.len() < ks + kd {
                keys.resize(ks + kd, 0.0);
                values.resize(vs + vd, 0.0);
            }
            keys[ks..ks + kd].copy_from_slice(&k[t * kd..(t + 1) * kd]);
            values[vs..vs + vd].copy_from_slice(&v[t * vd..(t + 1) * vd]);
        }
        if let Some(gate) = gate {
            for (o, g) in out.iter_mut().zip(&gate) {
                *o *= ops::sigmoid(*g);
            }
        }
        w.times(Role::AttnOutput, &out, w.optional(Role::AttnOutputBias))
            .await
    }

    /// The gated delta net over the `h` rows, one token after another.
    async fn delta_net(
        &self,
        d: &DeltaNet,
        w: LayerWeights<'_>,
        state: &mut State,
        l: usize,
        h: &[f32],
    ) -> Vec<f32> {
        let s = &self.spec;
        let n = h.len() / s.n_embd;
        let (cd, vd, nv) = (d.conv_dim(), d.value_dim(), d.n_v_heads);
        let roles = [Role::AttnQkv, Role::AttnGate, Role::SsmBeta, Role::SsmAlpha];
        let [mut qkv, z, beta, alpha] = w.times_each(roles.map(|role| (role, None)), h).await;
        let tables = ops::DeltaTables {
            conv: w.vector(Role::SsmConv1d),
            dt: w.vector(Role::SsmDt),
            a: w.vector(Role::SsmA),
            norm: w.vector(Role::SsmNorm),
            eps: s.rms_eps,
        };
        let (conv, delta) = state.recurrent(l);
        let mut out = vec![0.0; n * vd];
        for t in 0..n {
            ops::delta_net_token(
                d,
                &tables,
                (conv, delta),
                &mut qkv[t * cd..(t + 1) * cd],
                [
                    &z[t * vd..(t + 1) * vd],
                    &beta[t * nv..(t + 1) * nv],
                    &alpha[t * nv..(t + 1) * nv],
                ],
                &mut out[t * vd..(t + 1) * vd],
            );
        }
        w.times(Role::SsmOut, &out, None).await
    }
}

/// The gated short convolution over the `h` rows, one token after another.
async fn short_conv(
    c: &ShortConv,
    w: LayerWeights<'_>,
    state: &mut State,
    l: usize,
    h: &[f32],
) -> Vec<f32> {
    let n = c.channels;
    let bcx = w.times(Role::ShortConvInProj, h, None).await;
    let weight = w.vector(Role::ShortConvConv);
    let (conv, _) = state.recurrent(l);
    let mut out = vec![0.0; bcx.len() / 3];
    for (bcx, out) in bcx.chunks_exact(3 * n).zip(out.chunks_exact_mut(n)) {
        ops::short_conv_token(c, weight, conv, bcx, out);
    }
    w.times(Role::ShortConvOutProj, &out, None).await
}

/// The output of `f`, which must not wait: the model is whole, or its peers answer as they are
/// asked.
fn at_once<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a split model whose peers answer later runs with forward_async"),
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// The feed-forward block of the `h` rows.
async fn feed_forward(ffn: &Ffn, w: LayerWeights<'_>, h: &[f32]) -> Vec<f32> {
    let act = match *ffn {
        Ffn::SiluGated { .. } | Ffn::SiluGatedFused { .. } => ops::silu,
        Ffn::GeluGated { .. } => ops::gelu,
        Ffn::Gelu { .. } => {
            // Ungated, with biases (GPT-2).
            let mut up = w.times(Role::FfnUp, h, w.optional(Role::FfnUpBias)).await;
            for v in up.iter_mut() {
                *v = ops::gelu(*v);
            }
            return w
                .times(Role::FfnDown, &up, w.optional(Role::FfnDownBias))
                .await;
        }
    };
    let [mut gate, up] = w
        .times_each([(Role::FfnGate, None), (Role::FfnUp, None)], h)
        .await;
    for (g, u) in gate.iter_mut().zip(&up) {
        *g = act(*g) * u;
    }
    w.times(Role::FfnDown, &gate, None).await
}
