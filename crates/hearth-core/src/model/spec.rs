//! What a model is: the hyper-parameters every architecture shares, and per layer a kind with
//! its own dimensions. Each architecture (see [`super::arch`]) reads its file's metadata into
//! this one description; the CPU reference and the GPU plans are lowered from it, and the
//! tensors a model needs, with their shapes, are derived from it.

use super::meta::Meta;
use super::tensor::{Role, TensorId};
use super::ModelError;
use crate::gguf::Gguf;
use crate::quant::GgmlType;

/// How rotary embedding pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama.cpp's "norm" convention.
    Norm,
    /// Halves (x[i], x[i + d/2]): the GPT-NeoX convention.
    Neox,
}

/// The norm of every block and of the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// `x * w / rms(x)`, eps from `attention.layer_norm_rms_epsilon`.
    Rms,
    /// LayerNorm: `(x - mean) * w / std(x) + b`, eps from `attention.layer_norm_epsilon`.
    Layer,
}

/// Rotary position embedding over the leading `dim` dimensions of each head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rope {
    pub dim: usize,
    pub base: f32,
    pub style: RopeStyle,
    /// Linear rope scaling: positions are multiplied by this (1 when absent).
    pub freq_scale: f32,
    /// Per-frequency divisors (Llama 3 scaling) come from the `rope_freqs.weight` tensor.
    pub freqs: bool,
    /// LongRoPE (Phi-3.5, Phi-4-mini), where the file has its two sets of factors.
    pub long_rope: Option<LongRope>,
}

/// LongRoPE: per-frequency divisors from `rope_factors_short.weight`, or from
/// `rope_factors_long.weight` for a context longer than the one the model was first trained
/// for, and cos and sin scaled by an attention factor.
///
/// The set is chosen once, by the context a model is loaded for, as llama.cpp does (its
/// context size against `rope.scaling.original_context_length`): transformers chooses by the
/// length of the sequence at hand, which would re-rotate every cached key when a sequence
/// grows past the original context. The two agree on every sequence that fits the context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LongRope {
    /// Contexts up to this many positions take the short factors.
    pub original_context: usize,
    /// Multiplies cos and sin (`rope.scaling.attn_factor`).
    pub attn_factor: f32,
}

impl Rope {
    /// The tensor of per-frequency divisors this rope reads in a context of `context`
    /// positions, if any.
    pub fn factors(&self, context: usize) -> Option<Role> {
        if self.freqs {
            return Some(Role::RopeFreqs);
        }
        self.long_rope.map(|l| {
            if context > l.original_context {
                Role::RopeFactorsLong
            } else {
                Role::RopeFactorsShort
            }
        })
    }

    /// (cos, sin) of each of the `dim / 2` rotation angles at `pos`, computed in f64: the
    /// reference values every backend uses.
    pub fn cos_sin<'a>(
        &self,
        pos: usize,
        freqs: Option<&'a [f32]>,
    ) -> impl Iterator<Item = [f32; 2]> + 'a {
        let rope = *self;
        let scale = self.long_rope.map_or(1.0, |l| l.attn_factor as f64);
        (0..self.dim / 2).map(move |i| {
            let mut theta = (rope.base as f64).powf(-2.0 * i as f64 / rope.dim as f64);
            if let Some(f) = freqs {
                theta /= f[i] as f64;
            }
            let angle = pos as f64 * rope.freq_scale as f64 * theta;
            [(angle.cos() * scale) as f32, (angle.sin() * scale) as f32]
        })
    }
}

/// Softmax attention over a KV cache.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Dimension of each query/key head.
    pub head_dim: usize,
    /// Dimension of each value head.
    pub head_dim_v: usize,
    /// None where the layer encodes no position (NoPE: SmolLM3's every fourth layer).
    pub rope: Option<Rope>,
    /// Biases on Q, K and V.
    pub qkv_bias: bool,
    /// RMS norm over each head of Q and K before rope.
    pub qk_norm: bool,
    /// Q's rows hold `[query | gate]` per head, and the output is multiplied by
    /// `sigmoid(gate)` (Qwen3.5).
    pub output_gate: bool,
    /// The factor on the scores `q . k` (`1 / sqrt(head_dim)` unless the model says otherwise).
    pub scale: f32,
    /// Sliding-window attention: position p sees the `window` positions up to and including
    /// itself, `p - window < p' <= p` (Gemma 3's local layers, Phi-3); None sees every position.
    pub window: Option<usize>,
    /// Q, K and V come from one fused `attn_qkv` tensor (and `attn_qkv.bias`), split by rows at
    /// load (see [`Attention::fused_qkv_parts`]); not with an output gate.
    pub fused_qkv: bool,
    /// A bias on `attn_output` (GPT-2).
    pub out_bias: bool,
}

impl Attention {
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// Width of the attention output (the input of `attn_output`).
    pub fn out_dim(&self) -> usize {
        self.n_head * self.head_dim_v
    }

    /// Slots of keys and values a cache for `positions` positions keeps for this layer: one
    /// per position, or under a window a ring of the window's and `extra` more (rows of a chunk
    /// stored before its first row has attended).
    pub fn cache_slots(&self, positions: usize, extra: usize) -> usize {
        self.window
            .map_or(positions, |w| (w + extra).min(positions))
    }

    /// Whether a cache of `slots` slots holding positions up to `held` still has the keys that
    /// the positions up to `len` need: always without a window; under one, unless the ring
    /// has overwritten them.
    pub fn cache_keeps(&self, slots: usize, held: usize, len: usize) -> bool {
        self.window
            .is_none_or(|w| held <= slots || held - len <= slots.saturating_sub(w))
    }

    /// How a fused `attn_qkv` tensor's rows (and its bias's values) split, in order: the
    /// weight and bias roles of Q, K and V, each with its number of rows.
    pub fn fused_qkv_parts(&self) -> [(Role, Role, usize); 3] {
        [
            (Role::AttnQ, Role::AttnQBias, self.q_dim()),
            (Role::AttnK, Role::AttnKBias, self.k_dim()),
            (Role::AttnV, Role::AttnVBias, self.v_dim()),
        ]
    }

    fn tensors(&self, e: u64) -> Vec<(Role, Vec<u64>)> {
        let [q, kd, vd] = [self.q_dim(), self.k_dim(), self.v_dim()].map(|x| x as u64);
        let q_rows = if self.output_gate { 2 * q } else { q };
        let mut out = if self.fused_qkv {
            vec![(Role::AttnQkv, vec![e, q + kd + vd])]
        } else {
            vec![
                (Role::AttnQ, vec![e, q_rows]),
                (Role::AttnK, vec![e, kd]),
                (Role::AttnV, vec![e, vd]),
            ]
        };
        out.push((Role::AttnOutput, vec![self.out_dim() as u64, e]));
        if self.out_bias {
            out.push((Role::AttnOutputBias, vec![e]));
        }
        if self.qkv_bias && self.fused_qkv {
            out.push((Role::AttnQkvBias, vec![q + kd + vd]));
        } else if self.qkv_bias {
            out.extend([
                (Role::AttnQBias, vec![q]),
                (Role::AttnKBias, vec![kd]),
                (Role::AttnVBias, vec![vd]),
            ]);
        }
        if self.qk_norm {
            let d = self.head_dim as u64;
            out.extend([(Role::AttnQNorm, vec![d]), (Role::AttnKNorm, vec![d])]);
        }
        out
    }
}

/// Gated DeltaNet linear attention (Qwen3.5): a causal depthwise convolution over the fused
/// Q/K/V projection, then the gated delta rule on a `head_k_dim x head_v_dim` state per value
/// head, a gated RMS norm and an output projection. Value head `h` reads key head
/// `h % n_k_heads` (GGUF's tiled order).
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaNet {
    pub n_k_heads: usize,
    pub n_v_heads: usize,
    pub head_k_dim: usize,
    pub head_v_dim: usize,
    pub conv_kernel: usize,
}

impl DeltaNet {
    pub fn key_dim(&self) -> usize {
        self.n_k_heads * self.head_k_dim
    }

    pub fn value_dim(&self) -> usize {
        self.n_v_heads * self.head_v_dim
    }

    /// Channels of the convolution: Q, K and V side by side.
    pub fn conv_dim(&self) -> usize {
        2 * self.key_dim() + self.value_dim()
    }

    /// Floats of convolution state: the last `conv_kernel - 1` inputs of each channel.
    pub fn conv_state_len(&self) -> usize {
        (self.conv_kernel - 1) * self.conv_dim()
    }

    /// Floats of delta-rule state: one `head_k_dim x head_v_dim` matrix per value head.
    pub fn delta_state_len(&self) -> usize {
        self.n_v_heads * self.head_k_dim * self.head_v_dim
    }

    fn tensors(&self, e: u64) -> Vec<(Role, Vec<u64>)> {
        let [conv, vd, nv] = [self.conv_dim(), self.value_dim(), self.n_v_heads].map(|x| x as u64);
        vec![
            (Role::AttnQkv, vec![e, conv]),
            (Role::AttnGate, vec![e, vd]),
            (Role::SsmConv1d, vec![self.conv_kernel as u64, conv]),
            (Role::SsmDt, vec![nv]),
            (Role::SsmA, vec![nv]),
            (Role::SsmBeta, vec![e, nv]),
            (Role::SsmAlpha, vec![e, nv]),
            (Role::SsmNorm, vec![self.head_v_dim as u64]),
            (Role::SsmOut, vec![vd, e]),
        ]
    }
}

/// A gated short convolution (LFM2): the input projection gives `B`, `C` and `x` (each
/// `channels` wide); `B * x` goes through a causal depthwise convolution (no activation), is
/// multiplied by `C`, and projected out.
#[derive(Clone, Debug, PartialEq)]
pub struct ShortConv {
    pub channels: usize,
    pub conv_kernel: usize,
}

impl ShortConv {
    /// Floats of convolution state: the last `conv_kernel - 1` inputs of each channel.
    pub fn conv_state_len(&self) -> usize {
        (self.conv_kernel - 1) * self.channels
    }

    fn tensors(&self, e: u64) -> Vec<(Role, Vec<u64>)> {
        let c = self.channels as u64;
        vec![
            (Role::ShortConvInProj, vec![e, 3 * c]),
            (Role::ShortConvConv, vec![self.conv_kernel as u64, c]),
            (Role::ShortConvOutProj, vec![c, e]),
        ]
    }
}

/// What mixes information across positions.
#[derive(Clone, Debug, PartialEq)]
pub enum Mixer {
    Attention(Attention),
    DeltaNet(DeltaNet),
    ShortConv(ShortConv),
}

impl Mixer {
    /// Floats of each part of the recurrent state the mixer carries from token to token
    /// (convolution, then delta rule), or None for attention, whose KV cache can be cut back.
    pub fn recurrent_state(&self) -> Option<Vec<usize>> {
        match self {
            Mixer::Attention(_) => None,
            Mixer::DeltaNet(d) => Some(vec![d.conv_state_len(), d.delta_state_len()]),
            Mixer::ShortConv(c) => Some(vec![c.conv_state_len()]),
        }
    }
}

/// The feed-forward block.
#[derive(Clone, Debug, PartialEq)]
pub enum Ffn {
    /// `down(silu(gate(x)) * up(x))`.
    SiluGated { n_ff: usize },
    /// `down(gelu(gate(x)) * up(x))` with tanh-approximated GELU (GeGLU: Gemma).
    GeluGated { n_ff: usize },
    /// The same, with gate and up in one `ffn_up` tensor, the gate's rows first (Phi-3), split
    /// into the two at load.
    SiluGatedFused { n_ff: usize },
    /// `down(gelu(up(x) + b_up)) + b_down`, GELU's tanh approximation (GPT-2).
    Gelu { n_ff: usize },
}

impl Ffn {
    /// Width of the hidden layer.
    pub fn n_ff(&self) -> usize {
        match *self {
            Ffn::SiluGated { n_ff }
            | Ffn::GeluGated { n_ff }
            | Ffn::SiluGatedFused { n_ff }
            | Ffn::Gelu { n_ff } => n_ff,
        }
    }

    /// How a fused tensor's rows split at load, in order: each part's role and rows.
    pub fn fused_parts(&self) -> Option<[(Role, usize); 2]> {
        match *self {
            Ffn::SiluGated { .. } | Ffn::GeluGated { .. } | Ffn::Gelu { .. } => None,
            Ffn::SiluGatedFused { n_ff } => Some([(Role::FfnGate, n_ff), (Role::FfnUp, n_ff)]),
        }
    }

    fn tensors(&self, e: u64) -> Vec<(Role, Vec<u64>)> {
        let ff = self.n_ff() as u64;
        let mut out = match self {
            Ffn::SiluGated { .. } | Ffn::GeluGated { .. } => {
                vec![(Role::FfnGate, vec![e, ff]), (Role::FfnUp, vec![e, ff])]
            }
            Ffn::SiluGatedFused { .. } => vec![(Role::FfnUp, vec![e, 2 * ff])],
            Ffn::Gelu { .. } => vec![(Role::FfnUp, vec![e, ff]), (Role::FfnUpBias, vec![ff])],
        };
        out.push((Role::FfnDown, vec![ff, e]));
        if let Ffn::Gelu { .. } = self {
            out.push((Role::FfnDownBias, vec![e]));
        }
        out
    }
}

/// One pre-norm block: `x += mixer(norm(x) * w_norm)`, then `x += ffn(norm(x) * w_ffn_norm)`.
/// With `post_norms` the outputs of the mixer and of the feed-forward block are normed too
/// before they are added (`post_attention_norm`, `post_ffw_norm`: Gemma).
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub mixer: Mixer,
    /// The feed-forward block's norm (its name differs between architectures).
    pub ffn_norm: Role,
    pub ffn: Ffn,
    pub post_norms: bool,
}

impl Layer {
    /// The layer's tensors with the shapes they must have (ggml order).
    pub fn tensors(&self, n_embd: usize) -> Vec<(Role, Vec<u64>)> {
        let e = n_embd as u64;
        let mut out = vec![(Role::AttnNorm, vec![e]), (self.ffn_norm, vec![e])];
        if self.post_norms {
            out.extend([(Role::PostAttnNorm, vec![e]), (Role::FfnPostNorm, vec![e])]);
        }
        out.extend(match &self.mixer {
            Mixer::Attention(a) => a.tensors(e),
            Mixer::DeltaNet(d) => d.tensors(e),
            Mixer::ShortConv(c) => c.tensors(e),
        });
        out.extend(self.ffn.tensors(e));
        out
    }

    pub fn attention(&self) -> Option<&Attention> {
        match &self.mixer {
            Mixer::Attention(a) => Some(a),
            Mixer::DeltaNet(_) | Mixer::ShortConv(_) => None,
        }
    }

    pub fn delta_net(&self) -> Option<&DeltaNet> {
        match &self.mixer {
            Mixer::DeltaNet(d) => Some(d),
            Mixer::Attention(_) | Mixer::ShortConv(_) => None,
        }
    }
}

/// One supported architecture.
#[derive(Debug)]
pub struct Arch {
    /// The GGUF name, which also prefixes the architecture's metadata keys.
    pub name: &'static str,
    /// Who uses it, for messages and listings.
    pub models: &'static str,
    /// Whether token embeddings are multiplied by `sqrt(n_embd)` (Gemma).
    pub scale_embd: bool,
    /// The trunk's layers from the metadata, given the block count.
    pub(super) layers: fn(&Meta, usize) -> Result<Vec<Layer>, ModelError>,
    pub norm: Norm,
    /// Learned absolute positions (`position_embd`, one row per position of the context)
    /// are added to the token embedding.
    pub learned_positions: bool,
}

impl PartialEq for Arch {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub arch: &'static Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    /// The factor on every token embedding row (1 for most architectures).
    pub embd_scale: f32,
    /// The epsilon of the model's norms (RMS or LayerNorm, as `arch.norm` says).
    pub rms_eps: f32,
    pub context_length: usize,
    /// The norm before the head: `OutputNorm`, or `TokenEmbdNorm` where a file stores it
    /// under that name (LFM2).
    pub output_norm: Role,
    /// The output head: `Output`, or `TokenEmbd` when the embedding doubles as the head.
    pub head: Role,
    /// Whether the file holds `rope_freqs.weight` (read by every rope that asks for it).
    pub rope_freqs: bool,
    pub layers: Vec<Layer>,
}

impl ModelSpec {
    pub fn n_layer(&self) -> usize {
        self.layers.len()
    }

    /// The bias of norm `id`, where the model's norm has one (LayerNorm).
    pub fn norm_bias(&self, id: TensorId) -> Option<TensorId> {
        let role = id
            .role
            .norm_bias()
            .filter(|_| self.arch.norm == Norm::Layer)?;
        Some(TensorId { role, ..id })
    }

    pub fn tied_output(&self) -> bool {
        self.head == Role::TokenEmbd
    }

    /// Whether any layer keeps recurrent state, which cannot be cut back to a prefix.
    pub fn is_recurrent(&self) -> bool {
        self.layers
            .iter()
            .any(|l| l.mixer.recurrent_state().is_some())
    }

    pub fn attention_layers(&self) -> impl Iterator<Item = &Attention> {
        self.layers.iter().filter_map(Layer::attention)
    }

    pub fn delta_net_layers(&self) -> impl Iterator<Item = &DeltaNet> {
        self.layers.iter().filter_map(Layer::delta_net)
    }

    /// Bytes of per-sequence state for `positions` positions at `kv_bytes` bytes a cached
    /// value, windowed rings keeping `extra` slots more than their window: (KV cache,
    /// recurrent state).
    pub fn state_bytes(&self, positions: usize, kv_bytes: usize, extra: usize) -> (u64, u64) {
        let kv: usize = self
            .attention_layers()
            .map(|a| a.cache_slots(positions, extra) * (a.k_dim() + a.v_dim()) * kv_bytes)
            .sum();
        let recurrent: usize = self
            .layers
            .iter()
            .filter_map(|l| l.mixer.recurrent_state())
            .flatten()
            .map(|floats| floats * 4)
            .sum();
        (kv as u64, recurrent as u64)
    }

    /// Every tensor the model reads, with the shape it must have (ggml order).
    pub fn expected_tensors(&self) -> Vec<(TensorId, Vec<u64>)> {
        let [e, v] = [self.n_embd, self.n_vocab].map(|x| x as u64);
        let mut out = vec![
            (TensorId::global(Role::TokenEmbd), vec![e, v]),
            (TensorId::global(self.output_norm), vec![e]),
        ];
        if !self.tied_output() {
            out.push((TensorId::global(Role::Output), vec![e, v]));
        }
        if self.arch.learned_positions {
            let rows = self.context_length as u64;
            out.push((TensorId::global(Role::PositionEmbd), vec![e, rows]));
        }
        if self.rope_freqs {
            // Every rope that reads the factors has the same dimension (checked at load).
            let dim = self
                .attention_layers()
                .find_map(|a| a.rope)
                .map_or(0, |r| r.dim);
            out.push((TensorId::global(Role::RopeFreqs), vec![dim as u64 / 2]));
        }
        // Both LongRoPE sets are read, whichever a context takes; every rope has one dimension.
        if let Some(rope) = self
            .attention_layers()
            .find_map(|a| a.rope.filter(|r| r.long_rope.is_some()))
        {
            for role in [Role::RopeFactorsLong, Role::RopeFactorsShort] {
                out.push((TensorId::global(role), vec![rope.dim as u64 / 2]));
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            out.extend(
                layer
                    .tensors(self.n_embd)
                    .into_iter()
                    .map(|(role, shape)| (TensorId::layer(l, role), shape)),
            );
        }
        let norms: Vec<TensorId> = out
            .iter()
            .filter_map(|(id, _)| self.norm_bias(*id))
            .collect();
        out.extend(norms.into_iter().map(|id| (id, vec![e])));
        out
    }

    /// Checks that every tensor the model reads is present, shaped as expected, and of a type
    /// this crate can decode.
    pub fn check_tensors(&self, gguf: &Gguf) -> Result<(), ModelError> {
        for (id, want) in self.expected_tensors() {
            let name = id.name();
            let t = gguf
                .tensor(&name)
                .ok_or_else(|| ModelError::MissingTensor(name.clone()))?;
            if t.dims != want {
                return Err(ModelError::BadShape {
                    name,
                    got: t.dims.clone(),
                    want,
                });
            }
            if !t.ty.can_dequantize() {
                return Err(ModelError::Quant {
                    name,
                    source: crate::quant::QuantError::UnsupportedDequant(t.ty),
                });
            }
        }
        Ok(())
    }

    /// Weight types by number of tensors, most common first (such as "Q4_K x 120").
    pub fn type_counts(gguf: &Gguf) -> Vec<(GgmlType, usize)> {
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        for t in gguf.tensors() {
            match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
                Some((_, n)) => *n += 1,
                None => counts.push((t.ty, 1)),
            }
        }
        counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        counts
    }
}
