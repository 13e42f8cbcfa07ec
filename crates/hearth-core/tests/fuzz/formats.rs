//! Output formats (what `response_format` and `--json-schema` hand to llguidance): JSON schemas
//! assembled from keywords with odd values, and Lark grammars and regexes cut, spliced and
//! seeded with random bytes. Each either compiles or is refused with an error; one that
//! compiles then steers a few tokens from random logits. Nothing may panic (the browser build
//! aborts on a panic), and each input ends within a bounded time.

use std::sync::Arc;
use std::time::Duration;

use hearth_core::constrain::{Format, Grammars};
use hearth_core::gguf::Gguf;
use hearth_core::sampling::{GenerateOptions, Generator, SamplingOptions};
use hearth_core::tokenizer::Tokenizer;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use super::{fuzz, process_cpu_time};

/// CPU time one input may take: compiling plus eight steps.
const LIMIT: Duration = Duration::from_secs(3);

fn grammars() -> (Arc<Tokenizer>, Grammars) {
    let path = hearth_fixtures::fixtures_dir().join("tokenizers/llama2.gguf.gz");
    let bytes = hearth_fixtures::gunzip(&path);
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(&header).unwrap());
    let grammars = Grammars::new(tok.clone()).unwrap();
    (tok, grammars)
}

/// A JSON value of the kinds schema keywords take, odd ones included.
fn odd_value(rng: &mut ChaCha8Rng, depth: usize) -> Value {
    match rng.random_range(0..12) {
        0 => json!(null),
        1 => json!(rng.random_range(-3i64..40)),
        2 => json!(i64::MAX),
        3 => json!(-1e308),
        4 => json!(rng.random_bool(0.5)),
        5 => json!(
            ["string", "integer", "number", "object", "array", "boolean", "null", "strin"]
                [rng.random_range(0..8)]
        ),
        6 => json!(
            [
                "^[a-z]+$",
                "(",
                "a{99999}",
                ".*",
                "[^\\u0000-\\uffff]",
                "\\p{L}{2,3}",
                ""
            ][rng.random_range(0..7)]
        ),
        7 => json!("#/$defs/a"),
        8 if depth < 3 => schema(rng, depth + 1),
        9 if depth < 3 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| odd_value(rng, depth + 1))
                .collect(),
        ),
        _ => json!("x"),
    }
}

const KEYWORDS: [&str; 24] = [
    "type",
    "properties",
    "required",
    "items",
    "enum",
    "const",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "anyOf",
    "oneOf",
    "allOf",
    "additionalProperties",
    "$ref",
    "$defs",
    "format",
    "prefixItems",
    "not",
    "multipleOf",
    "exclusiveMinimum",
];

fn schema(rng: &mut ChaCha8Rng, depth: usize) -> Value {
    let mut map = serde_json::Map::new();
    for _ in 0..rng.random_range(0..5) {
        let key = KEYWORDS[rng.random_range(0..KEYWORDS.len())];
        let value = match key {
            "properties" | "$defs" if depth < 3 => {
                let mut props = serde_json::Map::new();
                for name in ["a", "b", "c"].iter().take(rng.random_range(0..4)) {
                    props.insert(name.to_string(), schema(rng, depth + 1));
                }
                Value::Object(props)
            }
            "required" => json!(["a", "b", "zz"][..rng.random_range(0..4)]),
            _ => odd_value(rng, depth),
        };
        map.insert(key.into(), value);
    }
    Value::Object(map)
}

const GRAMMARS: [&str; 6] = [
    "start: \"yes\" | \"no\"",
    "start: item (\", \" item)*\nitem: /[a-z]{1,5}/ | NUMBER\nNUMBER: /[0-9]+/",
    "start: obj\nobj: %json {\"type\": \"object\"}",
    "start: TEXT\nTEXT: /(?s:.+)/ & ~/(?s:.*)STOP(?s:.*)/",
    "start: a b\na: \"x\"*\nb: a \"y\" | \"z\"[max_tokens=3]",
    "root ::= \"a\" root | \"b\"",
];

const REGEXES: [&str; 5] = [
    "[0-9]{3}-[a-z]+",
    "(a|b)*c",
    "\\d{1,4}",
    "[^\\n]{0,20}!",
    "(?i)hello",
];

/// A grammar (tagged "L") or regex ("R"): a real one cut and spliced with another, maybe with
/// random bytes in.
fn text_format(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let lark = rng.random_bool(0.6);
    let pool: &[&str] = if lark { &GRAMMARS } else { &REGEXES };
    let a = pool[rng.random_range(0..pool.len())];
    let b = pool[rng.random_range(0..pool.len())];
    let cut = |s: &str, at: usize| {
        s.char_indices()
            .map(|(i, _)| i)
            .chain([s.len()])
            .find(|&i| i >= at)
            .unwrap()
    };
    let mut text = match rng.random_range(0..4) {
        0 => a.to_string(),
        1 => format!(
            "{}{}",
            &a[..cut(a, rng.random_range(0..=a.len()))],
            &b[cut(b, rng.random_range(0..=b.len()))..]
        ),
        2 => a.repeat(rng.random_range(1..4)),
        _ => {
            let at = cut(a, rng.random_range(0..=a.len()));
            let junk: String = (0..rng.random_range(1..6))
                .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
                .collect();
            format!("{}{junk}{}", &a[..at], &a[at..])
        }
    };
    if rng.random_bool(0.05) {
        text.push_str(&"(".repeat(rng.random_range(1..200)));
    }
    format!("{}{text}", if lark { 'L' } else { 'R' }).into_bytes()
}

/// Runs one format; whether it compiled.
fn check(tok: &Arc<Tokenizer>, grammars: &Grammars, format: &Format, seed: u64) -> bool {
    let start = process_cpu_time();
    let compiled = grammars.compile(format);
    let ok = compiled.is_ok();
    if let Ok(constraint) = compiled {
        let opts = GenerateOptions {
            sampling: SamplingOptions {
                temperature: 1.0,
                seed,
                ..Default::default()
            },
            max_tokens: 8,
            ..Default::default()
        };
        let mut gen = Generator::new(tok.clone(), opts, &[]).unwrap();
        gen.constrain(constraint);
        let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        loop {
            let logits: Vec<f32> = (0..tok.n_vocab())
                .map(|_| rng.random_range(-4.0f32..4.0))
                .collect();
            match gen.step(&logits) {
                Ok(step) if step.finished.is_none() => {}
                // Finished, or an error the format's limits raised: both end the reply.
                _ => break,
            }
        }
    }
    let spent = process_cpu_time() - start;
    assert!(spent < LIMIT, "{format:?} took {spent:?}");
    ok
}

/// Inputs that compiled: a fuzzer whose inputs are all refused tries nothing past the parser.
fn report(target: &str, n: u64, compiled: u64) {
    eprintln!("{target}: {compiled} of {n} compiled and steered tokens");
    assert!(
        compiled * 5 >= n,
        "{target}: only {compiled} of {n} compiled"
    );
}

#[test]
fn json_schemas_compile_or_are_refused() {
    let (tok, grammars) = grammars();
    let (mut n, mut compiled) = (0, 0);
    fuzz(
        "json-schema",
        150,
        |rng| schema(rng, 0).to_string().into_bytes(),
        |bytes| {
            n += 1;
            let schema: Value = serde_json::from_slice(bytes).unwrap();
            let format = Format::JsonSchema {
                schema,
                strict: n % 2 == 0,
            };
            compiled += u64::from(check(&tok, &grammars, &format, n));
        },
    );
    report("json-schema", n, compiled);
}

#[test]
fn grammars_and_regexes_compile_or_are_refused() {
    let (tok, grammars) = grammars();
    let (mut n, mut compiled) = (0, 0);
    fuzz("grammar", 150, text_format, |bytes| {
        n += 1;
        let text = String::from_utf8(bytes[1..].to_vec()).unwrap();
        let format = if bytes[0] == b'L' {
            Format::Lark(text)
        } else {
            Format::Regex(text)
        };
        compiled += u64::from(check(&tok, &grammars, &format, n));
    });
    report("grammar", n, compiled);
}
