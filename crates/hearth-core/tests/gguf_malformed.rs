//! Malformed GGUF input: every case is a clear error, never a panic, and a property test over
//! truncations and byte flips finds no input that panics the reader or the model loader.

use hearth_core::gguf::{
    rewrite_metadata, write_gguf, Array, Gguf, GgufError, GgufFile, TensorToWrite, Value,
};
use hearth_core::model::CpuModel;
use hearth_core::quant::GgmlType;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A tiny but complete llama model file with metadata of every value type.
fn sample_file() -> Vec<u8> {
    let (e, v, ff, layers) = (32u64, 40u64, 64u64, 1);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.embedding_length".into(), Value::U32(e as u32)),
        ("llama.block_count".into(), Value::U32(layers)),
        ("llama.feed_forward_length".into(), Value::U64(ff)),
        ("llama.attention.head_count".into(), Value::U32(4)),
        ("llama.attention.head_count_kv".into(), Value::U16(2)),
        ("llama.context_length".into(), Value::I32(64)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F64(10000.0)),
        ("t.u8".into(), Value::U8(1)),
        ("t.i8".into(), Value::I8(-1)),
        ("t.i16".into(), Value::I16(-2)),
        ("t.i64".into(), Value::I64(-3)),
        ("t.bool".into(), Value::Bool(true)),
        (
            "t.strings".into(),
            Value::Array(Array::String(vec!["a".into(), "bé".into()])),
        ),
        (
            "t.nested".into(),
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::F32(vec![0.5]),
            ])),
        ),
        (
            "t.bools".into(),
            Value::Array(Array::Bool(vec![true, false])),
        ),
    ];
    meta.push(("general.alignment".into(), Value::U32(64)));
    let mut tensors = vec![
        TensorToWrite {
            name: "token_embd.weight".into(),
            dims: vec![e, v],
            ty: GgmlType::Q8_0,
        },
        TensorToWrite {
            name: "output_norm.weight".into(),
            dims: vec![e],
            ty: GgmlType::F32,
        },
    ];
    for (name, dims, ty) in [
        ("attn_norm.weight", vec![e], GgmlType::F32),
        ("attn_q.weight", vec![e, e], GgmlType::F16),
        ("attn_k.weight", vec![e, e / 2], GgmlType::Q4_0),
        ("attn_v.weight", vec![e, e / 2], GgmlType::Q8_0),
        ("attn_output.weight", vec![e, e], GgmlType::BF16),
        ("ffn_norm.weight", vec![e], GgmlType::F32),
        ("ffn_gate.weight", vec![e, ff], GgmlType::Q5_0),
        ("ffn_up.weight", vec![e, ff], GgmlType::Q4_1),
        ("ffn_down.weight", vec![ff, e], GgmlType::Q5_1),
    ] {
        tensors.push(TensorToWrite {
            name: format!("blk.0.{name}"),
            dims,
            ty,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut out = Vec::new();
    write_gguf::<std::io::Error>(&mut out, &meta, &tensors, |i| {
        let t = &tensors[i];
        let n = t.ty.bytes_for(t.dims.iter().product()).unwrap() as usize;
        // Random bytes, but with block scales kept finite and small.
        let mut bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let (_, block) = t.ty.block_geometry();
        if t.ty == GgmlType::F32 {
            for c in bytes.chunks_exact_mut(4) {
                c.copy_from_slice(&rng.random_range(-1.0f32..1.0).to_le_bytes());
            }
        } else if t.ty == GgmlType::F16 || t.ty == GgmlType::BF16 {
            for c in bytes.chunks_exact_mut(2) {
                c.copy_from_slice(&[rng.random(), 0x3c & rng.random::<u8>()]);
            }
        } else {
            let scales = t.ty.codec().expect("a decoded type").scales.clone();
            for c in bytes.chunks_exact_mut(block) {
                for s in c[scales.clone()].chunks_exact_mut(2) {
                    s.copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                }
            }
        }
        Ok(bytes)
    })
    .unwrap();
    out
}

fn parse(bytes: &[u8]) -> Result<Gguf, GgufError> {
    Gguf::parse(bytes, bytes.len() as u64)
}

#[test]
fn sample_file_reads_back_and_runs() {
    let bytes = sample_file();
    let g = parse(&bytes).unwrap();
    assert_eq!(g.alignment, 64);
    assert_eq!(g.get_u64("llama.attention.head_count_kv"), Some(2));
    assert_eq!(g.get("t.i64"), Some(&Value::I64(-3)));
    assert_eq!(
        g.get_array("t.nested"),
        Some(&Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::F32(vec![0.5])
        ]))
    );
    for t in g.tensors() {
        assert_eq!(t.offset % 64, 0, "{} is aligned", t.name);
    }
    let file = GgufFile::open(bytes).unwrap();
    let model = CpuModel::load(&file, &mut |_, _| {}).unwrap();
    let mut cache = model.new_state(8);
    let logits = model.forward(&mut cache, &[1, 2, 3]).unwrap();
    assert_eq!(logits.len(), 40);
    assert!(logits.iter().all(|x| x.is_finite()));
}

#[test]
fn every_truncation_is_an_error_and_every_prefix_asks_for_more() {
    let bytes = sample_file();
    let full = parse(&bytes).unwrap();
    for n in 0..bytes.len() {
        // The file really ends here: an error, never a panic.
        assert!(parse(&bytes[..n]).is_err(), "truncated at {n} parsed");
        // Only a prefix of a longer file is at hand: more is asked for, or the header is done.
        match Gguf::parse(&bytes[..n], bytes.len() as u64) {
            Err(GgufError::NeedMore { have }) => assert_eq!(have, n as u64),
            Ok(g) => assert_eq!(g.tensors(), full.tensors()),
            Err(e) => panic!("prefix of {n} bytes: {e}"),
        }
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let bytes = sample_file();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut parsed, mut loaded) = (0, 0);
    for _ in 0..20_000 {
        let mut m = bytes.clone();
        let (flips, len) = (rng.random_range(1..=4), m.len());
        // Flips land in the header most of the time, where the structure is.
        hearth_fixtures::mangle(&mut rng, &mut m, flips, |rng| {
            let span = if rng.random_bool(0.8) {
                700.min(len)
            } else {
                len
            };
            rng.random_range(0..span)
        });
        if let Ok(file) = GgufFile::open(m) {
            parsed += 1;
            if let Ok(model) = CpuModel::load(&file, &mut |_, _| {}) {
                loaded += 1;
                let mut cache = model.new_state(4);
                let _ = model.forward(&mut cache, &[0, 1]);
            }
        }
    }
    // The mutations must reach deep enough to leave some files valid.
    assert!(
        parsed > 100 && loaded > 10,
        "parsed {parsed}, loaded {loaded}"
    );
}

/// Builds header bytes by hand for targeted cases.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend(s.as_bytes());
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to 32 and appends `data_len` zero bytes of tensor data.
    fn data(&mut self, data_len: usize) -> Vec<u8> {
        let mut b = self.0.clone();
        b.resize(b.len().next_multiple_of(32) + data_len, 0);
        b
    }
}

#[test]
fn targeted_malformations_give_clear_errors() {
    let err = |b: &[u8]| parse(b).unwrap_err();
    assert!(matches!(err(b"GGML\x03\0\0\0"), GgufError::BadMagic(_)));
    assert_eq!(err(&Raw::new(1, 0, 0).0), GgufError::UnsupportedVersion(1));
    // A big-endian file reads as version 0x03000000.
    assert_eq!(
        err(&Raw::new(3u32.swap_bytes(), 0, 0).0),
        GgufError::UnsupportedVersion(50331648)
    );
    assert!(matches!(
        err(&Raw::new(3, 0, u64::MAX).0),
        GgufError::CountTooLarge { .. }
    ));
    assert!(matches!(
        err(&Raw::new(3, u64::MAX, 0).0),
        GgufError::CountTooLarge { .. }
    ));
    // A string longer than the file.
    let mut r = Raw::new(3, 0, 1);
    r.u64(1 << 60);
    assert!(matches!(err(&r.0), GgufError::CountTooLarge { .. }));
    // An array claiming more elements than the file holds.
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(9).u32(4).u64(1 << 40);
    assert!(matches!(err(&r.0), GgufError::CountTooLarge { .. }));
    // Arrays nested far too deeply.
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(9);
    for _ in 0..10_000 {
        r.u32(9).u64(1);
    }
    assert!(matches!(err(&r.0), GgufError::ArrayTooDeep { .. }));
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(13).u32(0);
    assert!(matches!(
        err(&r.0),
        GgufError::UnknownValueType { tag: 13, .. }
    ));
    let mut r = Raw::new(3, 0, 1);
    r.str("k").u32(8).str("ok");
    r.0.pop();
    r.0.push(0xff);
    assert!(matches!(err(&r.0), GgufError::InvalidUtf8 { .. }));
    let mut r = Raw::new(3, 0, 2);
    r.str("k").u32(4).u32(1).str("k").u32(4).u32(2);
    assert_eq!(err(&r.0), GgufError::DuplicateKey("k".into()));
    let mut r = Raw::new(3, 0, 1);
    r.str("general.alignment").u32(4).u32(48);
    assert!(matches!(err(&r.0), GgufError::BadAlignment(_)));

    let one = |dims: &[u64], ty: u32, offset: u64, data: usize| {
        let mut r = Raw::new(3, 1, 0);
        r.tensor("t", dims, ty, offset);
        parse(&r.data(data))
    };
    assert!(one(&[8, 2], 0, 0, 64).is_ok());
    assert_eq!(
        one(&[8], 200, 0, 64).unwrap_err(),
        GgufError::UnknownTensorType {
            name: "t".into(),
            id: 200
        }
    );
    assert!(matches!(
        one(&[8, 2], 0, 0, 63).unwrap_err(),
        GgufError::TensorOutOfBounds { .. }
    ));
    assert!(matches!(
        one(&[8], 0, 32, 40).unwrap_err(),
        GgufError::TensorOutOfBounds { .. }
    ));
    assert!(matches!(
        one(&[8], 0, 7, 64).unwrap_err(),
        GgufError::BadTensor { .. }
    ));
    assert!(matches!(
        one(&[1 << 40, 1 << 40], 0, 0, 64).unwrap_err(),
        GgufError::BadTensor { .. }
    ));
    assert!(matches!(
        one(&[u64::MAX, 2], 0, 0, 64).unwrap_err(),
        GgufError::BadTensor { .. }
    ));
    assert!(matches!(
        one(&[8, 1, 1, 1, 1], 0, 0, 64).unwrap_err(),
        GgufError::BadTensor { .. }
    ));
    assert!(matches!(
        one(&[], 0, 0, 64).unwrap_err(),
        GgufError::BadTensor { .. }
    ));
    // Q4_0 rows must be whole blocks of 32.
    assert!(matches!(
        one(&[16], 2, 0, 64).unwrap_err(),
        GgufError::BadTensor { .. }
    ));

    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[16], 0, 0).tensor("b", &[16], 0, 32);
    assert!(matches!(
        parse(&r.data(96)).unwrap_err(),
        GgufError::OverlappingTensors(..)
    ));
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32);
    assert_eq!(
        parse(&r.data(64)).unwrap_err(),
        GgufError::DuplicateTensor("a".into())
    );
}

#[test]
fn files_without_tensors_need_no_padding() {
    // As the official converter writes vocabulary-only files: metadata, then the end.
    let mut r = Raw::new(3, 0, 1);
    r.str("general.architecture").u32(8).str("qwen2");
    assert!(r.0.len() % 32 != 0);
    let g = parse(&r.0).unwrap();
    assert!(g.tensors().is_empty());
    // With a tensor, the same shortfall is an error.
    let mut r = Raw::new(3, 1, 0);
    r.tensor("t", &[8], 0, 0);
    assert!(matches!(
        parse(&r.0).unwrap_err(),
        GgufError::TensorOutOfBounds { .. }
    ));
}

#[test]
fn version_2_files_read() {
    let mut r = Raw::new(2, 1, 1);
    r.str("general.architecture").u32(8).str("llama");
    r.tensor("t", &[4], 0, 0);
    let g = parse(&r.data(16)).unwrap();
    assert_eq!(g.version, 2);
    assert_eq!(g.architecture(), Some("llama"));
}

#[test]
fn models_that_do_not_fit_their_spec_are_refused_by_name() {
    use hearth_core::model::{ModelError, ModelSpec};
    let bytes = sample_file();
    let g = parse(&bytes).unwrap();
    // Rewrite one key at a time and check the refusal names the problem.
    let with = |key: &str, value: Value| {
        let mut meta: Vec<(String, Value)> = g.metadata().to_vec();
        meta.iter_mut().find(|(k, _)| k == key).unwrap().1 = value;
        let out = rewrite_metadata(&bytes, &g, &meta).unwrap();
        ModelSpec::from_gguf(&parse(&out).unwrap())
            .and_then(|s| s.check_tensors(&parse(&out).unwrap()))
    };
    assert!(matches!(
        with("general.architecture", Value::String("mamba".into())),
        Err(ModelError::UnsupportedArchitecture(a)) if a == "mamba"
    ));
    assert!(matches!(
        with("llama.attention.head_count_kv", Value::U32(3)),
        Err(ModelError::BadHyperParameter(_))
    ));
    assert!(matches!(
        with("llama.embedding_length", Value::U32(0)),
        Err(ModelError::BadHyperParameter(_))
    ));
    assert!(matches!(
        with("llama.feed_forward_length", Value::U32(65)),
        Err(ModelError::BadShape { .. })
    ));
    // A second layer the file does not hold is named.
    assert!(matches!(
        with("llama.block_count", Value::U32(2)),
        Err(ModelError::MissingTensor(name)) if name.starts_with("blk.1.")
    ));
    assert!(matches!(
        with("llama.block_count", Value::U32(1 << 23)),
        Err(ModelError::BadHyperParameter(_))
    ));
}
