//! The GGUF reader on mutated fixture files: every field of the header set to values at and
//! around its limits, truncation at every structural boundary, metadata values replaced by
//! values of other types, byte flips, and arbitrary bytes. Whatever parses is then taken
//! further: model spec, tensor check, tokenizer, chat template.

use hearth_core::chat::ChatTemplate;
use hearth_core::gguf::{rewrite_metadata, Array, Gguf, GgufError, GgufFile, Value};
use hearth_core::model::ModelSpec;
use hearth_core::tokenizer::Tokenizer;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::fuzz;

/// Where each field of a GGUF v2/v3 header starts and how wide it is, in file order.
#[derive(Clone, Copy, Debug)]
struct Field {
    at: usize,
    width: usize,
}

/// The header's fields: the counts, each key's length and text, each value's type, length
/// and elements, each tensor's name, dimensions, type and offset. Integer fields are 4 or
/// 8 bytes wide; a string's text is its own field.
fn fields(file: &[u8]) -> Vec<Field> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut field = |at: &mut usize, width: usize, out: &mut Vec<Field>| {
        out.push(Field { at: *at, width });
        *at += width;
    };
    let u32_at = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap()) as usize;
    field(&mut at, 4, &mut out); // magic
    field(&mut at, 4, &mut out); // version
    let n_tensors = u64_at(at);
    field(&mut at, 8, &mut out);
    let n_kv = u64_at(at);
    field(&mut at, 8, &mut out);
    fn value(
        file: &[u8],
        ty: u32,
        at: &mut usize,
        out: &mut Vec<Field>,
        field: &mut dyn FnMut(&mut usize, usize, &mut Vec<Field>),
    ) {
        let width = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                let n = u64::from_le_bytes(file[*at..*at + 8].try_into().unwrap()) as usize;
                field(at, 8, out);
                field(at, n, out);
                return;
            }
            9 => {
                let inner = u32::from_le_bytes(file[*at..*at + 4].try_into().unwrap());
                field(at, 4, out);
                let n = u64::from_le_bytes(file[*at..*at + 8].try_into().unwrap()) as usize;
                field(at, 8, out);
                // Long arrays (vocabularies): their first elements are fields, the rest one.
                for i in 0..n {
                    if i == 16 {
                        let mark = *at;
                        for _ in i..n {
                            value(file, inner, at, &mut Vec::new(), field);
                        }
                        out.push(Field {
                            at: mark,
                            width: *at - mark,
                        });
                        return;
                    }
                    value(file, inner, at, out, field);
                }
                return;
            }
            _ => panic!("the fixture has value type {ty}"),
        };
        field(at, width, out);
    }
    for _ in 0..n_kv {
        let n = u64_at(at);
        field(&mut at, 8, &mut out);
        field(&mut at, n, &mut out);
        let ty = u32_at(at);
        field(&mut at, 4, &mut out);
        value(file, ty, &mut at, &mut out, &mut field);
    }
    for _ in 0..n_tensors {
        let n = u64_at(at);
        field(&mut at, 8, &mut out);
        field(&mut at, n, &mut out);
        let dims = u32_at(at) as usize;
        field(&mut at, 4, &mut out);
        for _ in 0..dims {
            field(&mut at, 8, &mut out);
        }
        field(&mut at, 4, &mut out); // type
        field(&mut at, 8, &mut out); // offset
    }
    out
}

/// Values at and around the limits of an integer field.
fn interesting(rng: &mut ChaCha8Rng, old: u64, width: usize) -> u64 {
    let max = if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let v = match rng.random_range(0..12) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max / 2 + 1,
        4 => old.wrapping_add(1),
        5 => old.wrapping_sub(1),
        6 => old.wrapping_mul(2),
        7 => old / 2,
        8 => 1 << rng.random_range(0..64),
        9 => u64::from(u32::MAX),
        10 => rng.random_range(0..32),
        _ => rng.random(),
    };
    v & max
}

fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let dir = hearth_fixtures::fixtures_dir();
    ["models/llama-spm.q8_0.gguf.gz", "tokenizers/llama2.gguf.gz"]
        .into_iter()
        .map(|p| (p, hearth_fixtures::gunzip(&dir.join(p))))
        .collect()
}

/// Everything past the reader that a parsed header feeds, none of which may panic. The parse
/// that walks over the vocabulary (a CPU shard's) does not panic either, and where the whole
/// header parses it gives the same header without those keys.
fn take_further(bytes: &[u8]) {
    const VOCABULARY: [&str; 2] = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"];
    let skipped = Gguf::parse_skipping(bytes, bytes.len() as u64, &VOCABULARY);
    let Ok(header) = Gguf::parse(bytes, bytes.len() as u64) else {
        return;
    };
    let mut want = header.clone();
    want.retain_metadata(|key, _| !VOCABULARY.contains(&key));
    let skipped = skipped.expect("a header that parses parses without its vocabulary");
    // Compared as text: a NaN among the values equals itself there.
    assert_eq!(
        format!("{:?}", skipped.metadata()),
        format!("{:?}", want.metadata())
    );
    assert_eq!(skipped.tensors(), want.tensors());
    assert_eq!(skipped.data_offset, want.data_offset);
    if let Ok(spec) = ModelSpec::from_gguf(&header) {
        let _ = spec.check_tensors(&header);
    }
    if let Ok(tokenizer) = Tokenizer::from_gguf(&header) {
        let ids = tokenizer.encode("Hello, world! <s> 日本", true);
        assert!(ids.iter().all(|&id| (id as usize) < tokenizer.n_vocab()));
        let _ = tokenizer.decode(&ids);
        if let Ok(template) = ChatTemplate::from_gguf(&header, &tokenizer) {
            let _ = template.render(&[hearth_core::chat::Message::new("user", "hi")], true);
        }
    }
    if let Ok(file) = GgufFile::open(bytes.to_vec()) {
        for t in file.header.tensors() {
            let _ = file.tensor_bytes(t);
        }
    }
}

#[test]
fn truncation_at_every_structural_boundary() {
    for (name, file) in fixtures() {
        let header = Gguf::parse(&file, file.len() as u64).unwrap();
        let mut cuts: Vec<usize> = fields(&file)
            .iter()
            .flat_map(|f| [f.at, f.at + 1, f.at + f.width.saturating_sub(1)])
            .collect();
        cuts.extend([header.data_offset as usize - 1, header.data_offset as usize]);
        cuts.extend(
            header
                .tensors()
                .iter()
                .map(|t| (header.data_offset + t.offset) as usize),
        );
        cuts.extend([file.len() - 1]);
        cuts.sort_unstable();
        cuts.dedup();
        // A file without tensors may end right after its metadata, unpadded.
        let end = if header.tensors().is_empty() {
            fields(&file).last().map_or(0, |f| f.at + f.width)
        } else {
            file.len()
        };
        for &n in cuts.iter().filter(|&&n| n < end) {
            assert!(
                Gguf::parse(&file[..n], n as u64).is_err(),
                "{name}: cut at {n} parsed"
            );
            match Gguf::parse(&file[..n], file.len() as u64) {
                Err(GgufError::NeedMore { have }) => assert_eq!(have, n as u64, "{name}"),
                Ok(g) => assert_eq!(g.tensors(), header.tensors(), "{name}: cut at {n}"),
                Err(e) => panic!("{name}: a prefix of {n} bytes: {e}"),
            }
        }
        eprintln!("fuzz truncation {name}: {} cuts", cuts.len());
    }
}

#[test]
fn header_fields_at_their_limits() {
    for (name, file) in fixtures() {
        let fields = fields(&file);
        let ints: Vec<Field> = fields
            .iter()
            .copied()
            .filter(|f| matches!(f.width, 1 | 2 | 4 | 8))
            .collect();
        let target = format!("header-fields-{}", name.replace('/', "-"));
        fuzz(
            &target,
            1500,
            |rng| {
                let mut m = file.clone();
                for _ in 0..rng.random_range(1..=3) {
                    let f = ints[rng.random_range(0..ints.len())];
                    let mut old = [0u8; 8];
                    old[..f.width].copy_from_slice(&m[f.at..f.at + f.width]);
                    let v = interesting(rng, u64::from_le_bytes(old), f.width);
                    m[f.at..f.at + f.width].copy_from_slice(&v.to_le_bytes()[..f.width]);
                }
                m
            },
            |m| take_further(m),
        );
    }
}

/// A random metadata value: any type, sometimes empty or long.
fn random_value(rng: &mut ChaCha8Rng, depth: usize) -> Value {
    match rng.random_range(0..14) {
        0 => Value::U8(rng.random()),
        1 => Value::I8(rng.random()),
        2 => Value::U16(rng.random()),
        3 => Value::I16(rng.random()),
        4 => Value::U32(interesting(rng, 0, 4) as u32),
        5 => Value::I32(rng.random()),
        6 => Value::F32(f32::from_bits(rng.random())),
        7 => Value::Bool(rng.random()),
        8 => Value::String(random_text(rng, 64)),
        9 => Value::U64(interesting(rng, 0, 8)),
        10 => Value::I64(rng.random()),
        11 => Value::F64([0.0, -1.0, 1e300, f64::NAN, f64::INFINITY][rng.random_range(0..5)]),
        _ if depth < 2 => Value::Array(match rng.random_range(0..4) {
            0 => Array::String(
                (0..rng.random_range(0..8))
                    .map(|_| random_text(rng, 8))
                    .collect(),
            ),
            1 => Array::I32((0..rng.random_range(0..8)).map(|_| rng.random()).collect()),
            2 => Array::F32((0..rng.random_range(0..8)).map(|_| rng.random()).collect()),
            _ => Array::Array(vec![Array::U8(vec![1, 2])]),
        }),
        _ => Value::Bool(false),
    }
}

fn random_text(rng: &mut ChaCha8Rng, max: usize) -> String {
    const PIECES: [&str; 10] = ["a", " ", "\n", "é", "日", "🙂", "<s>", "\u{0}", "{{", "▁"];
    (0..rng.random_range(0..=max))
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect()
}

#[test]
fn metadata_values_of_other_types_and_sizes() {
    let (_, file) = &fixtures()[0];
    let header = Gguf::parse(file, file.len() as u64).unwrap();
    fuzz(
        "metadata-values",
        600,
        |rng| {
            let mut meta = header.metadata().to_vec();
            for _ in 0..rng.random_range(1..=3) {
                let i = rng.random_range(0..meta.len());
                match rng.random_range(0..4) {
                    0 => {
                        meta.remove(i);
                    }
                    1 => {
                        // The same type, a value at its limits.
                        let v = match &meta[i].1 {
                            Value::U32(x) => Value::U32(interesting(rng, u64::from(*x), 4) as u32),
                            Value::U64(x) => Value::U64(interesting(rng, *x, 8)),
                            Value::F32(_) => {
                                Value::F32([0.0, -1.0, f32::NAN, f32::MAX][rng.random_range(0..4)])
                            }
                            _ => random_value(rng, 0),
                        };
                        meta[i].1 = v;
                    }
                    _ => meta[i].1 = random_value(rng, 0),
                }
            }
            rewrite_metadata(file, &header, &meta).unwrap_or_default()
        },
        |m| take_further(m),
    );
}

#[test]
fn byte_flips_and_arbitrary_bytes() {
    let files = fixtures();
    fuzz(
        "bytes",
        3000,
        |rng| match rng.random_range(0..4) {
            // Arbitrary bytes, after a valid magic and version half the time.
            0 => {
                let mut b: Vec<u8> = (0..rng.random_range(0..512))
                    .map(|_| rng.random())
                    .collect();
                if rng.random_bool(0.5) && b.len() >= 8 {
                    b[..8].copy_from_slice(b"GGUF\x03\0\0\0");
                }
                b
            }
            _ => {
                let (_, f) = &files[rng.random_range(0..files.len())];
                let mut m = f.clone();
                let header_len = Gguf::parse(f, f.len() as u64).unwrap().data_offset as usize;
                let flips = rng.random_range(1..=8);
                hearth_fixtures::mangle(rng, &mut m, flips, |rng| rng.random_range(0..header_len));
                m
            }
        },
        |m| take_further(m),
    );
}
