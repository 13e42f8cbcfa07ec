use super::*;
use crate::gguf::Value;

/// A GGUF header holding only tokenizer metadata.
fn header(kv: Vec<(&str, Value)>) -> Gguf {
    let owned: Vec<(String, Value)> = kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let mut file = Vec::new();
    crate::gguf::write_gguf::<std::io::Error>(&mut file, &owned, &[], |_| Ok(Vec::new())).unwrap();
    // The (empty) tensor data starts at the next 32-byte boundary.
    file.resize(file.len().next_multiple_of(32), 0);
    Gguf::parse(&file, file.len() as u64).unwrap()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
}

/// A SentencePiece vocabulary: specials, 256 byte tokens, then a few pieces.
fn spm_kv(pieces: &[&str]) -> Vec<(&'static str, Value)> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![3i32, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for p in pieces {
        tokens.push(p.to_string());
        types.push(1);
    }
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        ("tokenizer.ggml.scores", Value::Array(Array::F32(scores))),
        ("tokenizer.ggml.token_type", Value::Array(Array::I32(types))),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ]
}

fn with(
    mut kv: Vec<(&'static str, Value)>,
    key: &'static str,
    value: Value,
) -> Vec<(&'static str, Value)> {
    kv.retain(|(k, _)| *k != key);
    kv.push((key, value));
    kv
}

fn error(kv: Vec<(&str, Value)>) -> String {
    match Tokenizer::from_gguf(&header(kv)) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn spm_round_trip_and_specials() {
    let t = Tokenizer::from_gguf(&header(spm_kv(&["▁", "h", "i", "▁h", "▁hi"]))).unwrap();
    let hi = t.token_id("▁hi").unwrap();
    assert_eq!(t.encode("hi", true), [1, hi]);
    assert_eq!(t.encode("hi</s>", false), [hi, 2]);
    // Without special parsing the control token's text is ordinary text (here: bytes).
    assert!(!t.encode_with("</s>", false, false).contains(&2));
    assert_eq!(t.decode(&[1, hi]), "<s> hi");
    assert_eq!(t.decode_with(&[1, hi], true), "hi");
    assert!(t.is_stop(2) && !t.is_stop(1));
}

#[test]
fn malformed_metadata_is_an_error_not_a_panic() {
    let kv = spm_kv(&["a"]);
    let n = 3 + 256 + 1;
    assert!(error(with(
        kv.clone(),
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(vec![0.0; 3]))
    ))
    .contains("tokenizer.ggml.scores has 3 entries"));
    assert!(error(with(
        kv.clone(),
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![1; n + 1]))
    ))
    .contains("token_type has"));
    assert!(error(with(
        kv.clone(),
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(vec![9; n]))
    ))
    .contains("type 9"));
    assert!(error(with(
        kv.clone(),
        "tokenizer.ggml.eos_token_id",
        Value::U32(n as u32)
    ))
    .contains("outside the vocabulary"));
    assert!(error(with(kv.clone(), "tokenizer.ggml.tokens", strings(&[]))).contains("empty"));
    assert!(error(with(
        kv.clone(),
        "tokenizer.ggml.model",
        Value::String("rwkv".into())
    ))
    .contains("\"rwkv\""));
    assert!(error(with(kv.clone(), "tokenizer.ggml.tokens", Value::U32(1))).contains("wrong type"));
    let no_bytes = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&["a", "b"])),
        (
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(vec![0.0, 0.0])),
        ),
    ];
    assert!(error(no_bytes).contains("byte tokens"));
}

#[test]
fn byte_level_errors_name_the_problem() {
    let base = vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&["a", "b"])),
        ("tokenizer.ggml.merges", strings(&[])),
    ];
    assert!(error(base.clone()).contains("tokenizer.ggml.pre"));
    let unknown = with(
        base.clone(),
        "tokenizer.ggml.pre",
        Value::String("falcon".into()),
    );
    let msg = error(unknown);
    assert!(msg.contains("\"falcon\"") && msg.contains("qwen2"), "{msg}");
    assert!(error(with(
        base,
        "tokenizer.ggml.pre",
        Value::String("gpt-2".into())
    ))
    .contains("byte 0x00"));
}

#[test]
fn stream_decoder_never_splits_a_character() {
    let t = Tokenizer::from_gguf(&header(spm_kv(&["▁", "a"]))).unwrap();
    // "€" is E2 82 AC: three byte tokens; then a stray continuation byte.
    let ids: Vec<u32> = [0xE2u32, 0x82, 0xAC, 0x80]
        .iter()
        .map(|b| 3 + b)
        .chain([t.token_id("a").unwrap()])
        .collect();
    let mut d = t.stream_decoder(false);
    let pieces: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
    assert_eq!(pieces, ["", "", "€", "\u{FFFD}", "a"]);
    assert_eq!(pieces.concat() + &d.finish(), t.decode(&ids));
    // An unfinished character at the end is one U+FFFD, as from_utf8_lossy gives.
    let mut d = t.stream_decoder(false);
    assert_eq!(d.push(3 + 0xE2) + &d.finish(), "\u{FFFD}");
    // Ids outside the vocabulary are skipped.
    assert_eq!(t.decode(&[u32::MAX]), "");
}

#[test]
fn phi3_added_tokens_swallow_the_whitespace_after_them() {
    let mut kv = spm_kv(&["▁", "h", "i", "▁h", "▁hi", "<|user|>", "<|endoftext|>"]);
    let n = 3 + 256 + 7;
    let mut types = vec![1i32; n];
    types[..3].fill(3);
    types[3..259].fill(6);
    types[n - 2..].fill(3);
    kv = with(
        kv,
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(types)),
    );
    let (user, eot) = (n as u32 - 2, n as u32 - 1);
    let plain = Tokenizer::from_gguf(&header(kv.clone())).unwrap();
    let hi = plain.token_id("▁hi").unwrap();
    let space = plain.token_id("▁").unwrap();
    // Elsewhere the newline and space stay (the newline as a byte token).
    assert_eq!(
        plain.encode("<|user|>\n hi", false),
        [user, space, 3 + 0x0A, hi]
    );
    // By architecture, or by name as llama.cpp decides it.
    for (key, value) in [
        ("general.architecture", "phi3"),
        ("general.name", "Phi-3 mini"),
    ] {
        let phi3 = with(kv.clone(), key, Value::String(value.into()));
        let t = Tokenizer::from_gguf(&header(phi3)).unwrap();
        assert_eq!(t.encode("<|user|>\n hi", false), [user, hi], "{key}");
        // Unicode whitespace too, as Hugging Face strips it; <|endoftext|>, <s> keep theirs.
        assert_eq!(t.encode("<|user|>\u{3000}hi", false), [user, hi], "{key}");
        assert_eq!(
            t.encode("<|endoftext|> hi", false),
            [eot, space, hi],
            "{key}"
        );
        assert_eq!(t.encode("<s> hi", false), [1, space, hi], "{key}");
    }
}
