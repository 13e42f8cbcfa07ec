//! The table of tensor types: one row per ggml type with its id, name and block geometry and,
//! for the types decoded here, where a block keeps its scales, the functions that decode and
//! encode it and how the GPU engine holds it. Everything else that depends on the type reads
//! its row, as ggml's `type_traits` are read.

use std::ops::Range;

use super::{float, kquants, legacy, quantize, QK_K};

/// Every tensor type a GGUF file may name, in the order of [`FORMATS`]. The geometry of each is
/// known so that a file can be validated and inspected even where its blocks cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// One tensor type's row.
pub struct Format {
    pub ty: GgmlType,
    /// ggml's numeric id, as GGUF tensor infos store it.
    pub id: u32,
    /// The name ggml and llama.cpp print ("Q4_K", "F16").
    pub name: &'static str,
    /// Values per block.
    pub values: usize,
    /// Bytes per block.
    pub bytes: usize,
    /// How blocks are decoded, for the types decoded here.
    pub codec: Option<Codec>,
}

/// Decodes `dst.len()` values from the whole blocks in `src`.
pub type Decode = fn(src: &[u8], dst: &mut [f32]);

/// Encodes one block's values into its bytes.
pub type Encode = fn(src: &[f32], dst: &mut [u8]);

/// A decoded type's block layout and the functions that read and write it.
pub struct Codec {
    /// The block's f16 scales (`d`, then `m` or `dmin` where it has one), at its start or its
    /// end; empty for the plain float types.
    pub scales: Range<usize>,
    /// The rest of the block: the quants, and the K-quants' packed sub-block scales.
    pub body: Range<usize>,
    /// Decodes whole blocks, bit-exactly as ggml's reference dequantizer does.
    pub dequantize: Decode,
    /// Encodes one block, where the type can be written.
    pub quantize: Option<Encode>,
    pub gpu: OnGpu,
}

/// How the WebGPU engine (hearth-gpu) holds and decodes a type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnGpu {
    /// `unit_{wgsl}` in shaders/quant.wgsl decodes the blocks as the file has them, except that
    /// with `scales_move` each block's scales go to one word in a region after all bodies,
    /// keeping bodies at whole words where the scales would break that (or to give formats
    /// that differ only in their scales one body layout).
    Unit {
        wgsl: &'static str,
        scales_move: bool,
    },
    /// Decoded to F32 as it is uploaded, then held and decoded as F32.
    AsF32,
}

impl Codec {
    /// Whether the GPU engine moves each block's scales to its scale region.
    pub fn scales_move(&self) -> bool {
        matches!(
            self.gpu,
            OnGpu::Unit {
                scales_move: true,
                ..
            }
        )
    }
}

/// A type whose blocks are only measured.
const fn measured(
    ty: GgmlType,
    id: u32,
    name: &'static str,
    values: usize,
    bytes: usize,
) -> Format {
    Format {
        ty,
        id,
        name,
        values,
        bytes,
        codec: None,
    }
}

const fn unit(wgsl: &'static str, scales_move: bool) -> OnGpu {
    OnGpu::Unit { wgsl, scales_move }
}

use GgmlType::*;

#[rustfmt::skip]
pub static FORMATS: [Format; 32] = [
    Format { ty: F32, id: 0, name: "F32", values: 1, bytes: 4, codec: Some(Codec {
        scales: 0..0, body: 0..4, gpu: unit("f32", false),
        dequantize: float::f32_to_f32, quantize: Some(quantize::f32_block) }) },
    Format { ty: F16, id: 1, name: "F16", values: 1, bytes: 2, codec: Some(Codec {
        scales: 0..0, body: 0..2, gpu: unit("f16", false),
        dequantize: float::f16_to_f32, quantize: Some(quantize::f16_block) }) },
    Format { ty: Q4_0, id: 2, name: "Q4_0", values: 32, bytes: 18, codec: Some(Codec {
        scales: 0..2, body: 2..18, gpu: unit("q4_0", true),
        dequantize: legacy::dequantize_q4_0, quantize: Some(quantize::q4_0) }) },
    Format { ty: Q4_1, id: 3, name: "Q4_1", values: 32, bytes: 20, codec: Some(Codec {
        scales: 0..4, body: 4..20, gpu: unit("q4_1", true),
        dequantize: legacy::dequantize_q4_1, quantize: Some(quantize::q4_1) }) },
    Format { ty: Q5_0, id: 6, name: "Q5_0", values: 32, bytes: 22, codec: Some(Codec {
        scales: 0..2, body: 2..22, gpu: unit("q5_0", true),
        dequantize: legacy::dequantize_q5_0, quantize: Some(quantize::q5_0) }) },
    Format { ty: Q5_1, id: 7, name: "Q5_1", values: 32, bytes: 24, codec: Some(Codec {
        scales: 0..4, body: 4..24, gpu: unit("q5_1", true),
        dequantize: legacy::dequantize_q5_1, quantize: Some(quantize::q5_1) }) },
    Format { ty: Q8_0, id: 8, name: "Q8_0", values: 32, bytes: 34, codec: Some(Codec {
        scales: 0..2, body: 2..34, gpu: unit("q8_0", true),
        dequantize: legacy::dequantize_q8_0, quantize: Some(quantize::q8_0) }) },
    measured(Q8_1, 9, "Q8_1", 32, 36),
    Format { ty: Q2_K, id: 10, name: "Q2_K", values: QK_K, bytes: 84, codec: Some(Codec {
        scales: 80..84, body: 0..80, gpu: unit("q2_k", false),
        dequantize: kquants::dequantize_q2_k, quantize: Some(quantize::q2_k) }) },
    Format { ty: Q3_K, id: 11, name: "Q3_K", values: QK_K, bytes: 110, codec: Some(Codec {
        scales: 108..110, body: 0..108, gpu: unit("q3_k", true),
        dequantize: kquants::dequantize_q3_k, quantize: Some(quantize::q3_k) }) },
    Format { ty: Q4_K, id: 12, name: "Q4_K", values: QK_K, bytes: 144, codec: Some(Codec {
        scales: 0..4, body: 4..144, gpu: unit("q4_k", false),
        dequantize: kquants::dequantize_q4_k, quantize: Some(quantize::q4_k) }) },
    Format { ty: Q5_K, id: 13, name: "Q5_K", values: QK_K, bytes: 176, codec: Some(Codec {
        scales: 0..4, body: 4..176, gpu: unit("q5_k", false),
        dequantize: kquants::dequantize_q5_k, quantize: Some(quantize::q5_k) }) },
    Format { ty: Q6_K, id: 14, name: "Q6_K", values: QK_K, bytes: 210, codec: Some(Codec {
        scales: 208..210, body: 0..208, gpu: unit("q6_k", true),
        dequantize: kquants::dequantize_q6_k, quantize: Some(quantize::q6_k) }) },
    measured(Q8_K, 15, "Q8_K", QK_K, 292),
    measured(IQ2_XXS, 16, "IQ2_XXS", QK_K, 66),
    measured(IQ2_XS, 17, "IQ2_XS", QK_K, 74),
    measured(IQ3_XXS, 18, "IQ3_XXS", QK_K, 98),
    measured(IQ1_S, 19, "IQ1_S", QK_K, 50),
    measured(IQ4_NL, 20, "IQ4_NL", 32, 18),
    measured(IQ3_S, 21, "IQ3_S", QK_K, 110),
    measured(IQ2_S, 22, "IQ2_S", QK_K, 82),
    measured(IQ4_XS, 23, "IQ4_XS", QK_K, 136),
    measured(I8, 24, "I8", 1, 1),
    measured(I16, 25, "I16", 1, 2),
    measured(I32, 26, "I32", 1, 4),
    measured(I64, 27, "I64", 1, 8),
    measured(F64, 28, "F64", 1, 8),
    measured(IQ1_M, 29, "IQ1_M", QK_K, 56),
    Format { ty: BF16, id: 30, name: "BF16", values: 1, bytes: 2, codec: Some(Codec {
        scales: 0..0, body: 0..2, gpu: OnGpu::AsF32,
        dequantize: float::bf16_to_f32, quantize: Some(quantize::bf16_block) }) },
    measured(TQ1_0, 34, "TQ1_0", QK_K, 54),
    measured(TQ2_0, 35, "TQ2_0", QK_K, 66),
    measured(MXFP4, 39, "MXFP4", 32, 17),
];

const fn len(r: &Range<usize>) -> usize {
    r.end - r.start
}

/// What the rest of the crate and the GPU engine rely on, checked for every row when this
/// crate compiles.
const _: () = {
    let mut i = 0;
    while i < FORMATS.len() {
        let f = &FORMATS[i];
        assert!(f.ty as usize == i, "rows are in GgmlType's order");
        assert!(f.values > 0 && f.bytes > 0);
        let mut j = 0;
        while j < i {
            assert!(FORMATS[j].id != f.id, "ids are unique");
            j += 1;
        }
        if let Some(c) = &f.codec {
            let (s, b) = (&c.scales, &c.body);
            assert!(
                len(s) + len(b) == f.bytes
                    && (s.start == 0 && s.end == b.start && b.end == f.bytes
                        || b.start == 0 && b.end == s.start && s.end == f.bytes),
                "scales and body make up the block, one after the other"
            );
            match c.gpu {
                OnGpu::Unit { scales_move, .. } => {
                    assert!(
                        if f.values == 1 {
                            4 % f.bytes == 0
                        } else {
                            f.values % 32 == 0
                        },
                        "plain floats pack into words; blocks are whole 32-value units"
                    );
                    if scales_move {
                        assert!(
                            len(s) > 0 && len(s) <= 4 && len(b) % 4 == 0,
                            "scales fit a word, bodies are whole words"
                        );
                    } else {
                        assert!(f.values == 1 || f.bytes % 4 == 0, "blocks are whole words");
                    }
                }
                OnGpu::AsF32 => assert!(
                    matches!(
                        &FORMATS[F32 as usize].codec,
                        Some(Codec {
                            gpu: OnGpu::Unit { .. },
                            ..
                        })
                    ),
                    "F32 has a unit decoder"
                ),
            }
        }
        i += 1;
    }
};

const fn decoded_count() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < FORMATS.len() {
        if FORMATS[i].codec.is_some() {
            n += 1;
        }
        i += 1;
    }
    n
}

impl GgmlType {
    /// The type with ggml's numeric id, as stored in GGUF tensor infos.
    pub fn from_id(id: u32) -> Option<Self> {
        FORMATS.iter().find(|f| f.id == id).map(|f| f.ty)
    }

    /// The type's row of [`FORMATS`].
    pub fn format(self) -> &'static Format {
        &FORMATS[self as usize]
    }

    /// Its block layout and decoders, if it is decoded here.
    pub fn codec(self) -> Option<&'static Codec> {
        self.format().codec.as_ref()
    }

    pub fn id(self) -> u32 {
        self.format().id
    }

    /// The name ggml and llama.cpp print ("Q4_K", "F16").
    pub fn name(self) -> &'static str {
        self.format().name
    }

    /// (elements per block, bytes per block).
    pub fn block_geometry(self) -> (usize, usize) {
        (self.format().values, self.format().bytes)
    }

    pub fn block_size(self) -> usize {
        self.format().values
    }

    /// Bytes taken by `elements` values, or `None` when they are not whole blocks (or overflow).
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let (block, size) = self.block_geometry();
        if elements % block as u64 != 0 {
            return None;
        }
        (elements / block as u64).checked_mul(size as u64)
    }

    /// The types [`dequantize`](super::dequantize) decodes, in the table's order.
    pub const DECODED: [GgmlType; decoded_count()] = {
        let mut out = [F32; decoded_count()];
        let (mut i, mut n) = (0, 0);
        while i < FORMATS.len() {
            if FORMATS[i].codec.is_some() {
                out[n] = FORMATS[i].ty;
                n += 1;
            }
            i += 1;
        }
        out
    };

    /// Whether [`dequantize`](super::dequantize) can decode this type.
    pub fn can_dequantize(self) -> bool {
        self.codec().is_some()
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
