//! Re-quantizing a whole model file: which type each tensor gets, following llama.cpp's
//! choices for its named schemes.

use super::tensor::{Role, TensorId, Use};
use crate::gguf::{write_gguf, ByteSource, GgufFile, TensorInfo, TensorToWrite, Value};
use crate::quant::{dequantize, quantize, GgmlType, QuantError, QK_K};

/// The schemes `hearth quantize` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Q8_0,
    Q4_0,
    /// Q4_K, with Q6_K for the output head and for half of the attn_v and ffn_down tensors.
    Q4KM,
    /// Q5_K, with Q6_K where Q4_K_M has it.
    Q5KM,
    /// Q6_K throughout.
    Q6K,
    /// F16 throughout (vectors stay F32), as llama.cpp's converter writes `--outtype f16`.
    F16,
}

impl Scheme {
    /// llama.cpp's `general.file_type` value for the scheme.
    fn file_type(self) -> u32 {
        match self {
            Scheme::Q8_0 => 7,
            Scheme::Q4_0 => 2,
            Scheme::Q4KM => 15,
            Scheme::Q5KM => 17,
            Scheme::Q6K => 18,
            Scheme::F16 => 1,
        }
    }

    fn base_type(self) -> GgmlType {
        match self {
            Scheme::Q8_0 => GgmlType::Q8_0,
            Scheme::Q4_0 => GgmlType::Q4_0,
            Scheme::Q4KM => GgmlType::Q4_K,
            Scheme::Q5KM => GgmlType::Q5_K,
            Scheme::Q6K => GgmlType::Q6_K,
            Scheme::F16 => GgmlType::F16,
        }
    }
}

/// llama.cpp's rule for which layers get more bits: the first and last eighth, and every third
/// layer between.
fn use_more_bits(layer: usize, n_layer: usize) -> bool {
    layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2
}

/// The type a tensor gets under `scheme` in a model of `n_layer` layers.
pub fn target_type(t: &TensorInfo, scheme: Scheme, n_layer: usize, has_output: bool) -> GgmlType {
    let id = TensorId::parse(&t.name);
    // Norms, biases, rope factors and small per-head tables stay exact, and so do learned
    // positions, as llama.cpp's quantizer and converter leave them.
    if t.dims.len() < 2
        || !t.name.ends_with(".weight")
        || id.is_some_and(|id| id.role.usage() == Use::Vector || id.role == Role::PositionEmbd)
    {
        return GgmlType::F32;
    }
    let row = t.dims[0] as usize;
    let role = id.map(|id| id.role);
    let is_head = role == Some(Role::Output) || (!has_output && role == Some(Role::TokenEmbd));
    let more_bits = || {
        id.and_then(|id| id.layer)
            .is_some_and(|l| use_more_bits(l, n_layer))
    };
    let ty = if is_head {
        match scheme {
            Scheme::F16 => GgmlType::F16,
            Scheme::Q8_0 => GgmlType::Q8_0,
            _ if row % QK_K != 0 => GgmlType::Q8_0,
            _ => GgmlType::Q6_K,
        }
    } else if matches!(scheme, Scheme::Q4KM | Scheme::Q5KM)
        && matches!(role, Some(Role::AttnV | Role::FfnDown))
        && more_bits()
    {
        GgmlType::Q6_K
    } else {
        scheme.base_type()
    };
    // Rows that are not whole super-blocks take llama.cpp's fallbacks.
    let ty = match ty {
        GgmlType::Q4_K if row % QK_K != 0 => GgmlType::Q5_0,
        GgmlType::Q5_K if row % QK_K != 0 => GgmlType::Q5_1,
        GgmlType::Q6_K if row % QK_K != 0 => GgmlType::Q8_0,
        other => other,
    };
    if row % ty.block_size() == 0 {
        ty
    } else {
        GgmlType::F16
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequantizeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("tensor {name:?}: {source}")]
    Quant { name: String, source: QuantError },
    #[error("the file names no general.architecture / block_count")]
    NotAModel,
}

/// Writes `file` re-quantized under `scheme` to `out`, one tensor at a time;
/// `progress(done, total)` counts tensors.
pub fn requantize<S: ByteSource>(
    file: &GgufFile<S>,
    scheme: Scheme,
    out: impl std::io::Write,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), RequantizeError> {
    let h = &file.header;
    let arch = h.architecture().ok_or(RequantizeError::NotAModel)?;
    let n_layer = h
        .get_u64(&format!("{arch}.block_count"))
        .ok_or(RequantizeError::NotAModel)? as usize;
    let has_output = h.tensor(Role::Output.gguf_name()).is_some();

    let mut metadata: Vec<(String, Value)> = h
        .metadata()
        .iter()
        .filter(|(k, _)| k != "general.file_type" && k != "general.quantization_version")
        .cloned()
        .collect();
    metadata.push(("general.file_type".into(), Value::U32(scheme.file_type())));
    metadata.push(("general.quantization_version".into(), Value::U32(2)));

    let plan: Vec<TensorToWrite> = h
        .tensors()
        .iter()
        .map(|t| TensorToWrite {
            ty: target_type(t, scheme, n_layer, has_output),
            ..t.into()
        })
        .collect();
    let total = plan.len();
    write_gguf(out, &metadata, &plan, |i| {
        let (src, dst) = (&h.tensors()[i], &plan[i]);
        let err = |source| RequantizeError::Quant {
            name: src.name.clone(),
            source,
        };
        let bytes = file.tensor_bytes(src)?;
        let out = if src.ty == dst.ty {
            bytes.into_owned()
        } else {
            let mut values = vec![0.0; src.n_elements() as usize];
            dequantize(src.ty, &bytes, &mut values).map_err(err)?;
            quantize(dst.ty, &values).map_err(err)?
        };
        progress(i + 1, total);
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(name: &str, dims: &[u64], scheme: Scheme) -> GgmlType {
        let info = TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ty: GgmlType::F32,
            offset: 0,
            n_bytes: 0,
        };
        // Eight layers: layer 0 gets more bits, layer 2 does not.
        target_type(&info, scheme, 8, false)
    }

    #[test]
    fn k_quant_and_float_schemes_follow_llama_cpp() {
        use GgmlType::*;
        let cases = [
            (Scheme::Q5KM, [Q6_K, Q5_K, Q6_K, Q5_K, Q5_1, F32]),
            (Scheme::Q4KM, [Q6_K, Q4_K, Q6_K, Q4_K, Q5_0, F32]),
            (Scheme::Q6K, [Q6_K, Q6_K, Q6_K, Q6_K, Q8_0, F32]),
            (Scheme::F16, [F16, F16, F16, F16, F16, F32]),
            (Scheme::Q8_0, [Q8_0, Q8_0, Q8_0, Q8_0, Q8_0, F32]),
        ];
        for (scheme, want) in cases {
            let got = [
                ty("token_embd.weight", &[512, 1000], scheme),
                ty("blk.2.attn_q.weight", &[512, 512], scheme),
                ty("blk.0.attn_v.weight", &[512, 256], scheme),
                ty("blk.2.attn_v.weight", &[512, 256], scheme),
                ty("blk.2.ffn_down.weight", &[96, 512], scheme),
                ty("blk.2.attn_norm.weight", &[512], scheme),
            ];
            assert_eq!(got, want, "{scheme:?}");
        }
    }
}
