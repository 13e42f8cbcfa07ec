use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

use super::*;
use crate::gguf::{Array, Gguf};
use crate::sampling::{FinishReason, GenerateOptions, Generator, SamplingOptions};

/// A tokenizer of the tokenizer fixtures.
pub(crate) fn tokenizer(gz: &str) -> Arc<Tokenizer> {
    let path = hearth_fixtures::fixtures_dir().join("tokenizers").join(gz);
    let bytes = hearth_fixtures::gunzip(&path);
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    Arc::new(Tokenizer::from_gguf(&header).unwrap())
}

/// Generates under `format` from random logits (a fresh draw each step, sampled at
/// temperature 1): what any model could do inside the mask.
pub(crate) fn generate(
    tok: &Arc<Tokenizer>,
    grammars: &Grammars,
    format: &Format,
    seed: u64,
) -> (String, FinishReason) {
    let opts = GenerateOptions {
        sampling: SamplingOptions {
            temperature: 1.0,
            seed,
            ..Default::default()
        },
        max_tokens: 400,
        ..Default::default()
    };
    let mut gen = Generator::new(tok.clone(), opts, &[]).unwrap();
    gen.constrain(grammars.compile(format).unwrap());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut text = String::new();
    loop {
        let logits: Vec<f32> = (0..tok.n_vocab())
            .map(|_| rng.random_range(-4.0f32..4.0))
            .collect();
        let step = gen
            .step(&logits)
            .unwrap_or_else(|e| panic!("after {text:?}: {e}"));
        text.push_str(&step.text);
        if let Some(finish) = step.finished {
            return (text, finish);
        }
    }
}

fn schemas() -> Vec<Value> {
    vec![
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "age": {"type": "integer", "minimum": 0, "maximum": 130},
                "role": {"enum": ["admin", "user", "guest"]},
            },
            "required": ["name", "age", "role"],
            "additionalProperties": false,
        }),
        json!({
            "type": "object",
            "properties": {
                "address": {
                    "type": "object",
                    "properties": {
                        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        "city": {"type": "string", "maxLength": 10},
                    },
                    "required": ["zip", "city"],
                    "additionalProperties": false,
                },
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[a-z]{1,6}$"},
                    "minItems": 2,
                    "maxItems": 4,
                },
                "ok": {"type": "boolean"},
            },
            "required": ["address", "tags", "ok"],
            "additionalProperties": false,
        }),
        json!({
            "$defs": {"point": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "additionalProperties": false,
            }},
            "type": "object",
            "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
            "required": ["from", "to"],
            "additionalProperties": false,
        }),
        json!({
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "number", "minimum": -5, "maximum": 5},
                    {"type": "null"},
                    {"const": "x"},
                ]
            },
            "minItems": 1,
            "maxItems": 3,
        }),
    ]
}

#[test]
fn every_output_parses_and_validates_against_its_schema() {
    for gz in ["qwen3.gguf.gz", "llama2.gguf.gz"] {
        let tok = tokenizer(gz);
        let grammars = Grammars::new(tok.clone()).unwrap();
        for schema in schemas() {
            let validator = jsonschema::validator_for(&schema).unwrap();
            let format = Format::JsonSchema {
                schema: schema.clone(),
                strict: true,
            };
            for seed in 0..4 {
                let (text, finish) = generate(&tok, &grammars, &format, seed);
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{gz} seed {seed}: {text:?} is not JSON: {e}"));
                let errors: Vec<String> = validator
                    .iter_errors(&value)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{gz} seed {seed}: {text}: {errors:?}");
                assert_eq!(finish, FinishReason::EndOfGeneration, "{text}");
            }
        }
        for seed in 0..4 {
            let (text, _) = generate(&tok, &grammars, &Format::JsonObject, seed);
            // Random logits may run an open object into the token budget; what was written is
            // still a prefix of an object.
            assert!(text.starts_with('{'), "{gz}: {text:?}");
        }
        let (text, _) = generate(
            &tok,
            &grammars,
            &Format::Regex("[0-9]{3}-[a-c]+!".into()),
            1,
        );
        let (digits, rest) = text.split_at(3.min(text.len()));
        let letters = rest.strip_prefix('-').and_then(|r| r.strip_suffix('!'));
        assert!(
            digits.len() == 3
                && digits.bytes().all(|b| b.is_ascii_digit())
                && letters.is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b"abc".contains(&b))),
            "{gz}: {text:?}"
        );
    }
}

#[test]
fn a_lark_grammar_holds_the_output() {
    let tok = tokenizer("qwen3.gguf.gz");
    let grammars = Grammars::new(tok.clone()).unwrap();
    let lark = r#"
        start: "SELECT " cols " FROM " table ";"
        cols: col (", " col)*
        col: "id" | "name" | "age"
        table: "users" | "orders"
    "#;
    for seed in 0..4 {
        let (text, finish) = generate(&tok, &grammars, &Format::Lark(lark.into()), seed);
        let rest = text
            .strip_prefix("SELECT ")
            .unwrap_or_else(|| panic!("{text:?}"));
        let (cols, table) = rest.split_once(" FROM ").unwrap();
        assert!(cols.split(", ").all(|c| ["id", "name", "age"].contains(&c)));
        assert!(["users;", "orders;"].contains(&table), "{text:?}");
        assert_eq!(finish, FinishReason::EndOfGeneration);
    }
}

#[test]
fn formats_that_cannot_be_used_are_refused_before_any_token() {
    let tok = tokenizer("qwen3.gguf.gz");
    let grammars = Grammars::new(tok).unwrap();
    let refused = |format: Format| match grammars.compile(&format) {
        Err(e) => e,
        Ok(_) => panic!("{format:?} was accepted"),
    };
    let e = refused(Format::JsonSchema {
        schema: json!({"type": "strin"}),
        strict: true,
    });
    assert!(
        matches!(&e, ConstraintError::Compile(m) if m.contains("strin")),
        "{e}"
    );
    assert!(matches!(
        refused(Format::JsonSchema {
            schema: json!([1, 2]),
            strict: true
        }),
        ConstraintError::Compile(_)
    ));
    assert!(matches!(
        refused(Format::Lark("start: missing_rule".into())),
        ConstraintError::Compile(_)
    ));
    assert!(matches!(
        refused(Format::Regex("(unclosed".into())),
        ConstraintError::Compile(_)
    ));
    assert_eq!(
        refused(Format::Lark("x".repeat(MAX_FORMAT_BYTES + 1))),
        ConstraintError::TooLarge(MAX_FORMAT_BYTES + 1)
    );
    // A keyword the engine cannot enforce: refused when strict, ignored when not.
    let uneven = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "minProperties": 1,
    });
    assert!(matches!(
        refused(Format::JsonSchema {
            schema: uneven.clone(),
            strict: true
        }),
        ConstraintError::Compile(_)
    ));
    assert!(grammars
        .compile(&Format::JsonSchema {
            schema: uneven,
            strict: false
        })
        .is_ok());
}

/// A SentencePiece vocabulary without byte tokens, so some text has no tokens at all.
fn vocabulary_without(pieces: &[&str]) -> Arc<Tokenizer> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    tokens.extend(pieces.iter().map(|p| p.to_string()));
    let n = tokens.len();
    let kv: Vec<(String, crate::gguf::Value)> = vec![
        (
            "tokenizer.ggml.model".into(),
            crate::gguf::Value::String("llama".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            crate::gguf::Value::Array(Array::String(tokens)),
        ),
        (
            "tokenizer.ggml.scores".into(),
            crate::gguf::Value::Array(Array::F32((0..n).map(|i| -(i as f32)).collect())),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            crate::gguf::Value::Array(Array::I32(
                (0..n)
                    .map(|i| [2, 3, 3].get(i).copied().unwrap_or(1))
                    .collect(),
            )),
        ),
        (
            "tokenizer.ggml.unknown_token_id".into(),
            crate::gguf::Value::U32(0),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            crate::gguf::Value::U32(1),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            crate::gguf::Value::U32(2),
        ),
        (
            "tokenizer.ggml.add_space_prefix".into(),
            crate::gguf::Value::Bool(false),
        ),
    ];
    let mut file = Vec::new();
    crate::gguf::write_gguf::<std::io::Error>(&mut file, &kv, &[], |_| Ok(Vec::new())).unwrap();
    file.resize(file.len().next_multiple_of(32), 0);
    Arc::new(Tokenizer::from_gguf(&Gguf::parse(&file, file.len() as u64).unwrap()).unwrap())
}

#[test]
fn a_format_that_dead_ends_finishes_with_its_own_reason() {
    // "c" is in no token: after "ab" nothing may follow.
    let tok = vocabulary_without(&["a", "b", "ab"]);
    let grammars = Grammars::new(tok.clone()).unwrap();
    for seed in 0..3 {
        let (text, finish) = generate(
            &tok,
            &grammars,
            &Format::Lark(r#"start: "abc""#.into()),
            seed,
        );
        assert_eq!((text.as_str(), finish), ("ab", FinishReason::Constraint));
    }
    // Where not even the first token exists, the format is refused up front.
    assert_eq!(
        grammars
            .compile(&Format::Lark(r#"start: "c""#.into()))
            .err(),
        Some(ConstraintError::NothingAllowed)
    );
}

#[test]
fn the_mask_allows_exactly_the_tokens_that_continue_the_format() {
    let tok = tokenizer("qwen3.gguf.gz");
    let grammars = Grammars::new(tok.clone()).unwrap();
    let mut c = grammars
        .compile(&Format::Lark(r#"start: "yes" | "no""#.into()))
        .unwrap();
    let mask = c.allowed();
    for text in ["yes", "no", "y", "n", "ye"] {
        let id = tok.token_id(text).unwrap();
        assert!(mask.allows(id), "{text}");
    }
    for text in ["maybe", "Yes", " yes", "x"] {
        if let Some(id) = tok.token_id(text) {
            assert!(!mask.allows(id), "{text}");
        }
    }
    for &stop in tok.stop_ids() {
        assert!(!mask.allows(stop), "nothing is complete yet");
    }
    c.accept(tok.token_id("y").unwrap()).unwrap();
    let mask = c.allowed();
    assert!(mask.allows(tok.token_id("es").unwrap()));
    assert!(!mask.allows(tok.token_id("no").unwrap()));
    assert!(!c.is_complete());
    c.accept(tok.token_id("es").unwrap()).unwrap();
    assert!(c.is_complete());

    // Applied to logits (a vocabulary padded past the tokenizer's too): what is left are
    // tokens that spell a prefix of the format, and "no" itself.
    let mut logits = vec![1.0; tok.n_vocab() + 5];
    grammars
        .compile(&Format::Lark(r#"start: "no""#.into()))
        .unwrap()
        .allowed()
        .apply(&mut logits);
    let left: Vec<u32> = (0..logits.len() as u32)
        .filter(|&i| logits[i as usize] == 1.0)
        .collect();
    assert!(left.contains(&tok.token_id("no").unwrap()), "{left:?}");
    assert!(
        left.iter().all(|&i| "no".starts_with(&tok.piece(i))),
        "{left:?}"
    );
}
