//! The supported architectures, one unit each. An architecture reads its file's metadata into
//! the shared description ([`super::spec`]): hyper-parameters, and per layer a kind. Nothing
//! else in Hearth knows an architecture by name.
//!
//! To add a dense (attention-only) variant, add a row to `dense::ARCHS`. An architecture with
//! new layer kinds gets its own file here and a line in [`all`]; new operations are then lowered
//! by the CPU reference (`model::cpu`) and the GPU plan (`hearth-gpu`'s `plan`).

mod dense;
mod qwen35;

use super::meta::{bad, Meta};
use super::spec::{Attention, Layer, Rope, RopeStyle};
use super::ModelError;

/// One supported architecture.
#[derive(Debug)]
pub struct Arch {
    /// The GGUF name, which also prefixes the architecture's metadata keys.
    pub name: &'static str,
    /// Who uses it, for messages and listings.
    pub models: &'static str,
    /// The trunk's layers from the metadata, given the block count.
    pub(super) layers: fn(&Meta, usize) -> Result<Vec<Layer>, ModelError>,
}

impl PartialEq for Arch {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Every architecture Hearth runs: the one list the CLI, the package and its pages read.
pub fn all() -> impl Iterator<Item = &'static Arch> {
    dense::ARCHS.iter().chain([&qwen35::QWEN35])
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

/// Softmax attention as the file's `attention.*` and `rope.*` keys describe it.
pub(super) fn read_attention(
    m: &Meta,
    style: RopeStyle,
    qkv_bias: bool,
    qk_norm: bool,
    output_gate: bool,
) -> Result<Attention, ModelError> {
    let n_embd = m.required("embedding_length")?;
    let n_head = m.required("attention.head_count")?;
    let n_head_kv = m.count("attention.head_count_kv")?.unwrap_or(n_head);
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
        }),
        qkv_bias,
        qk_norm,
        output_gate,
    })
}
