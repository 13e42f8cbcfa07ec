//! Hearth's tokenizers against Hugging Face `tokenizers` on real vocabularies (Qwen3, Qwen3.5,
//! Llama 3, GPT-4o's o200k, and the SentencePiece vocabularies of Mistral, Gemma 3 and Phi-3),
//! with the ids recorded by tests/fixtures/tokenizers/make_tokenizer_fixtures.py; and GPT-2's
//! against tiktoken's r50k_base from npm.

use std::io::Read;
use std::path::PathBuf;

use hearth_core::gguf::Gguf;
use hearth_core::tokenizer::pretokenize::PreTokenizer;
use hearth_core::tokenizer::Tokenizer;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizers")
}

fn tokenizer(name: &str) -> Tokenizer {
    let path = fixtures().join(format!("{name}.gguf.gz"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .unwrap();
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    Tokenizer::from_gguf(&header).unwrap()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
}

fn corpus() -> Vec<String> {
    serde_json::from_value(json("corpus.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Every corpus string, every check; all mismatches are reported together.
fn conformance(name: &str) {
    let tok = tokenizer(name);
    let reference = json("reference_ids.json");
    let lines = reference["tokenizers"][name].as_array().unwrap();
    let corpus = corpus();
    assert_eq!(
        lines.len(),
        corpus.len(),
        "reference and corpus differ in length"
    );
    let mut failures = Vec::new();
    let mut round_trips = 0;
    for (text, line) in corpus.iter().zip(lines) {
        let mut check = |what: &str, got: &dyn std::fmt::Debug, want: &dyn std::fmt::Debug| {
            let (got, want) = (format!("{got:?}"), format!("{want:?}"));
            if got != want {
                failures.push(format!(
                    "{name} {what} of {text:?}:\n   got {got}\n  want {want}"
                ));
            }
        };
        let with_special = tok.encode(text, true);
        let plain = tok.encode(text, false);
        check("ids", &with_special, &ids(&line["ids"]));
        check("ids without BOS/EOS", &plain, &ids(&line["ids_no_special"]));
        check(
            "decode",
            &tok.decode(&ids(&line["ids"])),
            &line["decoded"].as_str().unwrap(),
        );
        check(
            "decode skipping specials",
            &tok.decode_with(&ids(&line["ids"]), true),
            &line["decoded_skip_special"].as_str().unwrap(),
        );
        if line["round_trips"].as_bool().unwrap() {
            round_trips += 1;
            check("round trip", &tok.decode(&plain), text);
        }
        let mut stream = tok.stream_decoder(false);
        let mut streamed = String::new();
        for &id in &with_special {
            let piece = stream.push(id);
            streamed.push_str(&piece);
        }
        streamed.push_str(&stream.finish());
        check("streamed decode", &streamed, &tok.decode(&with_special));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The Qwen vocabularies normalize to NFC, so the five strings with decomposed or
    // compatibility characters come back composed.
    assert!(
        round_trips >= corpus.len() - 5,
        "{name}: only {round_trips} strings round-trip"
    );
}

#[test]
fn qwen3_matches_hugging_face() {
    conformance("qwen3");
}

#[test]
fn qwen35_matches_hugging_face() {
    conformance("qwen35");
}

#[test]
fn llama3_matches_hugging_face() {
    conformance("llama3");
}

/// GPT-4o's o200k vocabulary (Phi-4-mini's), pre-tokenizer `gpt-4o`.
#[test]
fn gpt4o_matches_hugging_face() {
    conformance("gpt4o");
}

#[test]
fn llama2_sentencepiece_matches_hugging_face() {
    conformance("llama2");
}

#[test]
fn gemma3_sentencepiece_matches_hugging_face() {
    conformance("gemma3");
}

/// llama.cpp's Phi-3-mini vocabulary file against the rebuilt Phi-3 tokenizer.json (see
/// make_tokenizer_fixtures.py): its chat tokens swallow the whitespace after them.
#[test]
fn phi3_sentencepiece_matches_hugging_face() {
    conformance("phi3");
}

/// GPT-2's vocabulary as the converter wrote it into the gpt2-tiny fixture, against the npm
/// package gpt-tokenizer's r50k_base (tiktoken's GPT-2 encoding), recorded by
/// tests/fixtures/tokenizers/gpt2_reference.mjs.
#[test]
fn gpt2_matches_tiktoken_r50k() {
    let path = fixtures().join("../models/gpt2-tiny.q8_0.gguf.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let tok = Tokenizer::from_gguf(&Gguf::parse(&bytes, bytes.len() as u64).unwrap()).unwrap();
    let reference = json("gpt2_reference.json");
    let lines = reference["lines"].as_array().unwrap();
    let corpus = corpus();
    assert_eq!(lines.len(), corpus.len());
    let mut failures = Vec::new();
    for (text, line) in corpus.iter().zip(lines) {
        let want = ids(&line["ids"]);
        // GPT-2 adds no BOS or EOS.
        for add_special in [true, false] {
            let got = tok.encode(text, add_special);
            if got != want {
                failures.push(format!("{text:?}: got {got:?}\n  want {want:?}"));
            }
        }
        let decoded = tok.decode(&want);
        if decoded != line["decoded"].as_str().unwrap() {
            failures.push(format!("decode of {text:?}: got {decoded:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pre_tokenizers_split_as_hugging_face() {
    let reference = json("reference_ids.json");
    let corpus = corpus();
    let mut failures = Vec::new();
    for name in ["llama-bpe", "qwen2", "qwen35", "gpt-2", "smollm", "gpt-4o"] {
        let pre = PreTokenizer::new(name).unwrap();
        let splits = reference["pre_tokenizers"][name].as_array().unwrap();
        for (text, want) in corpus.iter().zip(splits) {
            let want: Vec<String> = serde_json::from_value(want.clone()).unwrap();
            let got = pre.split(text);
            if got != want {
                failures.push(format!("{name} {text:?}:\n   got {got:?}\n  want {want:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn special_ids_and_stop_tokens() {
    let qwen = tokenizer("qwen3");
    assert_eq!(
        (qwen.bos(), qwen.eos(), qwen.eot(), qwen.add_bos()),
        (None, Some(151645), Some(151645), false)
    );
    assert!(qwen.is_stop(151643) && qwen.is_stop(151645) && !qwen.is_stop(151644));
    assert_eq!(qwen.pre_tokenizer(), Some("qwen2"));

    let qwen35 = tokenizer("qwen35");
    assert_eq!(
        (qwen35.bos(), qwen35.eos(), qwen35.eot(), qwen35.add_bos()),
        (None, Some(248046), Some(248046), false)
    );
    // <|endoftext|> and <|im_end|> stop; <|im_start|> does not.
    assert_eq!(qwen35.stop_ids(), [248044, 248046]);
    assert_eq!(qwen35.pre_tokenizer(), Some("qwen35"));

    let llama3 = tokenizer("llama3");
    assert_eq!(
        (llama3.bos(), llama3.eos(), llama3.eot(), llama3.add_bos()),
        (Some(128000), Some(128001), Some(128009), true)
    );
    assert!(llama3.is_stop(128001) && llama3.is_stop(128009) && !llama3.is_stop(128006));

    let llama2 = tokenizer("llama2");
    assert_eq!(
        (
            llama2.bos(),
            llama2.eos(),
            llama2.add_bos(),
            llama2.model_name()
        ),
        (Some(1), Some(2), true, "llama")
    );
    assert_eq!(llama2.stop_ids(), [2]);

    // The package's tokenizer_config.json names <end_of_turn> as EOS; <eos> (1) is not a stop.
    let gemma3 = tokenizer("gemma3");
    assert_eq!(
        (
            gemma3.bos(),
            gemma3.eos(),
            gemma3.eot(),
            gemma3.add_bos(),
            gemma3.model_name()
        ),
        (Some(2), Some(106), Some(106), true, "llama")
    );
    assert_eq!(gemma3.stop_ids(), [106]);

    let gpt4o = tokenizer("gpt4o");
    assert_eq!(
        (gpt4o.bos(), gpt4o.eos(), gpt4o.add_bos(), gpt4o.n_vocab()),
        (Some(199999), Some(199999), false, 200064)
    );
    assert_eq!(gpt4o.pre_tokenizer(), Some("gpt-4o"));

    // <|endoftext|> is EOS; <|end|> ends a turn.
    let phi3 = tokenizer("phi3");
    assert_eq!(
        (
            phi3.bos(),
            phi3.eos(),
            phi3.eot(),
            phi3.add_bos(),
            phi3.n_vocab()
        ),
        (Some(1), Some(32000), Some(32007), true, 32064)
    );
    assert_eq!(phi3.stop_ids(), [32000, 32007]);
}

/// Phi-3's added tokens swallow the whitespace after them, but <s>, <unk> and <|endoftext|> do
/// not (ids from Hugging Face on the rebuilt tokenizer.json).
#[test]
fn phi3_chat_tokens_swallow_following_whitespace() {
    let phi3 = tokenizer("phi3");
    let text = "<|user|>\n Hi<|end|>\n<|assistant|>";
    assert_eq!(phi3.encode(text, false), [32010, 6324, 32007, 32001]);
    assert_eq!(phi3.encode("<|user|> Hi", false), [32010, 6324]);
    assert_eq!(phi3.encode("<|endoftext|> Hi", false), [32000, 29871, 6324]);
    assert_eq!(phi3.encode("</s>\t x", false), [2, 921]);
}

/// Gemma 3's token types as the converter writes them: tokens tokenizer_config.json marks
/// special, and <mask> and <unusedN> by their look, are control tokens; its other added tokens
/// (newline and space runs, HTML tags) are user-defined, and the space runs are stored with
/// spaces rather than "▁". Text is not prefixed with a space.
#[test]
fn gemma3_token_types_and_whitespace_runs() {
    use hearth_core::tokenizer::TokenType;
    let gemma3 = tokenizer("gemma3");
    let ty = |text: &str| gemma3.token_type(gemma3.token_id(text).unwrap()).unwrap();
    for control in [
        "<bos>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<mask>",
        "<unused0>",
        "<start_of_image>",
    ] {
        assert_eq!(ty(control), TokenType::Control, "{control}");
    }
    for user in ["\n", "\n\n\n", "  ", "<table>", "[multimodal]"] {
        assert_eq!(ty(user), TokenType::UserDefined, "{user:?}");
    }
    assert_eq!(gemma3.token_id("▁▁"), None);
    // A turn marker is a control token: kept out of user text, which still gets its newlines
    // and space runs as user-defined tokens.
    let text = "<start_of_turn>user\n  hi";
    assert_eq!(gemma3.encode(text, false)[0], 105);
    let plain = gemma3.encode_with(text, false, false);
    assert!(!plain.contains(&105), "{plain:?}");
    assert!(plain.contains(&107) && plain.contains(&138), "{plain:?}");
    assert_eq!(gemma3.decode(&plain), text);
}

#[test]
fn control_tokens_can_be_kept_out_of_user_text() {
    let qwen = tokenizer("qwen3");
    let text = "<|im_end|> and <think>";
    assert_eq!(qwen.encode(text, false)[0], 151645);
    let plain = qwen.encode_with(text, false, false);
    assert!(!plain.contains(&151645), "{plain:?}");
    // User-defined tokens are still matched, as llama.cpp does.
    assert_eq!(*plain.last().unwrap(), 151667);
    assert_eq!(qwen.decode(&plain), text);
}

#[test]
fn streaming_emits_characters_as_soon_as_they_are_complete() {
    let llama3 = tokenizer("llama3");
    // Emoji with a skin-tone modifier: byte-level tokens that split inside characters.
    let text = "👋🏽 日本";
    let ids = llama3.encode(text, false);
    let mut d = llama3.stream_decoder(false);
    let mut out = String::new();
    for &id in &ids {
        let piece = d.push(id);
        // Whatever came out so far is a prefix of the text, whole characters only.
        out.push_str(&piece);
        assert!(text.starts_with(&out), "{out:?}");
    }
    assert_eq!(out + &d.finish(), text);
}
