//! Checks the quant code against gguf-py's numpy implementation, through fixtures written by
//! `tests/fixtures/make_quant_blocks.py` (see there for the file format).

use std::io::Read;

use hearth_core::quant::{dequantize, quantize, GgmlType};

/// Blocks with gguf-py's decoding of them (`Dequant`), or f32 input with gguf-py's encoding of
/// it (`Quant`).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dequant,
    Quant,
}

struct Case {
    kind: Kind,
    ty: GgmlType,
    bytes: Vec<u8>,
    values: Vec<f32>,
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = r.split_at(n);
    *r = tail;
    head
}

fn load_cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/quant/blocks.bin.gz"
    );
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut data)
        .unwrap();
    let mut r = data.strip_prefix(b"HQB1").expect("fixture magic");

    let mut cases = Vec::new();
    while !r.is_empty() {
        let head = take(&mut r, 13);
        let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().unwrap());
        let kind = match head[0] {
            0 => Kind::Dequant,
            1 => Kind::Quant,
            k => panic!("unknown record kind {k}"),
        };
        let ty = GgmlType::from_id(u32_at(1)).expect("known type id");
        let (n_elements, n_bytes) = (u32_at(5) as usize, u32_at(9) as usize);
        let bytes = take(&mut r, n_bytes).to_vec();
        let values = take(&mut r, 4 * n_elements)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        cases.push(Case {
            kind,
            ty,
            bytes,
            values,
        });
    }
    cases
}

/// Bit equality, except that any two NaNs match (NaN payloads differ between f16 converters).
fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn dequantize_matches_gguf_py() {
    let mut covered = Vec::new();
    for case in load_cases().iter().filter(|c| c.kind == Kind::Dequant) {
        let mut got = vec![0.0; case.values.len()];
        dequantize(case.ty, &case.bytes, &mut got).unwrap();
        let block = case.ty.block_size();
        for (i, (&g, &w)) in got.iter().zip(&case.values).enumerate() {
            assert!(
                same(g, w),
                "{} block {} element {}: got {g:e} ({:#010x}), gguf-py {w:e} ({:#010x})",
                case.ty,
                i / block,
                i % block,
                g.to_bits(),
                w.to_bits()
            );
        }
        covered.push(case.ty);
    }
    for ty in GgmlType::DECODED {
        assert!(covered.contains(&ty), "fixture has no {ty} blocks");
    }
}

#[test]
fn quantize_matches_gguf_py() {
    let mut covered = Vec::new();
    for case in load_cases().iter().filter(|c| c.kind == Kind::Quant) {
        let got = quantize(case.ty, &case.values).unwrap();
        assert_eq!(got.len(), case.bytes.len(), "{}", case.ty);
        let size = case.ty.block_geometry().1;
        for (i, (g, w)) in got.chunks(size).zip(case.bytes.chunks(size)).enumerate() {
            assert_eq!(g, w, "{} block {i}", case.ty);
        }
        covered.push(case.ty);
    }
    use GgmlType::*;
    for ty in [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
        assert!(covered.contains(&ty), "fixture has no {ty} quantization");
    }
}
