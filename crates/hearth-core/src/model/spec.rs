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
}

impl Rope {
    /// (cos, sin) of each of the `dim / 2` rotation angles at `pos`, computed in f64: the
    /// reference values every backend uses.
    pub fn cos_sin<'a>(
        &self,
        pos: usize,
        freqs: Option<&'a [f32]>,
    ) -> impl Iterator<Item = [f32; 2]> + 'a {
        let rope = *self;
        (0..self.dim / 2).map(move |i| {
            let mut theta = (rope.base as f64).powf(-2.0 * i as f64 / rope.dim as f64);
            if let Some(f) = freqs {
                theta /= f[i] as f64;
            }
            let angle = pos as f64 * rope.freq_scale as f64 * theta;
            [angle.cos() as f32, angle.sin() as f32]
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

/// What mixes information across positions.
#[derive(Clone, Debug, PartialEq)]
pub enum Mixer {
    Attention(Attention),
    DeltaNet(DeltaNet),
}

/// The feed-forward block.
#[derive(Clone, Debug, PartialEq)]
pub enum Ffn {
    /// `down(silu(gate(x)) * up(x))`.
    SiluGated { n_ff: usize },
    /// `down(gelu(up(x) + b_up)) + b_down`, GELU's tanh approximation (GPT-2).
    Gelu { n_ff: usize },
}

impl Ffn {
    fn tensors(&self, e: u64) -> Vec<(Role, Vec<u64>)> {
        match *self {
            Ffn::SiluGated { n_ff } => {
                let ff = n_ff as u64;
                vec![
                    (Role::FfnGate, vec![e, ff]),
                    (Role::FfnUp, vec![e, ff]),
                    (Role::FfnDown, vec![ff, e]),
                ]
            }
            Ffn::Gelu { n_ff } => {
                let ff = n_ff as u64;
                vec![
                    (Role::FfnUp, vec![e, ff]),
                    (Role::FfnUpBias, vec![ff]),
                    (Role::FfnDown, vec![ff, e]),
                    (Role::FfnDownBias, vec![e]),
                ]
            }
        }
    }

    pub fn n_ff(&self) -> usize {
        match *self {
            Ffn::SiluGated { n_ff } | Ffn::Gelu { n_ff } => n_ff,
        }
    }
}

/// One pre-norm block: `x += mixer(norm(x) * w_norm)`, then `x += ffn(norm(x) * w_ffn_norm)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub mixer: Mixer,
    /// The feed-forward block's norm (its name differs between architectures).
    pub ffn_norm: Role,
    pub ffn: Ffn,
}

impl Layer {
    /// The layer's tensors with the shapes they must have (ggml order).
    pub fn tensors(&self, n_embd: usize) -> Vec<(Role, Vec<u64>)> {
        let e = n_embd as u64;
        let mut out = vec![(Role::AttnNorm, vec![e]), (self.ffn_norm, vec![e])];
        out.extend(match &self.mixer {
            Mixer::Attention(a) => a.tensors(e),
            Mixer::DeltaNet(d) => d.tensors(e),
        });
        out.extend(self.ffn.tensors(e));
        out
    }

    pub fn attention(&self) -> Option<&Attention> {
        match &self.mixer {
            Mixer::Attention(a) => Some(a),
            Mixer::DeltaNet(_) => None,
        }
    }

    pub fn delta_net(&self) -> Option<&DeltaNet> {
        match &self.mixer {
            Mixer::DeltaNet(d) => Some(d),
            Mixer::Attention(_) => None,
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
    /// The epsilon of the model's norms (RMS or LayerNorm, as `arch.norm` says).
    pub rms_eps: f32,
    pub context_length: usize,
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
        self.layers.iter().any(|l| l.delta_net().is_some())
    }

    pub fn attention_layers(&self) -> impl Iterator<Item = &Attention> {
        self.layers.iter().filter_map(Layer::attention)
    }

    pub fn delta_net_layers(&self) -> impl Iterator<Item = &DeltaNet> {
        self.layers.iter().filter_map(Layer::delta_net)
    }

    /// Bytes of per-sequence state for `positions` positions at `kv_bytes` bytes a cached
    /// value: (KV cache, recurrent state).
    pub fn state_bytes(&self, positions: usize, kv_bytes: usize) -> (u64, u64) {
        let kv: usize = self
            .attention_layers()
            .map(|a| positions * (a.k_dim() + a.v_dim()) * kv_bytes)
            .sum();
        let recurrent: usize = self
            .delta_net_layers()
            .map(|d| (d.conv_state_len() + d.delta_state_len()) * 4)
            .sum();
        (kv as u64, recurrent as u64)
    }

    /// Every tensor the model reads, with the shape it must have (ggml order).
    pub fn expected_tensors(&self) -> Vec<(TensorId, Vec<u64>)> {
        let [e, v] = [self.n_embd, self.n_vocab].map(|x| x as u64);
        let mut out = vec![
            (TensorId::global(Role::TokenEmbd), vec![e, v]),
            (TensorId::global(Role::OutputNorm), vec![e]),
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
