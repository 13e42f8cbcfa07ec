//! A model's hyper-parameters, read from GGUF metadata and checked for consistency.

use super::arch::{names, Arch};
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

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Dimension of each query/key head.
    pub head_dim: usize,
    /// Dimension of each value head.
    pub head_dim_v: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// Leading dimensions of each head that rope rotates.
    pub rope_dim: usize,
    pub rope_style: RopeStyle,
    /// Linear rope scaling: positions are multiplied by this (1 when absent).
    pub rope_freq_scale: f32,
    /// Per-frequency divisors (Llama 3 scaling), stored as the `rope_freqs.weight` tensor.
    pub has_rope_freqs: bool,
    pub context_length: usize,
    /// No separate `output.weight`: the token embedding doubles as the output head.
    pub tied_output: bool,
    pub has_qkv_bias: bool,
    pub has_qk_norm: bool,
}

/// A hyper-parameter must be a positive count below this, so no size derived from one can
/// overflow; tensor shapes then bound them far tighter.
const MAX_DIM: u64 = 1 << 24;

fn bad(msg: String) -> ModelError {
    ModelError::BadHyperParameter(msg)
}

struct Keys<'a> {
    gguf: &'a Gguf,
    prefix: &'static str,
}

impl Keys<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn count(&self, name: &str) -> Result<Option<usize>, ModelError> {
        let key = self.key(name);
        match self.gguf.get(&key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..MAX_DIM).contains(&n) => Ok(Some(n as usize)),
                _ => Err(bad(format!("{key} = {}", v.summary()))),
            },
        }
    }

    fn required(&self, name: &str) -> Result<usize, ModelError> {
        self.count(name)?
            .ok_or_else(|| ModelError::MissingKey(self.key(name)))
    }

    fn float(&self, name: &str) -> Result<Option<f32>, ModelError> {
        let key = self.key(name);
        match self.gguf.get(&key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x as f32)),
                _ => Err(bad(format!("{key} = {}", v.summary()))),
            },
        }
    }
}

impl ModelSpec {
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, ModelError> {
        let arch = Arch::from_name(gguf.architecture().ok_or(ModelError::NoArchitecture)?)?;
        let k = Keys {
            gguf,
            prefix: arch.name(),
        };
        let n_embd = k.required("embedding_length")?;
        let n_head = k.required("attention.head_count")?;
        let n_head_kv = k.count("attention.head_count_kv")?.unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(bad(format!(
                "{n_head} query heads cannot share {n_head_kv} key/value heads"
            )));
        }
        let head_dim = match k.count("attention.key_length")? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(bad(format!(
                    "embedding {n_embd} is not a multiple of {n_head} heads"
                )))
            }
        };
        let head_dim_v = k.count("attention.value_length")?.unwrap_or(head_dim);
        let rope_dim = k.count("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(bad(format!(
                "rope dimension {rope_dim} for heads of {head_dim}"
            )));
        }
        let rope_freq_scale = match gguf.get_str(&k.key("rope.scaling.type")) {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / k.float("rope.scaling.factor")?.unwrap_or(1.0),
            Some(other) => return Err(bad(format!("rope scaling {other:?} is not supported"))),
        };
        let token_embd = gguf
            .tensor(names::TOKEN_EMBD)
            .ok_or_else(|| ModelError::MissingTensor(names::TOKEN_EMBD.into()))?;
        let n_vocab = match token_embd.dims.as_slice() {
            [e, v] if *e == n_embd as u64 && (1..MAX_DIM).contains(v) => *v as usize,
            dims => {
                return Err(ModelError::BadShape {
                    name: names::TOKEN_EMBD.into(),
                    got: dims.to_vec(),
                    want: vec![n_embd as u64, 0],
                })
            }
        };
        let has_qkv_bias = gguf.tensor(&names::layer(0, "attn_q.bias")).is_some();
        if arch.requires_qkv_bias() && !has_qkv_bias {
            return Err(ModelError::MissingTensor(names::layer(0, "attn_q.bias")));
        }
        // Each layer has at least nine tensors: a layer count the file cannot back is refused
        // before anything is sized by it.
        let n_layer = k.required("block_count")?;
        if n_layer > gguf.tensors().len() / 9 {
            return Err(bad(format!(
                "{n_layer} layers, but the file holds {} tensors",
                gguf.tensors().len()
            )));
        }
        Ok(ModelSpec {
            arch,
            n_vocab,
            n_embd,
            n_layer,
            n_ff: k.required("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            rms_eps: k
                .float("attention.layer_norm_rms_epsilon")?
                .ok_or_else(|| ModelError::MissingKey(k.key("attention.layer_norm_rms_epsilon")))?,
            rope_base: k.float("rope.freq_base")?.unwrap_or(10000.0),
            rope_dim,
            rope_style: arch.rope_style(),
            rope_freq_scale,
            has_rope_freqs: gguf.tensor(names::ROPE_FREQS).is_some(),
            context_length: k.required("context_length")?,
            tied_output: gguf.tensor(names::OUTPUT).is_none(),
            has_qkv_bias,
            has_qk_norm: arch.has_qk_norm(),
        })
    }

    /// Rows of the query projection.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn k_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }

    /// Every tensor the model reads, with the shape it must have (ggml order).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<u64>)> {
        let [e, v, ff] = [self.n_embd, self.n_vocab, self.n_ff].map(|x| x as u64);
        let [q, kd, vd] = [self.q_dim(), self.k_dim(), self.v_dim()].map(|x| x as u64);
        let mut out = vec![
            (names::TOKEN_EMBD.to_string(), vec![e, v]),
            (names::OUTPUT_NORM.to_string(), vec![e]),
        ];
        if !self.tied_output {
            out.push((names::OUTPUT.to_string(), vec![e, v]));
        }
        if self.has_rope_freqs {
            out.push((
                names::ROPE_FREQS.to_string(),
                vec![self.rope_dim as u64 / 2],
            ));
        }
        for l in 0..self.n_layer {
            let mut layer = vec![
                ("attn_norm.weight", vec![e]),
                ("attn_q.weight", vec![e, q]),
                ("attn_k.weight", vec![e, kd]),
                ("attn_v.weight", vec![e, vd]),
                (
                    "attn_output.weight",
                    vec![self.n_head as u64 * self.head_dim_v as u64, e],
                ),
                ("ffn_norm.weight", vec![e]),
                ("ffn_gate.weight", vec![e, ff]),
                ("ffn_up.weight", vec![e, ff]),
                ("ffn_down.weight", vec![ff, e]),
            ];
            if self.has_qkv_bias {
                layer.extend([
                    ("attn_q.bias", vec![q]),
                    ("attn_k.bias", vec![kd]),
                    ("attn_v.bias", vec![vd]),
                ]);
            }
            if self.has_qk_norm {
                let d = self.head_dim as u64;
                layer.extend([
                    ("attn_q_norm.weight", vec![d]),
                    ("attn_k_norm.weight", vec![d]),
                ]);
            }
            out.extend(layer.into_iter().map(|(n, s)| (names::layer(l, n), s)));
        }
        out
    }

    /// Checks that every tensor the model reads is present, shaped as expected, and of a type
    /// this crate can decode.
    pub fn check_tensors(&self, gguf: &Gguf) -> Result<(), ModelError> {
        for (name, want) in self.expected_tensors() {
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
