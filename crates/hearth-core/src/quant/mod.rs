//! ggml tensor types: their table ([`FORMATS`]), and conversion between their bytes and f32.

mod float;
mod formats;
mod kquants;
mod legacy;
mod quantize;

pub use formats::{Codec, Format, GgmlType, OnGpu, FORMATS};
pub use quantize::quantize;

pub(crate) use kquants::{scale_min_k4, scale_q3_k};

/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantError {
    #[error("tensor type {0} cannot be decoded (supported: {list})", list = decoded_names())]
    UnsupportedDequant(GgmlType),
    #[error("quantizing to {0} is not supported")]
    UnsupportedQuant(GgmlType),
    #[error("{elements} elements are not a whole number of {ty} blocks of {block}")]
    PartialBlock {
        ty: GgmlType,
        elements: usize,
        block: usize,
    },
    #[error("{ty}: {got} bytes given where {want} are needed")]
    ByteLength {
        ty: GgmlType,
        got: usize,
        want: usize,
    },
}

fn decoded_names() -> String {
    GgmlType::DECODED.map(GgmlType::name).join(", ")
}

/// Checks that `src` holds exactly the blocks for `elements` values of `ty`.
fn check_lengths(ty: GgmlType, src_len: usize, elements: usize) -> Result<(), QuantError> {
    let (block, size) = ty.block_geometry();
    if elements % block != 0 {
        return Err(QuantError::PartialBlock {
            ty,
            elements,
            block,
        });
    }
    let want = elements / block * size;
    if src_len != want {
        return Err(QuantError::ByteLength {
            ty,
            got: src_len,
            want,
        });
    }
    Ok(())
}

/// Decodes `dst.len()` values of type `ty` from `src`, bit-exactly as ggml's reference
/// dequantizers do.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), dst.len())?;
    let codec = ty.codec().ok_or(QuantError::UnsupportedDequant(ty))?;
    (codec.dequantize)(src, dst);
    Ok(())
}
