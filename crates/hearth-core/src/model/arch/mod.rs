//! The supported architectures, one unit each. An architecture reads its file's metadata into
//! the shared description ([`super::spec`]): hyper-parameters, and per layer a kind. Nothing
//! else in Hearth knows an architecture by name.
//!
//! To add a dense (attention-only) variant, add a row to `dense::ARCHS`. An architecture with
//! new layer kinds gets its own file here and a line in [`all`]; new operations are then lowered
//! by the CPU reference (`model::cpu`) and the GPU plan (`hearth-gpu`'s `plan`).

mod dense;
mod gemma3;
mod gpt2;
mod lfm2;
mod qwen35;

use super::meta::{bad, Meta};
pub use super::spec::Arch;
use super::spec::{Attention, LongRope, ModelSpec, Norm, Rope, RopeStyle};
use super::tensor::{Role, TensorId};
use super::ModelError;
use crate::gguf::Gguf;

/// Every architecture Hearth runs: the one list the CLI, the package and its pages read.
pub fn all() -> impl Iterator<Item = &'static Arch> {
    dense::ARCHS
        .iter()
        .chain([&qwen35::QWEN35, &lfm2::LFM2, &gpt2::GPT2, &gemma3::GEMMA3])
}

/// The architecture named `name` in a file's `general.architecture`.
pub fn find(name: &str) -> Result<&'static Arch, ModelError> {
    all()
        .find(|a| a.name == name)
        .ok_or_else(|| ModelError::UnsupportedArchitecture(name.to_string()))
}

/// The supported names, comma-separated.
pub fn supported() -> String {
    all().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

impl ModelSpec {
    /// The description of the model in `gguf`, read by the architecture it names.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, ModelError> {
        let arch = find(gguf.architecture().ok_or(ModelError::NoArchitecture)?)?;
        let m = Meta {
            gguf,
            prefix: arch.name,
        };
        let n_embd = m.required("embedding_length")?;
        let embd = TensorId::global(Role::TokenEmbd).name();
        let token_embd = gguf
            .tensor(&embd)
            .ok_or_else(|| ModelError::MissingTensor(embd.clone()))?;
        let n_vocab = match token_embd.dims.as_slice() {
            [e, v] if *e == n_embd as u64 && (1..1 << 24).contains(v) => *v as usize,
            dims => {
                return Err(ModelError::BadShape {
                    name: embd,
                    got: dims.to_vec(),
                    want: vec![n_embd as u64, 0],
                })
            }
        };
        // Every layer has at least five tensors: a layer count the file cannot back is
        // refused before anything is sized by it.
        let n_layer = m.required("block_count")?;
        if n_layer > gguf.tensors().len() / 5 {
            return Err(bad(format!(
                "{n_layer} layers, but the file holds {} tensors",
                gguf.tensors().len()
            )));
        }
        let layers = (arch.layers)(&m, n_layer)?;
        let eps_key = match arch.norm {
            Norm::Rms => "attention.layer_norm_rms_epsilon",
            Norm::Layer => "attention.layer_norm_epsilon",
        };
        let rms_eps = m
            .float(eps_key)?
            .ok_or_else(|| ModelError::MissingKey(m.key(eps_key)))?;
        Ok(ModelSpec {
            arch,
            n_vocab,
            n_embd,
            embd_scale: if arch.scale_embd {
                (n_embd as f32).sqrt()
            } else {
                1.0
            },
            rms_eps,
            context_length: m.required("context_length")?,
            // LFM2's converter stores the final norm as `token_embd_norm`.
            output_norm: if m.has_tensor(Role::TokenEmbdNorm.gguf_name())
                && !m.has_tensor(Role::OutputNorm.gguf_name())
            {
                Role::TokenEmbdNorm
            } else {
                Role::OutputNorm
            },
            head: if m.has_tensor(Role::Output.gguf_name()) {
                Role::Output
            } else {
                Role::TokenEmbd
            },
            rope_freqs: m.has_tensor(Role::RopeFreqs.gguf_name()),
            layers,
        })
    }
}

/// Softmax attention as the file's `attention.*` and `rope.*` keys describe it.
pub(super) fn read_attention(
    m: &Meta,
    style: RopeStyle,
    qkv_bias: bool,
    qk_norm: bool,
    output_gate: bool,
) -> Result<Attention, ModelError> {
    let n_head_kv = m.count("attention.head_count_kv")?;
    read_attention_with(m, n_head_kv, style, qkv_bias, qk_norm, output_gate)
}

/// As [`read_attention`], with `n_head_kv` key/value heads (where the file gives a count per
/// layer), or as many as query heads.
pub(super) fn read_attention_with(
    m: &Meta,
    n_head_kv: Option<usize>,
    style: RopeStyle,
    qkv_bias: bool,
    qk_norm: bool,
    output_gate: bool,
) -> Result<Attention, ModelError> {
    let n_embd = m.required("embedding_length")?;
    let n_head = m.required("attention.head_count")?;
    let n_head_kv = n_head_kv.unwrap_or(n_head);
    if n_head % n_head_kv != 0 {
        return Err(bad(format!(
            "{n_head} query heads cannot share {n_head_kv} key/value heads"
        )));
    }
    let head_dim = match m.count("attention.key_length")? {
        Some(d) => d,
        None if n_embd % n_head == 0 => n_embd / n_head,
        None => {
            return Err(bad(format!(
                "embedding {n_embd} is not a multiple of {n_head} heads"
            )))
        }
    };
    let head_dim_v = m.count("attention.value_length")?.unwrap_or(head_dim);
    let rope_dim = m.count("rope.dimension_count")?.unwrap_or(head_dim);
    if rope_dim > head_dim || rope_dim % 2 != 0 {
        return Err(bad(format!(
            "rope dimension {rope_dim} for heads of {head_dim}"
        )));
    }
    let freq_scale = match m.str("rope.scaling.type") {
        None | Some("none") => 1.0,
        Some("linear") => 1.0 / m.float("rope.scaling.factor")?.unwrap_or(1.0),
        Some(other) => return Err(bad(format!("rope scaling {other:?} is not supported"))),
    };
    Ok(Attention {
        n_head,
        n_head_kv,
        head_dim,
        head_dim_v,
        rope: Some(Rope {
            dim: rope_dim,
            base: m.float("rope.freq_base")?.unwrap_or(10000.0),
            style,
            freq_scale,
            freqs: m.has_tensor(super::tensor::Role::RopeFreqs.gguf_name()),
            long_rope: long_rope(m)?,
        }),
        qkv_bias,
        qk_norm,
        output_gate,
        scale: 1.0 / (head_dim as f32).sqrt(),
        window: None,
        fused_qkv: false,
        out_bias: false,
    })
}

/// LongRoPE where the file holds its factor sets (both are then required). The converter
/// writes no scaling type for it, only the factors and the `rope.scaling.*` keys.
fn long_rope(m: &Meta) -> Result<Option<LongRope>, ModelError> {
    let has = |role: Role| m.has_tensor(role.gguf_name());
    if !has(Role::RopeFactorsLong) && !has(Role::RopeFactorsShort) {
        return Ok(None);
    }
    Ok(Some(LongRope {
        original_context: m.required("rope.scaling.original_context_length")?,
        attn_factor: m.float("rope.scaling.attn_factor")?.unwrap_or(1.0),
    }))
}
